/**
 * A product row locked by another session (an operator's open transaction,
 * a long migration) for longer than the saga's retries last: the statement
 * timeout is 1 s here (the URL's), so that attempts counted for the waits
 * would have dead-lettered the events within 71 s, as they did at the
 * default 30 s after about 3.5 minutes. The order settles, and a cancelled
 * order's stock comes back, once the lock goes. And a row held while orders
 * for it and for other products arrive: the others settle meanwhile.
 */
import pg from "pg";
import { Code } from "../platform/errors/index.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { usePostgresServer } from "./support/postgres.js";
import { address, grpcError, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";
import { readStream } from "./support/streams.js";

/** Both services on a PostgreSQL server and a nats-server of the describe block's own; `productsQuery` ends the product service's database URL. */
function useShopOnPostgres(productsQuery: string) {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const postgres = usePostgresServer();
  const nats = useNatsServer();
  const nc = useNatsConnection(nats);
  const shop = {} as { productsDb: string; products: RunningProducts; orders: RunningOrders };
  beforeAll(async () => {
    shop.productsDb = await postgres().createDatabase("products");
    const ordersDb = await postgres().createDatabase("orders");
    shop.products = await startTestProducts(dir.path, nats().url, { database: `${shop.productsDb}${productsQuery}` });
    shop.orders = await startTestOrders(dir.path, shop.products.service.address, nats().url, { database: ordersDb });
  }, 120_000);
  afterAll(async () => {
    await shop.orders?.stop();
    await shop.products?.stop();
  });
  return { shop, nc };
}

describe("a product row locked for a few minutes by another session", () => {
  const { shop, nc } = useShopOnPostgres("?statement_timeout=1000");

  it("settles the order once the lock goes", async () => {
    const { product } = await shop.products.client.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 5 });
    const id = product!.id;
    const locker = new pg.Client({ connectionString: shop.productsDb });
    await locker.connect();
    await locker.query("BEGIN");
    await locker.query("SELECT * FROM products WHERE id = $1 FOR UPDATE", [id]);
    const { order } = await shop.orders.client.createOrder({ customerId: "c-1", lines: [{ productId: id, quantity: 1 }], shippingAddress: address });
    await new Promise((r) => setTimeout(r, 90_000));
    await locker.query("COMMIT");
    await locker.end();
    await new Promise((r) => setTimeout(r, 10_000));
    const state = (await shop.orders.client.getOrder({ id: order!.id })).order!.state;
    const dlq = await readStream(await nc().jetstreamManager(), "CONCORD_DLQ");
    const stock = (await shop.products.client.getProduct({ id })).product!.stock;
    console.log("after the lock went:", OrderState[state], "stock", stock, "dead letters", dlq.map((e) => `${e.subject}: ${e.headers?.get("concord-dlq-reason")}`));
    expect(dlq).toEqual([]);
    expect(state).toBe(OrderState.ORDER_STATE_CONFIRMED);
  }, 150_000);

  it("gives back a cancelled order's stock once the lock goes", async () => {
    const { product } = await shop.products.client.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 5 });
    const id = product!.id;
    const { order } = await shop.orders.client.createOrder({ customerId: "c-2", lines: [{ productId: id, quantity: 2 }], shippingAddress: address });
    await expect.poll(async () => (await shop.orders.client.getOrder({ id: order!.id })).order!.state, { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    const locker = new pg.Client({ connectionString: shop.productsDb });
    await locker.connect();
    await locker.query("BEGIN");
    await locker.query("SELECT * FROM products WHERE id = $1 FOR UPDATE", [id]);
    await shop.orders.client.cancelOrder({ id: order!.id, reason: "changed my mind" });
    await new Promise((r) => setTimeout(r, 90_000));
    await locker.query("COMMIT");
    await locker.end();
    await new Promise((r) => setTimeout(r, 10_000));
    const stock = (await shop.products.client.getProduct({ id })).product!.stock;
    const dlq = (await readStream(await nc().jetstreamManager(), "CONCORD_DLQ")).filter((e) => e.subject.includes("cancelled"));
    console.log("cancelled order, after the lock went: stock", stock, "of 5; dead letters", dlq.map((e) => `${e.subject}: ${e.headers?.get("concord-dlq-reason")}`));
    expect(stock).toBe(5);
  }, 150_000);
});

