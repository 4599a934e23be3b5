import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { connect, ErrorCode, type NatsError } from "nats";
import { describe, expect, it } from "vitest";
import { startNatsCluster, startNatsServer, useNatsConnection, useNatsServer } from "./nats-server.js";
import { createTempDir } from "./temp-dir.js";

describe("startNatsServer", () => {
  it("starts JetStream on a free port, keeps the store across restart and kill, and cleans up on stop", async () => {
    const server = await startNatsServer();
    expect(server.url).toBe(`nats://127.0.0.1:${server.port}`);
    const nc = await connect({ servers: server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    try {
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({ name: "HARNESS", subjects: ["harness.>"] });
      await nc.jetstream().publish("harness.one", new Uint8Array([1]));
      await server.restart();
      await server.kill();
      await server.restart();
      const after = await connect({ servers: server.url });
      expect((await (await after.jetstreamManager()).streams.info("HARNESS")).state.messages).toBe(1);
      await after.close();
    } finally {
      await nc.close();
      await server.stop();
    }
    expect(existsSync(server.storeDir)).toBe(false);
    await expect(server.restart()).rejects.toThrow(/stopped for good/);
  });

  it("leaves a given store dir in place", async () => {
    const dir = createTempDir();
    try {
      const server = await startNatsServer({ storeDir: dir.path });
      expect(server.storeDir).toBe(dir.path);
      await server.stop();
      expect(existsSync(dir.path)).toBe(true);
    } finally {
      dir.remove();
    }
  });
});

describe("useNatsServer and useNatsConnection", () => {
  const stream = { name: "HARNESS_USE", subjects: ["harness.use.>"], storage: "file" as const, replicas: 1, maxAgeMs: 0, duplicateWindowMs: 120_000 };
  const server = useNatsServer();
  const nc = useNatsConnection(server, { streams: [stream] });

  it("give the block's tests a server and a connection to it, with the streams ensured", async () => {
    expect(nc().getServer()).toBe(`127.0.0.1:${server().port}`);
    expect((await (await nc().jetstreamManager()).streams.info(stream.name)).config.subjects).toEqual(stream.subjects);
  });

  it("refuses an option it does not know", () => {
    expect(() => useNatsConnection(server, { stream } as never)).toThrow(/unknown option stream/);
  });
});

describe("startNatsCluster", () => {
  it("starts three routed nodes with sync always, keeps a replicated stream through a kill, a restart and a pause, and cleans up on stop", async () => {
    const cluster = await startNatsCluster();
    expect(cluster.url.split(",")).toEqual(cluster.nodes.map((n) => n.url));
    expect(cluster.nodes.map((n) => n.name)).toEqual(["n1", "n2", "n3"]);
    expect(readFileSync(join(cluster.nodes[0].storeDir, "..", "n1.conf"), "utf8")).toContain("sync_interval: always");
    const nc = await connect({ servers: cluster.url.split(","), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    try {
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({ name: "HARNESS", subjects: ["harness.>"], num_replicas: 3 });
      // A new replicated stream answers publishes once its replicas have elected a leader (before that: 503, no responders).
      await expect.poll(async () => (await jsm.streams.info("HARNESS")).cluster?.leader, { timeout: 20_000 }).toBeTruthy();
      // And once the stream's interest in its subjects has crossed the routes to the node this client is on (a CI run
      // got 503 with the leader known): 503 stores nothing, so the publish is sent again.
      for (let tries = 1; ; tries++) {
        try {
          await nc.jetstream().publish("harness.one", new Uint8Array([1]));
          break;
        } catch (err) {
          if ((err as NatsError).code !== ErrorCode.NoResponders || tries === 100) throw err;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      const leader = cluster.node((await jsm.streams.info("HARNESS")).cluster!.leader!);
      await leader.kill();
      expect(leader.pid).toBeUndefined();
      await leader.restart();
      const other = cluster.nodes.find((n) => n !== leader)!;
      other.pause();
      other.resume();
      await other.healthy();
      await expect.poll(async () => (await jsm.streams.info("HARNESS")).state.messages, { timeout: 20_000 }).toBe(1);
    } finally {
      await nc.close();
      await cluster.stop();
    }
    expect(existsSync(cluster.nodes[0].storeDir)).toBe(false);
  });
});
