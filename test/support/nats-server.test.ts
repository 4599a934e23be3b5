import { existsSync } from "node:fs";
import { connect } from "nats";
import { describe, expect, it } from "vitest";
import { startNatsServer } from "./nats-server.js";
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
