import { connect, headers as natsHeaders, type NatsConnection, type NatsError } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderCancelled, OrderPlaced, OrderUnknown } from "../gen/ts/shop/orders/v1/order_events_pb.js";
import { ShopOrdersStream } from "../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import BetterSqlite3 from "better-sqlite3";
import { ShopProductsStream } from "../gen/ts/shop/products/v1/product_events_jetstream.js";
import { ProductCreated, ProductUpdated, StockReserved } from "../gen/ts/shop/products/v1/product_events_pb.js";
import { Product } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { uuidv7 } from "../platform/ids/index.js";
import { eventually, readStream } from "./support/streams.js";
import { address, type Shop, startShop } from "./support/shop.js";

const eur = (amountMinor: number) => ({ currencyCode: "EUR", amountMinor });
const { PENDING, CONFIRMED, REJECTED, CANCELLED } = {
  PENDING: OrderState.ORDER_STATE_PENDING,
  CONFIRMED: OrderState.ORDER_STATE_CONFIRMED,
  REJECTED: OrderState.ORDER_STATE_REJECTED,
  CANCELLED: OrderState.ORDER_STATE_CANCELLED,
};

/** Publishes an order event by hand, as the order service (in another language) would: CloudEvents headers, protobuf payload. */
async function publishRaw(nc: NatsConnection, subject: string, type: string, payload: Uint8Array, ceId: string, msgId = ceId, source = "orders"): Promise<void> {
  const h = natsHeaders();
  h.set("ce-specversion", "1.0");
  h.set("ce-id", ceId);
  h.set("ce-type", type);
  h.set("ce-source", source);
  h.set("ce-time", new Date().toISOString());
  h.set("content-type", "application/protobuf");
  await nc.jetstream().publish(subject, payload, { msgID: msgId, headers: h });
}

