/**
 * PostgreSQL killed under load and kept away for longer than JetStream's
 * duplicate window (2 minutes). The events the relay had published and not
 * yet deleted are deleted when it returns, not published again (which had
 * them stored twice: 26 of 2,472 in one run).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { usePostgresServer } from "./support/postgres.js";
import { type RunningProducts, startTestProducts, tempDir } from "./support/shop.js";
import { readStream } from "./support/streams.js";

describe("PostgreSQL away for longer than the duplicate window", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const postgres = usePostgresServer();
  const nats = useNatsServer();
  const nc = useNatsConnection(nats);
  let products: RunningProducts;

  beforeAll(async () => {
    products = await startTestProducts(dir.path, nats().url, { database: await postgres().createDatabase("products") });
  }, 120_000);
  afterAll(async () => {
    await products?.stop();
  });

  it("publishes each event once per Nats-Msg-Id", async () => {
    let running = true;
    const load = Array.from({ length: 4 }, async () => {
      while (running) {
        await products.client.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 1 }, { timeoutMs: 2_000 }).catch(() => undefined);
      }
    });
    await new Promise((r) => setTimeout(r, 3_000));
    await postgres().kill();
    running = false;
    await Promise.all(load);
    await new Promise((r) => setTimeout(r, 130_000));
    await postgres().restart();
    await expect.poll(async () => (await products.service.events.outbox.pending()), { timeout: 30_000, interval: 500 }).toBe(0);
    const events = await readStream(await nc().jetstreamManager(), "SHOP_PRODUCTS");
    const ids = events.map((e) => e.headers?.get("Nats-Msg-Id"));
    const twice = ids.filter((id, i) => ids.indexOf(id) !== i);
    console.log(`${events.length} events in the stream, ${twice.length} of them a second copy`);
    expect(twice).toEqual([]);
  }, 240_000);
});