describe("one product's row held by another session while orders for it and for others arrive", () => {
  // The default statement timeout (30 s): a transaction's first event waits 10 s for a lock.
  const { shop, nc } = useShopOnPostgres("");

  it("settles the orders for other products while the row is held, and the held product's once it goes", async () => {
    const create = async (name: string) =>
      (await shop.products.client.createProduct({ name, description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 10 })).product!.id;
    const held = await create("Teapot");
    const free = await create("Kettle");
    const place = async (productId: string) =>
      (await shop.orders.client.createOrder({ customerId: "c-held", lines: [{ productId, quantity: 1 }], shippingAddress: address })).order!.id;
    const stateOf = async (id: string) => (await shop.orders.client.getOrder({ id })).order!.state;
    // The order service prices from its catalogue: both products in it before the row is taken.
    const warm = [await place(held), await place(free)];
    for (const id of warm) await expect.poll(() => stateOf(id), { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);

    const locker = new pg.Client({ connectionString: shop.productsDb });
    await locker.connect();
    await locker.query("BEGIN");
    await locker.query("SELECT * FROM products WHERE id = $1 FOR UPDATE", [held]);
    let waiting: string[];
    let others: string[];
    try {
      waiting = [];
      for (let i = 0; i < 4; i++) waiting.push(await place(held));
      others = [];
      const placed = performance.now();
      for (let i = 0; i < 3; i++) others.push(await place(free));
      // Each of the four used to wait 10 s for the row in turn, with the orders behind them: 40 s and more.
      for (const id of others) await expect.poll(() => stateOf(id), { timeout: 25_000, interval: 250 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
      console.log(`the other product's orders confirmed ${((performance.now() - placed) / 1000).toFixed(1)} s after they were placed, the row still held`);
      for (const id of waiting) expect(await stateOf(id)).toBe(OrderState.ORDER_STATE_PENDING);
    } finally {
      await locker.query("COMMIT");
      await locker.end();
    }
    for (const id of waiting) await expect.poll(() => stateOf(id), { timeout: 30_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    expect((await shop.products.client.getProduct({ id: held })).product!.stock).toBe(5);
    expect((await shop.products.client.getProduct({ id: free })).product!.stock).toBe(6);
    expect(await readStream(await nc().jetstreamManager(), "CONCORD_DLQ")).toEqual([]);
  }, 120_000);

  it("answers calls that need the held row ABORTED after 2 s of waiting, and serves the instance's other calls meanwhile", async () => {
    const create = async (name: string) =>
      (await shop.products.client.createProduct({ name, description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 10 })).product!.id;
    const held = await create("Milk jug");
    const free = await create("Sugar bowl");
    const locker = new pg.Client({ connectionString: shop.productsDb });
    await locker.connect();
    await locker.query("BEGIN");
    await locker.query("SELECT * FROM products WHERE id = $1 FOR UPDATE", [held]);
    try {
      // Thirty callers with deadlines far off (as grpcurl sends none): each took one of the instance's ten pooled
      // connections until the statement timeout (30 s), and every other call waited for one meanwhile.
      const waiting = Array.from({ length: 30 }, () => grpcError(shop.products.client.adjustStock({ id: held, delta: 1, reason: "delivery" }, { timeoutMs: 60_000 })));
      await new Promise((r) => setTimeout(r, 300));
      // Another product's change, with the client's own 5 s deadline.
      expect((await shop.products.client.adjustStock({ id: free, delta: 1, reason: "delivery" })).product!.stock).toBe(11);
      for (const err of await Promise.all(waiting)) {
        expect(err.code).toBe(Code.ABORTED);
        expect(err.message).toBe("a row or lock this change needs was held by another session for more than 2000 ms (a long transaction, a migration); nothing was changed, try again");
      }
    } finally {
      await locker.query("COMMIT");
      await locker.end();
    }
    expect((await shop.products.client.getProduct({ id: held })).product!.stock).toBe(10);
  }, 120_000);
});
