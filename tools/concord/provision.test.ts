import { connect } from "nats";
import { afterAll, describe, expect, it } from "vitest";
import { runConcord } from "../../test/support/concord.js";
import { startNatsCluster, type NatsClusterHandle } from "../../test/support/nats-server.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
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

describe("concord streams provision on a cluster of four", () => {
  let cluster: NatsClusterHandle | undefined;
  afterAll(async () => {
    await cluster?.stop();
  });

  it("moves a stream with more replicas than its contract down to them, saying so once on standard error (its summary) and in its JSON line", { timeout: 120_000 }, async () => {
    cluster = await startNatsCluster({ nodes: 4 });
    const nc = await connect({ servers: cluster.url.split(",") });
    try {
      await provisionStreams(nc);
      const jsm = await nc.jetstreamManager();
      // Raised by hand, as by a newer contract (the cluster runs without authorization, as a deployment without the generated permissions).
      await jsm.streams.update("SHOP_ORDERS", { num_replicas: 4 });
      const run = await runConcord({ DATA_DIR: tempDirForSuite(), NATS_NKEY_SEED: undefined, NATS_URL: undefined }, ["streams", "provision", "--nats", cluster.url]);
      expect(run.status).toBe(0);
      const told = "num_replicas: existing 4, wanted 3";
      // Once: a warning that the stream moved from 4 to 3 replicas came before the summary.
      expect(run.stderr).toBe(`concord streams provision: 3 streams as their specs declare (SHOP_ORDERS lowered to its contract: ${told})\n`);
      expect(run.stdout.split("\n").filter(Boolean).map((line) => JSON.parse(line) as { stream: string; replicas: number; lowered: string[] }).map((st) => [st.stream, st.replicas, st.lowered])).toEqual([
        ["SHOP_ORDERS", 3, [told]],
        ["SHOP_PRODUCTS", 3, []],
        ["CONCORD_DLQ", 3, []],
      ]);
      expect((await jsm.streams.info("SHOP_ORDERS")).config.num_replicas).toBe(3);
    } finally {
      await nc.close();
    }
  });
});
