import { connect } from "nats";
import { afterAll, describe, expect, it } from "vitest";
import { startNatsCluster, type NatsClusterHandle } from "../../test/support/nats-server.js";
import { provisionStreams, provisionedStreams } from "./provision.js";

describe("provisionStreams on a cluster whose servers have just started", () => {
  let cluster: NatsClusterHandle | undefined;
  afterAll(async () => {
    await cluster?.stop();
  });

  it("asks again while the streams have no leader to answer, where it failed at once with TIMEOUT", { timeout: 120_000 }, async () => {
    cluster = await startNatsCluster();
    const first = await connect({ servers: cluster.url.split(",") });
    await provisionStreams(first);
    await first.close();
    // All three stopped, as `npm start -- --cluster` leaves them; n1 alone has no quorum, so nothing answers for a stream.
    for (const node of cluster.nodes) await node.stopForRestart();
    const [n1, ...others] = cluster.nodes;
    const n1Back = n1.restart();
    const nc = await connect({ servers: n1.url, waitOnFirstConnect: true, maxReconnectAttempts: -1 });
    try {
      const provisioning = provisionStreams(nc);
      await Promise.all([n1Back, ...others.map((node) => node.restart())]);
      const streams = await provisioning;
      expect(streams.map((s) => [s.stream, s.replicas])).toEqual(provisionedStreams.map((spec) => [spec.name, spec.replicas]));
    } finally {
      await nc.close();
    }
  });
});
