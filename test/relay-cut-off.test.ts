/**
 * Two instances of the product service on one PostgreSQL: the one relaying
 * the outbox loses NATS (its network to NATS cut, PostgreSQL still there),
 * the other still reaches both. Events committed through the other instance
 * should still be published.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { connect } from "nats";
import { afterAll, describe, expect, it } from "vitest";
import { createLogger } from "../platform/log/index.js";
import { startNatsServer, useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { usePostgresServer } from "./support/postgres.js";
import { type RunningProducts, startTestProducts, tempDir } from "./support/shop.js";
import { readStream } from "./support/streams.js";

/** A TCP proxy to `port` that can be cut: its connections dropped and new ones refused. */
async function cuttableProxy(port: number): Promise<{ url: string; cut(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(port, "127.0.0.1");
    sockets.add(client).add(upstream);
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port: own } = server.address() as { port: number };
  return {
    url: `nats://127.0.0.1:${own}`,
    async cut() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}

describe("the relaying instance cut off from NATS", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const postgres = usePostgresServer();
  const nats = useNatsServer();
  const nc = useNatsConnection(nats);
  const products: RunningProducts[] = [];
  afterAll(async () => {
    for (const p of products) await p.stop().catch(() => undefined);
  });

  it("publishes the events the other instance commits", async () => {
    const database = await postgres().createDatabase("products");
    const proxy = await cuttableProxy(nats().port);
    const said: string[] = [];
    const logger = createLogger({ service: "products", level: "warn", destination: { write: (line: string) => void said.push(String(JSON.parse(line).msg)) } });
    products.push(await startTestProducts(dir.path, proxy.url, { database, logger }));
    const jsm = await nc().jetstreamManager();
    const published = async (subject: RegExp) => (await readStream(jsm, "SHOP_PRODUCTS")).some((e) => subject.test(e.subject));
    // The first instance relays (it published the first product's event before the second started).
    const { product } = await products[0].client.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 5 });
    await expect.poll(() => published(new RegExp(`${product!.id}\\.created$`)), { timeout: 10_000 }).toBe(true);
    products.push(await startTestProducts(dir.path, nats().url, { database }));
    await proxy.cut();
    const { product: second } = await products[1].client.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 2000 }, initialStock: 5 });
    const started = Date.now();
    await expect.poll(() => published(new RegExp(`${second!.id}\\.created$`)), { timeout: 30_000, interval: 500 }).toBe(true);
    console.log(`published ${Date.now() - started} ms after the commit`);
    // The first instance says why it left the relay: NATS, not its lock, which it gave up itself.
    await expect.poll(() => said.filter((m) => /outbox relay/.test(m))).toContain("NATS cannot be reached from this process; the outbox relay is left to another process of this service that reaches it, if one runs, and taken again once NATS answers");
    expect(said).not.toContain("the outbox relay's lock is gone (its database connection broke); waiting to take it again");
  }, 90_000);

  it("a lone instance whose NATS was away for longer than that takes the relay again and publishes once NATS is back", async () => {
    const own = await startNatsServer({ storeDir: `${dir.path}/lone-nats` });
    const said: string[] = [];
    const logger = createLogger({ service: "products", level: "warn", destination: { write: (line: string) => void said.push(String(JSON.parse(line).msg)) } });
    const lone = await startTestProducts(dir.path, own.url, { database: `${dir.path}/lone.db`, logger });
    products.push(lone);
    await own.stop();
    const { product } = await lone.client.createProduct({ name: "Cup", description: "", price: { currencyCode: "EUR", amountMinor: 500 }, initialStock: 1 });
    // Said once the relay has waited out its longest pause (5 s) with NATS away: about 5 s after the stop, later when
    // a try was under way or the machine is loaded. A SQLite file has one process: none other takes the relay, as the
    // words for PostgreSQL would say.
    await expect.poll(() => said, { timeout: 30_000, interval: 100 }).toContain("NATS cannot be reached from this process; the outbox relay waits, its events kept in the outbox, and publishes them once NATS answers");
    expect(said.filter((m) => /another process/.test(m))).toEqual([]);
    const back = await startNatsServer({ storeDir: `${dir.path}/lone-nats`, port: own.port });
    try {
      const watcher = await connect({ servers: back.url });
      const jsm = await watcher.jetstreamManager();
      await expect.poll(async () => (await readStream(jsm, "SHOP_PRODUCTS")).some((e) => e.subject.endsWith(`${product!.id}.created`)), { timeout: 15_000, interval: 500 }).toBe(true);
      await watcher.close();
    } finally {
      await lone.stop();
      products.pop();
      await back.stop();
    }
  }, 90_000);
});
