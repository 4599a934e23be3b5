import { join } from "node:path";
import { headers as natsHeaders } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderCancelled } from "../gen/ts/shop/orders/v1/order_events_pb.js";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { StockReserved } from "../gen/ts/shop/products/v1/product_events_pb.js";
import { uuidv7 } from "../platform/ids/index.js";
import { useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { address, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";
import { readStream } from "./support/streams.js";

const { PENDING, CONFIRMED, CANCELLED } = { PENDING: OrderState.ORDER_STATE_PENDING, CONFIRMED: OrderState.ORDER_STATE_CONFIRMED, CANCELLED: OrderState.ORDER_STATE_CANCELLED };
const eur = (amountMinor: number) => ({ currencyCode: "EUR", amountMinor });

/**
 * A shop whose product service can be stopped and started again on its own
 * database, for orders the product service does not answer.
 */
function useShop(pendingTimeoutMs: number) {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const nats = useNatsServer({ storeDir: join(dir.path, "nats") });
  const nc = useNatsConnection(nats);
  const shop = {} as { products?: RunningProducts; orders: RunningOrders };
  const productsDb = join(dir.path, "products.db");
  const startProducts = async () => (shop.products = await startTestProducts(dir.path, nats().url, { database: productsDb }));
  const stopProducts = async () => {
    await shop.products?.stop();
    shop.products = undefined;
  };
  beforeAll(async () => {
    await startProducts();
    shop.orders = await startTestOrders(dir.path, shop.products!.service.address, nats().url, { pendingTimeoutMs, metricsListen: "127.0.0.1:0" });
  }, 60_000);
  afterAll(async () => {
    await shop.orders?.stop();
    await stopProducts();
  });

  const products = () => shop.products!.client;
  const orders = () => shop.orders.client;
  return {
    shop,
    nc,
    startProducts,
    stopProducts,
    newProduct: async (stock: number) => (await products().createProduct({ name: "Teapot", description: "", price: eur(1000), initialStock: stock })).product!.id,
    stockOf: async (id: string) => (await products().getProduct({ id })).product!.stock,
    orderOf: async (id: string) => (await orders().getOrder({ id })).order!,
    placeOrder: (productId: string, quantity: number) => orders().createOrder({ customerId: "c-timeout", lines: [{ productId, quantity }], shippingAddress: address }).then((r) => r.order!),
    /** The OrderCancelled events in the stream, by order. */
    cancelledEvents: async () =>
      (await readStream(await nc().jetstreamManager(), "SHOP_ORDERS")).filter((e) => e.subject.endsWith(".cancelled")).map((e) => OrderCancelled.decode(e.data)),
    /** Whether a durable consumer has taken every event of its stream there is. */
    caughtUp: async (stream: string, durable: string) => {
      const info = await (await nc().jetstreamManager()).consumers.info(stream, durable);
      return info.num_pending === 0 && info.num_ack_pending === 0;
    },
    metric: async (name: string) => {
      const text = await (await fetch(`http://${shop.orders.service.metricsAddress}/metrics`)).text();
      const line = text.split("\n").find((l) => l.startsWith(`${name} `));
      return line === undefined ? undefined : Number(line.split(" ")[1]);
    },
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("the saga's timeout", () => {
  const t = useShop(1_000);

  it("cancels an order the product service never answered for, with OrderCancelled saying why, and no stock stays held once the product service has taken both events; a confirmed order is left alone", async () => {
    const productId = await t.newProduct(5);
    // Answered: confirmed, and the timeout never touches it. Its lookup also puts the product in the order service's catalogue.
    const confirmed = await t.placeOrder(productId, 1);
    await expect.poll(async () => (await t.orderOf(confirmed.id)).state).toBe(CONFIRMED);
    const confirmedVersion = (await t.orderOf(confirmed.id)).version;
    expect(await t.stockOf(productId)).toBe(4);

    await t.stopProducts();
    const unanswered = await t.placeOrder(productId, 2);
    expect(unanswered.state).toBe(PENDING);
    await expect.poll(async () => (await t.orderOf(unanswered.id)).state, { timeout: 10_000, interval: 100 }).toBe(CANCELLED);
    const reason = "not confirmed within 1s: no answer about its stock came from the product service";
    await expect.poll(t.cancelledEvents).toEqual([{ orderId: unanswered.id, customerId: "c-timeout", reason }]);
    // Its customer reads why, as the event says.
    expect((await t.orderOf(unanswered.id)).cancellationReason).toBe(reason);
    expect(await t.metric("concord_orders_timed_out_total")).toBe(1);

    // An answer that comes after the timeout, as the product service would have sent it, changes nothing.
    const late = StockReserved.encode({ orderId: unanswered.id, lines: [{ productId, quantity: 2 }], linesVersion: 1 }).finish();
    const h = natsHeaders();
    for (const [k, v] of Object.entries({ "ce-specversion": "1.0", "ce-id": uuidv7(), "ce-type": "shop.products.v1.StockReserved", "ce-source": "products", "ce-time": new Date().toISOString(), "content-type": "application/protobuf" })) h.set(k, v);
    await t.nc().jetstream().publish(`shop.products.v1.reservation.${unanswered.id}.reserved`, late, { headers: h });
    await expect.poll(() => t.caughtUp("SHOP_PRODUCTS", "orders-stock-reserved"), { timeout: 10_000, interval: 100 }).toBe(true);
    expect(await t.orderOf(unanswered.id)).toMatchObject({ state: CANCELLED, version: 2 });
    expect((await readStream(await t.nc().jetstreamManager(), "CONCORD_DLQ")).map((e) => e.headers.get("concord-dlq-subject"))).toEqual([]);

    // Its OrderPlaced and OrderCancelled both reach the product service now, in whichever order: it holds nothing for the order.
    await t.startProducts();
    await expect.poll(async () => (await t.caughtUp("SHOP_ORDERS", "products-order-placed")) && (await t.caughtUp("SHOP_ORDERS", "products-order-cancelled")), { timeout: 10_000, interval: 100 }).toBe(true);
    expect(await t.stockOf(productId)).toBe(4);
    // A StockReserved the product service may have sent before it took the cancel changes nothing here.
    await expect.poll(() => t.caughtUp("SHOP_PRODUCTS", "orders-stock-reserved"), { timeout: 10_000, interval: 100 }).toBe(true);
    expect(await t.orderOf(unanswered.id)).toMatchObject({ state: CANCELLED, version: 2 });

    // Seconds past its timeout, the confirmed order is as it was, and nothing cancelled it.
    await sleep(1_500);
    expect(await t.orderOf(confirmed.id)).toMatchObject({ state: CONFIRMED, version: confirmedVersion });
    expect((await t.cancelledEvents()).map((e) => e.orderId)).toEqual([unanswered.id]);
    expect(await t.metric("concord_orders_timed_out_total")).toBe(1);
  });
});

describe("the saga's timeout turned off", () => {
  const t = useShop(0);

  it("leaves an unanswered order PENDING", async () => {
    const productId = await t.newProduct(5);
    const answered = await t.placeOrder(productId, 1);
    await expect.poll(async () => (await t.orderOf(answered.id)).state).toBe(CONFIRMED);
    await t.stopProducts();
    const unanswered = await t.placeOrder(productId, 1);
    await sleep(3_000);
    expect(await t.orderOf(unanswered.id)).toMatchObject({ state: PENDING, version: 1 });
    expect(await t.cancelledEvents()).toEqual([]);
    expect(await t.metric("concord_orders_timed_out_total")).toBe(0);
  });
});
