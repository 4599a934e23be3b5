/**
 * A product row locked by another session (an operator's open transaction,
 * a long migration) for longer than the saga's retries last: the statement
 * timeout is 1 s here (the URL's), so that attempts counted for the waits
 * would have dead-lettered the events within 71 s, as they did at the
 * default 30 s after about 3.5 minutes. The order settles, and a cancelled
 * order's stock comes back, once the lock goes.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { usePostgresServer } from "./support/postgres.js";
import { address, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";
import { readStream } from "./support/streams.js";

describe("a product row locked for a few minutes by another session", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const postgres = usePostgresServer();
  const nats = useNatsServer();
  const nc = useNatsConnection(nats);
  let productsDb: string;
  let products: RunningProducts;
  let orders: RunningOrders;

  beforeAll(async () => {
    productsDb = await postgres().createDatabase("products");
    const ordersDb = await postgres().createDatabase("orders");
    products = await startTestProducts(dir.path, nats().url, { database: `${productsDb}?statement_timeout=1000` });
    orders = await startTestOrders(dir.path, products.service.address, nats().url, { database: ordersDb });
  }, 120_000);
  afterAll(async () => {
    await orders?.stop();
    await products?.stop();
  });

  it("settles the order once the lock goes", async () => {
    const { product } = await products.client.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 5 });
    const id = product!.id;
    const locker = new pg.Client({ connectionString: productsDb });
    await locker.connect();
    await locker.query("BEGIN");
    await locker.query("SELECT * FROM products WHERE id = $1 FOR UPDATE", [id]);
    const { order } = await orders.client.createOrder({ customerId: "c-1", lines: [{ productId: id, quantity: 1 }], shippingAddress: address });
    await new Promise((r) => setTimeout(r, 90_000));
    await locker.query("COMMIT");
    await locker.end();
    await new Promise((r) => setTimeout(r, 10_000));
    const state = (await orders.client.getOrder({ id: order!.id })).order!.state;
    const dlq = await readStream(await nc().jetstreamManager(), "CONCORD_DLQ");
    const stock = (await products.client.getProduct({ id })).product!.stock;
    console.log("after the lock went:", OrderState[state], "stock", stock, "dead letters", dlq.map((e) => `${e.subject}: ${e.headers?.get("concord-dlq-reason")}`));
    expect(dlq).toEqual([]);
    expect(state).toBe(OrderState.ORDER_STATE_CONFIRMED);
  }, 150_000);

  it("gives back a cancelled order's stock once the lock goes", async () => {
    const { product } = await products.client.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 5 });
    const id = product!.id;
    const { order } = await orders.client.createOrder({ customerId: "c-2", lines: [{ productId: id, quantity: 2 }], shippingAddress: address });
    await expect.poll(async () => (await orders.client.getOrder({ id: order!.id })).order!.state, { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    const locker = new pg.Client({ connectionString: productsDb });
    await locker.connect();
    await locker.query("BEGIN");
    await locker.query("SELECT * FROM products WHERE id = $1 FOR UPDATE", [id]);
    await orders.client.cancelOrder({ id: order!.id, reason: "changed my mind" });
    await new Promise((r) => setTimeout(r, 90_000));
    await locker.query("COMMIT");
    await locker.end();
    await new Promise((r) => setTimeout(r, 10_000));
    const stock = (await products.client.getProduct({ id })).product!.stock;
    const dlq = (await readStream(await nc().jetstreamManager(), "CONCORD_DLQ")).filter((e) => e.subject.includes("cancelled"));
    console.log("cancelled order, after the lock went: stock", stock, "of 5; dead letters", dlq.map((e) => `${e.subject}: ${e.headers?.get("concord-dlq-reason")}`));
    expect(stock).toBe(5);
  }, 150_000);
});