describe("the order saga", () => {
  let shop: Shop;
  let nc: NatsConnection;
  beforeAll(async () => {
    shop = await startShop();
    nc = await connect({ servers: shop.nats.url });
  });
  afterAll(async () => {
    await nc?.close();
    await shop.stop();
  });

  const newProduct = async (stock: number, name = "Teapot") =>
    (await shop.products.client.createProduct({ name, description: "", price: eur(1000), initialStock: stock })).product!.id;
  const stockOf = async (id: string) => (await shop.products.client.getProduct({ id })).product!.stock;
  const stateOf = async (id: string) => (await shop.orders.client.getOrder({ id })).order!.state;
  const placeOrder = (productId: string, quantity = 1, customerId = "c-saga") =>
    shop.orders.client.createOrder({ customerId, lines: [{ productId, quantity }], shippingAddress: address }).then((r) => r.order!);

  it("confirms an order whose stock is reserved, and rejects one with too little, saying why", async () => {
    const productId = await newProduct(3);
    const ok = await placeOrder(productId, 2);
    expect(ok.state).toBe(PENDING);
    await expect.poll(() => stateOf(ok.id)).toBe(CONFIRMED);
    expect(await stockOf(productId)).toBe(1);
    const tooMany = await placeOrder(productId, 2);
    await expect.poll(() => stateOf(tooMany.id)).toBe(REJECTED);
    const rejected = (await shop.orders.client.getOrder({ id: tooMany.id })).order!;
    expect(rejected.rejectionReason).toContain("not enough stock");
    expect(rejected.rejectionReason).toContain(productId);
    expect(await stockOf(productId)).toBe(1);
  });

  it("never oversells: 200 concurrent orders for 50 units end with 50 CONFIRMED, 150 REJECTED and stock 0", async () => {
    const productId = await newProduct(50, "Limited edition");
    let lowest = Number.POSITIVE_INFINITY;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        lowest = Math.min(lowest, await stockOf(productId));
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const placed = await Promise.all(Array.from({ length: 200 }, (_, i) => placeOrder(productId, 1, `c-rush-${i}`)));
    expect(placed.every((o) => o.state === PENDING)).toBe(true);
    const settled = async () => {
      const states = await Promise.all(placed.map((o) => stateOf(o.id)));
      return { confirmed: states.filter((s) => s === CONFIRMED).length, rejected: states.filter((s) => s === REJECTED).length };
    };
    await expect.poll(settled, { timeout: 30_000, interval: 200 }).toEqual({ confirmed: 50, rejected: 150 });
    sampling = false;
    await sampler;
    expect(await stockOf(productId)).toBe(0);
    expect(lowest).toBeGreaterThanOrEqual(0);
  });

  it("releases the stock of a cancelled order, once", async () => {
    const productId = await newProduct(5);
    const order = await placeOrder(productId, 4);
    await expect.poll(() => stateOf(order.id)).toBe(CONFIRMED);
    expect(await stockOf(productId)).toBe(1);
    await shop.orders.client.cancelOrder({ id: order.id, reason: "changed my mind" });
    await shop.orders.client.cancelOrder({ id: order.id, reason: "twice" });
    await expect.poll(() => stockOf(productId)).toBe(5);
    // StockReleased is committed with the stock; the relay publishes it a moment later.
    const released = async () => (await readStream(shop.products.service.events.bus.jsm, "SHOP_PRODUCTS")).filter((e) => e.subject === `shop.products.v1.reservation.${order.id}.released`);
    await expect.poll(async () => (await released()).length).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 200));
    expect(await released()).toHaveLength(1);
    expect(await stockOf(productId)).toBe(5);
    expect(await stateOf(order.id)).toBe(CANCELLED);
  });

  it("gives a redelivered or duplicated event no second effect", async () => {
    const productId = await newProduct(10);
    // An order the order service has: one it does not have would have its stock given back (OrderUnknown, test/unknown-order.test.ts).
    const order = await placeOrder(productId, 3, "c-dup");
    await expect.poll(() => stateOf(order.id)).toBe(CONFIRMED);
    expect(await stockOf(productId)).toBe(7);
    const jsm = shop.products.service.events.bus.jsm;
    const subject = `shop.orders.v1.order.${order.id}.placed`;
    const [sent] = (await readStream(jsm, "SHOP_ORDERS")).filter((e) => e.subject === subject);
    const ceId = sent.headers.get("ce-id");
    // The same event twice more: again past JetStream's dedup (new Nats-Msg-Id, same ce-id), and as a new event about the same lines.
    await publishRaw(nc, subject, "shop.orders.v1.OrderPlaced", sent.data, ceId, uuidv7());
    await publishRaw(nc, subject, "shop.orders.v1.OrderPlaced", sent.data, uuidv7());
    const consumer = () => jsm.consumers.info("SHOP_ORDERS", "products-order-placed");
    await expect.poll(async () => ((c) => c.num_pending + c.num_ack_pending)(await consumer())).toBe(0);
    const reserved = async () => (await readStream(jsm, "SHOP_PRODUCTS")).filter((e) => e.subject === `shop.products.v1.reservation.${order.id}.reserved`);
    await new Promise((r) => setTimeout(r, 300));
    expect(await stockOf(productId)).toBe(7);
    expect(await reserved()).toHaveLength(1);
    expect(await stateOf(order.id)).toBe(CONFIRMED);
  });

  it("takes an event whose UUIDs are in upper case (another SDK's) as naming the same order and products, and one ce-id in both cases as one event", async () => {
    const productId = await newProduct(10);
    const orderId = uuidv7();
    const [ORDER, PRODUCT, EVENT] = [orderId.toUpperCase(), productId.toUpperCase(), uuidv7().toUpperCase()];
    const line = { productId: PRODUCT, productName: "Teapot", quantity: 3, unitPrice: eur(1000), lineTotal: eur(3000) };
    const placed = OrderPlaced.encode({ orderId: ORDER, customerId: "c-upper", lines: [line], total: eur(3000), linesVersion: 1 }).finish();
    await publishRaw(nc, `shop.orders.v1.order.${ORDER}.placed`, "shop.orders.v1.OrderPlaced", placed, EVENT);
    // The product was found by its id in upper case: its stock is reserved, and the answer names the order and the product as the services write ids.
    const reserved = async () => (await readStream(shop.products.service.events.bus.jsm, "SHOP_PRODUCTS")).filter((e) => e.subject === `shop.products.v1.reservation.${orderId}.reserved`);
    await expect.poll(async () => (await reserved()).length).toBe(1);
    expect(StockReserved.decode((await reserved())[0].data)).toEqual({ orderId, lines: [{ productId, quantity: 3 }], linesVersion: 1 });
    // The order service has no such order and answers OrderUnknown, naming it in lower case: the stock the upper-case event reserved is given back.
    await expect.poll(() => stockOf(productId)).toBe(10);
    // The same event again, its ce-id now in lower case (a Nats-Msg-Id of its own, so JetStream keeps it): the inbox knows it.
    await publishRaw(nc, `shop.orders.v1.order.${orderId}.placed`, "shop.orders.v1.OrderPlaced", placed, EVENT.toLowerCase());
    const inboxRows = () => {
      const db = new BetterSqlite3(shop.products.databasePath, { readonly: true });
      try {
        return db.prepare("SELECT event_id FROM event_inbox WHERE consumer = 'products-order-placed' AND lower(event_id) = ?").all(EVENT.toLowerCase());
      } finally {
        db.close();
      }
    };
    const consumer = () => shop.products.service.events.bus.jsm.consumers.info("SHOP_ORDERS", "products-order-placed");
    await expect.poll(async () => ((c) => c.num_pending + c.num_ack_pending)(await consumer())).toBe(0);
    expect(inboxRows()).toEqual([{ event_id: EVENT.toLowerCase() }]);
    expect(await stockOf(productId)).toBe(10);
    expect(await reserved()).toHaveLength(1);
    // A cancel naming another order in upper case, ahead of its OrderPlaced in lower case: the same order, for which nothing is reserved then.
    const later = uuidv7();
    const cancelled = OrderCancelled.encode({ orderId: later.toUpperCase(), customerId: "c-upper", reason: "" }).finish();
    await publishRaw(nc, `shop.orders.v1.order.${later.toUpperCase()}.cancelled`, "shop.orders.v1.OrderCancelled", cancelled, uuidv7().toUpperCase());
    const cancels = () => shop.products.service.events.bus.jsm.consumers.info("SHOP_ORDERS", "products-order-cancelled");
    await expect.poll(async () => ((c) => c.num_pending + c.num_ack_pending)(await cancels())).toBe(0);
    const placedLater = OrderPlaced.encode({ orderId: later, customerId: "c-upper", lines: [{ ...line, productId }], total: eur(3000), linesVersion: 1 }).finish();
    await publishRaw(nc, `shop.orders.v1.order.${later}.placed`, "shop.orders.v1.OrderPlaced", placedLater, uuidv7());
    await expect.poll(async () => ((c) => c.num_pending + c.num_ack_pending)(await consumer())).toBe(0);
    expect((await readStream(shop.products.service.events.bus.jsm, "SHOP_PRODUCTS")).filter((e) => e.subject.startsWith(`shop.products.v1.reservation.${later}.`))).toEqual([]);
    expect(await stockOf(productId)).toBe(10);
    // One product named in both cases is named twice: the lines' unique rule sends the event to the dead letter stream.
    const twice = uuidv7();
    const both = OrderPlaced.encode({ orderId: twice, customerId: "c-upper", lines: [line, { ...line, productId }], total: eur(6000), linesVersion: 1 }).finish();
    await publishRaw(nc, `shop.orders.v1.order.${twice}.placed`, "shop.orders.v1.OrderPlaced", both, uuidv7());
    const letters = async () => (await readStream(shop.products.service.events.bus.jsm, "CONCORD_DLQ")).filter((e) => e.headers.get("concord-dlq-subject") === `shop.orders.v1.order.${twice}.placed`);
    await expect.poll(async () => (await letters()).length).toBe(1);
    expect((await letters())[0].headers.get("concord-dlq-reason")).toMatch(/lines: each product may appear in one line only/);
    expect(await stockOf(productId)).toBe(10);
  });

  it("keeps every state right when a cancellation overtakes the order it cancels", async () => {
    const productId = await newProduct(10);
    const orderId = uuidv7();
    await publishRaw(nc, `shop.orders.v1.order.${orderId}.cancelled`, "shop.orders.v1.OrderCancelled", OrderCancelled.encode({ orderId, customerId: "c-late", reason: "" }).finish(), uuidv7());
    await new Promise((r) => setTimeout(r, 200));
    const placed = OrderPlaced.encode({ orderId, customerId: "c-late", lines: [{ productId, productName: "Teapot", quantity: 2, unitPrice: eur(1000), lineTotal: eur(2000) }], total: eur(2000), linesVersion: 1 }).finish();
    await publishRaw(nc, `shop.orders.v1.order.${orderId}.placed`, "shop.orders.v1.OrderPlaced", placed, uuidv7());
    // A later order on the same product still goes through, so the late OrderPlaced has been handled by then.
    const after = await placeOrder(productId, 1);
    await expect.poll(() => stateOf(after.id)).toBe(CONFIRMED);
    expect(await stockOf(productId)).toBe(9);
  });

  it("dead-letters an undecodable event at once, with the reason, and keeps the saga flowing", async () => {
    const orderId = uuidv7();
    await publishRaw(nc, `shop.orders.v1.order.${orderId}.placed`, "shop.orders.v1.OrderPlaced", new Uint8Array([0xff, 0xff, 0xff]), uuidv7());
    const jsm = shop.products.service.events.bus.jsm;
    const deadLetters = async () => (await readStream(jsm, "CONCORD_DLQ")).filter((e) => e.headers.get("concord-dlq-subject") === `shop.orders.v1.order.${orderId}.placed`);
    await expect.poll(async () => (await deadLetters()).length).toBe(1);
    const [letter] = await deadLetters();
    expect(letter.subject).toBe("concord.dlq.SHOP_ORDERS.products-order-placed");
    expect(letter.headers.get("concord-dlq-reason")).not.toBe("");
    expect(letter.headers.get("ce-type")).toBe("shop.orders.v1.OrderPlaced");
    const next = await placeOrder(await newProduct(1), 1);
    await expect.poll(() => stateOf(next.id)).toBe(CONFIRMED);
  });

  it("answers OrderUnknown to a StockReserved about an order the order service does not have, and dead-letters nothing", async () => {
    const orderId = uuidv7();
    const subject = `shop.products.v1.reservation.${orderId}.reserved`;
    const payload = StockReserved.encode({ orderId, lines: [{ productId: uuidv7(), quantity: 1 }], linesVersion: 1 }).finish();
    await publishRaw(nc, subject, "shop.products.v1.StockReserved", payload, uuidv7(), undefined, "products");
    const jsm = shop.orders.service.events.bus.jsm;
    const unknown = async () => (await readStream(jsm, "SHOP_ORDERS")).filter((e) => e.subject === `shop.orders.v1.order.${orderId}.unknown`);
    await expect.poll(async () => (await unknown()).length).toBe(1);
    expect(OrderUnknown.decode((await unknown())[0].data)).toEqual({ orderId, linesVersion: 1 });
    expect((await readStream(jsm, "CONCORD_DLQ")).filter((e) => e.headers.get("concord-dlq-subject") === subject)).toEqual([]);
  });

  it("dead-letters at once, with the reason, an event that breaks its contract, and changes no stock", async () => {
    const productId = await newProduct(100);
    const jsm = shop.products.service.events.bus.jsm;
    const lettersFor = async (orderId: string) => (await readStream(jsm, "CONCORD_DLQ")).filter((e) => e.headers.get("concord-dlq-subject") === `shop.orders.v1.order.${orderId}.placed`);
    // A quantity of -500 would have put 500 units on the shelf; a 600,000-character product id made a 1.2 MB reply.
    const negative = uuidv7();
    const huge = uuidv7();
    const line = (id: string, quantity: number) => ({ productId: id, productName: "Teapot", quantity, unitPrice: eur(1000), lineTotal: eur(1000) });
    await publishRaw(nc, `shop.orders.v1.order.${negative}.placed`, "shop.orders.v1.OrderPlaced", OrderPlaced.encode({ orderId: negative, customerId: "c-evil", lines: [line(productId, -500)], total: eur(0), linesVersion: 1 }).finish(), uuidv7());
    // SHOP_ORDERS refuses a message that large itself (the next test): lifted here, as an operator could by hand, to reach the consumer.
    await jsm.streams.update(ShopOrdersStream.name, { max_msg_size: -1 });
    try {
      await publishRaw(nc, `shop.orders.v1.order.${huge}.placed`, "shop.orders.v1.OrderPlaced", OrderPlaced.encode({ orderId: huge, customerId: "c-evil", lines: [line("p".repeat(600_000), 1)], total: eur(1000), linesVersion: 1 }).finish(), uuidv7());
    } finally {
      await jsm.streams.update(ShopOrdersStream.name, { max_msg_size: ShopOrdersStream.maxMessageBytes });
    }
    await expect.poll(async () => (await lettersFor(negative)).length + (await lettersFor(huge)).length).toBe(2);
    const [letter] = await lettersFor(negative);
    expect(letter.headers.get("concord-dlq-reason")).toMatch(/breaks its contract's rules: lines\[0\]\.quantity/);
    expect(letter.headers.get("concord-dlq-delivery-count")).toBe("1");
    // Refused for its size before it is decoded: twice the largest OrderPlaced its contract allows, plus 1 KiB.
    expect((await lettersFor(huge))[0].headers.get("concord-dlq-reason")).toMatch(/^the shop\.orders\.v1\.OrderPlaced payload has \d+ bytes, more than the \d+ its contract allows .*; it is not decoded$/);
    expect(await stockOf(productId)).toBe(100);
    const next = await placeOrder(productId, 1);
    await expect.poll(() => stateOf(next.id)).toBe(CONFIRMED);
  });

  it("has an event larger than its stream takes refused by JetStream at once: the publisher is told, and nothing is stored or dead-lettered", async () => {
    const jsm = shop.products.service.events.bus.jsm;
    const orderId = uuidv7();
    const productId = uuidv7();
    const placed = `shop.orders.v1.order.${orderId}.placed`;
    const updated = `shop.products.v1.product.${productId}.updated`;
    const line = { productId: "p".repeat(600_000), productName: "Teapot", quantity: 1, unitPrice: eur(1000), lineTotal: eur(1000) };
    const order = OrderPlaced.encode({ orderId, customerId: "c-evil", lines: [line], total: eur(1000), linesVersion: 1 }).finish();
    // A description of 30,000 characters, where its contract allows 2,000: over what SHOP_PRODUCTS takes.
    const product = Product.fromPartial({ id: productId, name: "Teapot", description: "d".repeat(30_000), price: eur(1000), stock: 1, version: 2, stockVersion: 1, createTime: new Date(), updateTime: new Date() });
    const update = ProductUpdated.encode({ productId, product, changedFields: ["description"] }).finish();
    expect(update.byteLength).toBeGreaterThan(ShopProductsStream.maxMessageBytes);
    const refusals = await Promise.all([
      publishRaw(nc, placed, "shop.orders.v1.OrderPlaced", order, uuidv7()).catch((err: unknown) => err),
      publishRaw(nc, updated, "shop.products.v1.ProductUpdated", update, uuidv7(), undefined, "products").catch((err: unknown) => err),
    ]);
    for (const refused of refusals) expect((refused as NatsError).api_error).toMatchObject({ err_code: 10054, description: "message size exceeds maximum allowed" });
    for (const [stream, subject] of [[ShopOrdersStream.name, placed], [ShopProductsStream.name, updated]]) {
      await expect(jsm.streams.getMessage(stream, { last_by_subj: subject })).rejects.toThrow(/no message found/);
    }
    const letters = (await readStream(jsm, "CONCORD_DLQ")).filter((e) => [placed, updated].includes(e.headers.get("concord-dlq-subject")));
    expect(letters).toEqual([]);
  });

  it("dead-letters at once, without handling it, an event with a NUL character in a string (no store takes such text alike)", async () => {
    // Products on SQLite and orders on PostgreSQL: such a ProductCreated was retried until dead-lettered, and every order for it failed.
    const productId = uuidv7();
    const subject = `shop.products.v1.product.${productId}.created`;
    const product = Product.fromPartial({ id: productId, name: "Tea\u0000pot", price: eur(1000), stock: 1, version: 1, stockVersion: 1, createTime: new Date(), updateTime: new Date() });
    await publishRaw(nc, subject, "shop.products.v1.ProductCreated", ProductCreated.encode({ productId, product }).finish(), uuidv7(), undefined, "products");
    const jsm = shop.orders.service.events.bus.jsm;
    const letters = async () => (await readStream(jsm, "CONCORD_DLQ")).filter((e) => e.headers.get("concord-dlq-subject") === subject);
    await expect.poll(async () => (await letters()).length).toBe(1);
    const [letter] = await letters();
    expect(letter.headers.get("concord-dlq-reason")).toBe("the shop.products.v1.ProductCreated event breaks its contract's rules: product.name: must not contain the NUL character (U+0000)");
    expect(letter.headers.get("concord-dlq-delivery-count"), "not retried first").toBe("1");
    const db = new BetterSqlite3(shop.orders.databasePath, { readonly: true });
    try {
      expect(db.prepare("SELECT count(*) AS n FROM product_catalog WHERE product_id = ?").get(productId), "the handler did not run").toEqual({ n: 0 });
    } finally {
      db.close();
    }
  });

  it("does not make a catalogue edit stale when orders reserve stock in between", async () => {
    const productId = await newProduct(10);
    const seen = (await shop.products.client.getProduct({ id: productId })).product!;
    const order = await placeOrder(productId, 2);
    await expect.poll(() => stateOf(order.id)).toBe(CONFIRMED);
    const updated = await shop.products.client.updateProduct({ id: productId, expectedVersion: seen.version, updateMask: ["price"], name: "", description: "", price: eur(1200) });
    expect(updated.product).toMatchObject({ version: seen.version + 1, stock: 8, price: eur(1200) });
    expect(updated.product!.stockVersion).toBeGreaterThan(seen.stockVersion);
  });

  it("keeps taking orders while NATS is down and publishes every event exactly once when it returns", async () => {
    const productId = await newProduct(20);
    await shop.nats.stopForRestart();
    const placed = [];
    for (let i = 0; i < 10; i++) placed.push(await placeOrder(productId, 1, "c-outage"));
    expect(placed.every((o) => o.state === PENDING)).toBe(true);
    await shop.nats.restart();
    for (const o of placed) await expect.poll(() => stateOf(o.id), { timeout: 20_000 }).toBe(CONFIRMED);
    expect(await stockOf(productId)).toBe(10);
    // An order is CONFIRMED when its transaction commits; its OrderConfirmed reaches the stream a moment later, through the relay.
    const jsm = shop.orders.service.events.bus.jsm;
    const confirmedSubjects = new Set(placed.map((o) => `shop.orders.v1.order.${o.id}.confirmed`));
    await eventually("every OrderConfirmed is published", async () => (await readStream(jsm, "SHOP_ORDERS")).filter((e) => confirmedSubjects.has(e.subject)).length >= placed.length);
    const orderEvents = await readStream(jsm, "SHOP_ORDERS");
    for (const o of placed) {
      expect(orderEvents.filter((e) => e.subject === `shop.orders.v1.order.${o.id}.placed`)).toHaveLength(1);
      expect(orderEvents.filter((e) => e.subject === `shop.orders.v1.order.${o.id}.confirmed`)).toHaveLength(1);
    }
  });
});
