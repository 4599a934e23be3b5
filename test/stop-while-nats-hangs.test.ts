/**
 * A service stopped (SIGINT, SIGTERM) while nats-server hangs: it cannot
 * publish its outbox nor drain its connection, and says so in one line each,
 * without a stack; the events go out at its next start.
 */
import { connect } from "nats";
import { afterAll, describe, expect, it } from "vitest";
import { createLogger } from "../platform/log/index.js";
import { startNatsServer } from "./support/nats-server.js";
import { startTestProducts, tempDir } from "./support/shop.js";
import { readStream } from "./support/streams.js";

describe("a service stopped while nats-server hangs", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());

  it("says in one warning line each, no stack, that the outbox was not published and the connection not drained, and publishes at its next start", { timeout: 90_000 }, async () => {
    const nats = await startNatsServer({ storeDir: `${dir.path}/nats` });
    try {
      const lines: Record<string, unknown>[] = [];
      const logger = createLogger({ service: "products", level: "warn", destination: { write: (line: string) => void lines.push(JSON.parse(line)) } });
      const database = `${dir.path}/products.db`;
      const products = await startTestProducts(dir.path, nats.url, { database, logger });
      nats.pause();
      // kill() returns before the server is stopped.
      await new Promise((resolve) => setTimeout(resolve, 300));
      let id: string;
      try {
        const { product } = await products.client.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 5 });
        id = product!.id;
        await products.stop();
      } finally {
        nats.resume();
      }
      const stopping = lines.filter((l) => /at shutdown|without draining|as the service stops/.test(String(l.msg)));
      // The stop's flush times out, or, should the event's PubAck time out first, the relay stops there rather than retry it.
      const outboxLine = stopping[0]?.msg === "events left in the outbox at shutdown (not flushed within 5000 ms); nothing is lost: they go out at the next start" ? stopping[0].msg : (
        "the outbox relay stopped at a failure as the service stops, and did not retry it (publishing failed: no PubAck within 5000 ms); " +
        "events committed and not yet published, if any, stay in the outbox and go out at the next start"
      );
      expect(stopping.map((l) => l.msg)).toEqual([
        outboxLine,
        "closed the NATS connection without draining it (not drained within 5000 ms): publishes and acks still in flight went unconfirmed; " +
          "nothing is lost: events not confirmed stay in the outbox and are published again once the outbox is relayed (at the next start), " +
          "and messages not acknowledged are delivered again, their inboxes skipping those already handled",
      ]);
      // No line of the stop carries an error's stack.
      expect(lines.filter((l) => l.err !== undefined).map((l) => l.msg)).toEqual([]);
      const again = await startTestProducts(dir.path, nats.url, { database });
      try {
        const watcher = await connect({ servers: nats.url });
        try {
          const jsm = await watcher.jetstreamManager();
          await expect.poll(async () => (await readStream(jsm, "SHOP_PRODUCTS")).some((e) => e.subject.endsWith(`${id}.created`)), { timeout: 15_000, interval: 250 }).toBe(true);
        } finally {
          await watcher.close();
        }
      } finally {
        await again.stop();
      }
    } finally {
      await nats.stop();
    }
  });
});
