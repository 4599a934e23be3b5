import { join } from "node:path";
import { readFileSync } from "node:fs";
import { AckPolicy, connect, DeliverPolicy, headers as natsHeaders, nanos, nkeyAuthenticator, type JetStreamManager, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { natsAuthorization, streamSources } from "../gen/ts/concord_nats.js";
import { allStreams } from "../gen/ts/concord_streams.js";
import { descriptorSet } from "../gen/ts/descriptor_set.js";
import { OrderCancelled, OrderPlaced } from "../gen/ts/shop/orders/v1/order_events_pb.js";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { ProductUpdated, StockReserved } from "../gen/ts/shop/products/v1/product_events_pb.js";
import { StockReservedEvent } from "../gen/ts/shop/products/v1/product_events_jetstream.js";
import { createEventRuntime, deadLetterHeaders, eventMigrations } from "../platform/events/index.js";
import { uuidv7 } from "../platform/ids/index.js";
import { createLogger } from "../platform/log/index.js";
import { openDatabase } from "../platform/sql/index.js";
import { natsPermissionTable, type NatsAuthorization } from "../tools/contracts/nats-permissions.js";
import { openObserverReader } from "../tools/nats/observer-consumer.js";
import { repoRoot } from "../tools/repo-root.js";
import { useNatsServer } from "./support/nats-server.js";
import { eventually } from "./support/streams.js";
import { createTempDir } from "./support/temp-dir.js";
import { runConcord } from "./support/concord.js";
import { capturedLogger } from "./support/captured-logger.js";
import { address, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts } from "./support/shop.js";

const eur = (amountMinor: number) => ({ currencyCode: "EUR", amountMinor });
const { CONFIRMED, REJECTED } = { CONFIRMED: OrderState.ORDER_STATE_CONFIRMED, REJECTED: OrderState.ORDER_STATE_REJECTED };
const permissionViolation = (subject: string) => new RegExp(`Permissions Violation for Publish to "${subject.replace(/[.*+?^${}()|[\]\\$]/g, "\\$&")}"`, "i");

/** CloudEvents headers as a Concord service sends them, with the `ce-source` given. */
function eventHeaders(type: string, source: string) {
  const h = natsHeaders();
  const id = uuidv7();
  h.set("ce-specversion", "1.0");
  h.set("ce-id", id);
  h.set("ce-type", type);
  h.set("ce-source", source);
  h.set("ce-time", new Date().toISOString());
  h.set("content-type", "application/protobuf");
  return { headers: h, msgID: id };
}

/** The reason of the dead letter of the event on `subject`, read by `nc` from `dlqSubject` as it arrives (within 10 s). */
async function deadLetterReason(nc: NatsConnection, dlqSubject: string, subject: string): Promise<string | undefined> {
  const reader = await openObserverReader(nc, { stream: "CONCORD_DLQ", start: { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 1 }, filterSubject: dlqSubject });
  try {
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
      for (const m of await reader.fetch({ max_messages: 100, expires: 1_000 })) {
        if (m.headers?.get(deadLetterHeaders.subject) === subject) return m.headers.get(deadLetterHeaders.reason);
      }
    }
    return undefined;
  } finally {
    await reader.close();
  }
}

describe("NATS permissions derived from the contracts", () => {
  const dir = createTempDir("concord-nats-permissions-");
  afterAll(() => dir.remove());
  const nats = useNatsServer({ credentialsDir: join(dir.path, "credentials"), monitor: true });
  const ordersLog = capturedLogger("orders");
  let products: RunningProducts;
  let orders: RunningOrders;
  const connections: NatsConnection[] = [];

  /** A client with a user's seed, on the inbox prefix its permissions allow. */
  const connectAs = async (user: string): Promise<NatsConnection> => {
    const seed = new TextEncoder().encode(readFileSync(nats().seedFile(user), "utf8").trim());
    const inboxPrefix = user === "observer" || user === "operator" ? "_INBOX" : `_INBOX_${user}`;
    const nc = await connect({ servers: nats().url, authenticator: nkeyAuthenticator(seed), inboxPrefix, name: `attacker-as-${user}` });
    connections.push(nc);
    return nc;
  };

  beforeAll(async () => {
    products = await startTestProducts(dir.path, nats().url, { natsSeedFile: nats().seedFile("products") });
    orders = await startTestOrders(dir.path, products.service.address, nats().url, { natsSeedFile: nats().seedFile("orders"), logger: ordersLog.logger });
  });
  afterAll(async () => {
    await Promise.all(connections.map((nc) => nc.close()));
    await orders?.stop();
    await products?.stop();
  });

  const newProduct = async (stock: number) => (await products.client.createProduct({ name: "Teapot", description: "", price: eur(1000), initialStock: stock })).product!;
  const stockOf = async (id: string) => (await products.client.getProduct({ id })).product!.stock;
  const stateOf = async (id: string) => (await orders.client.getOrder({ id })).order!.state;
  const placeOrder = (productId: string, quantity: number) =>
    orders.client.createOrder({ customerId: "c-sec", lines: [{ productId, quantity }], shippingAddress: address }).then((r) => r.order!);
  /** Messages a stream holds on `subject`, read by the observer. */
  const countOn = async (jsm: JetStreamManager, stream: string, subject: string) => (await jsm.streams.info(stream, { subjects_filter: subject })).state.subjects?.[subject] ?? 0;

  it("refuses a connection without credentials, or one naming itself after a service", async () => {
    await expect(connect({ servers: nats().url, name: "orders", reconnect: false })).rejects.toThrow(/authorization violation/i);
  });

  it("runs the saga with each service on its own user: placed, reserved, confirmed, cancelled, released", async () => {
    const product = await newProduct(10);
    const order = await placeOrder(product.id, 3);
    await expect.poll(() => stateOf(order.id), { timeout: 10_000 }).toBe(CONFIRMED);
    expect(await stockOf(product.id)).toBe(7);
    await orders.client.cancelOrder({ id: order.id, reason: "" });
    await expect.poll(() => stockOf(product.id), { timeout: 10_000 }).toBe(10);
  });

  it("refuses a StockReserved from the order service's user; the rejected order stays rejected", async () => {
    const product = await newProduct(0);
    const order = await placeOrder(product.id, 1);
    await expect.poll(() => stateOf(order.id), { timeout: 10_000 }).toBe(REJECTED);
    const nc = await connectAs("orders");
    const subject = `shop.products.v1.reservation.${order.id}.reserved`;
    const forged = StockReserved.encode({ orderId: order.id, lines: [{ productId: product.id, quantity: 1 }], linesVersion: 1 }).finish();
    await expect(nc.jetstream().publish(subject, forged, eventHeaders("shop.products.v1.StockReserved", "products"))).rejects.toThrow(permissionViolation(subject));
    const observer = await connectAs("observer");
    expect(await countOn(await observer.jetstreamManager(), "SHOP_PRODUCTS", subject)).toBe(0);
    expect(await stateOf(order.id)).toBe(REJECTED);
    expect(await stockOf(product.id)).toBe(0);
  });

  it("lets no service's user purge or delete a stream, a message or another's consumer", async () => {
    const jsm = await (await connectAs("orders")).jetstreamManager();
    const refused = /permissions violation/i;
    await expect(jsm.streams.purge("CONCORD_DLQ")).rejects.toThrow(refused);
    await expect(jsm.streams.delete("CONCORD_DLQ")).rejects.toThrow(refused);
    await expect(jsm.streams.delete("SHOP_ORDERS")).rejects.toThrow(refused);
    await expect(jsm.streams.purge("SHOP_ORDERS")).rejects.toThrow(refused);
    await expect(jsm.streams.delete("SHOP_PRODUCTS")).rejects.toThrow(refused);
    await expect(jsm.streams.deleteMessage("SHOP_ORDERS", 1)).rejects.toThrow(refused);
    await expect(jsm.consumers.delete("SHOP_ORDERS", "products-order-placed")).rejects.toThrow(refused);
    await expect(jsm.streams.update("SHOP_PRODUCTS", { max_msgs: 1 })).rejects.toThrow(refused);
    await expect(jsm.streams.update("CONCORD_DLQ", { max_msgs: 1 })).rejects.toThrow(refused);
    const pjsm = await (await connectAs("products")).jetstreamManager();
    await expect(pjsm.streams.purge("CONCORD_DLQ")).rejects.toThrow(refused);
    await expect(pjsm.streams.delete("SHOP_PRODUCTS")).rejects.toThrow(refused);
    const observer = await (await connectAs("observer")).jetstreamManager();
    for (const stream of ["SHOP_ORDERS", "SHOP_PRODUCTS", "CONCORD_DLQ"]) expect((await observer.streams.info(stream)).config.name).toBe(stream);
    expect((await observer.consumers.info("SHOP_ORDERS", "products-order-placed")).name).toBe("products-order-placed");
  });

  it("lets no service's user create or change a stream, its own included: one that republished into the JetStream API or another's subjects would have the server publish with nobody's permissions", async () => {
    const refused = /permissions violation/i;
    for (const [user, own] of [
      ["orders", "SHOP_ORDERS"],
      ["products", "SHOP_PRODUCTS"],
    ] as const) {
      const jsm = await (await connectAs(user)).jetstreamManager();
      const { config } = await jsm.streams.info(own);
      await expect(jsm.streams.update(own, { ...config, republish: { src: ">", dest: "$JS.API.STREAM.PURGE.CONCORD_DLQ" } })).rejects.toThrow(refused);
      await expect(jsm.streams.update(own, { ...config, republish: { src: ">", dest: "shop.products.v1.product.{{wildcard(1)}}.updated" } })).rejects.toThrow(refused);
      await expect(jsm.streams.update(own, { description: "changed" })).rejects.toThrow(refused);
      await expect(jsm.streams.update("CONCORD_DLQ", { max_msgs: 1 })).rejects.toThrow(refused);
      await expect(jsm.streams.add({ name: "CONCORD_EXTRA", subjects: ["concord.extra.>"] })).rejects.toThrow(refused);
    }
    const observer = await (await connectAs("observer")).jetstreamManager();
    for (const stream of ["SHOP_ORDERS", "SHOP_PRODUCTS", "CONCORD_DLQ"]) {
      const { config } = await observer.streams.info(stream);
      expect(config.republish).toBeUndefined();
      expect(config.max_msgs).toBe(-1);
    }
    await expect(observer.streams.info("CONCORD_EXTRA")).rejects.toThrow(/stream not found/i);
  });

  it("lets the observer read every stream and publish nothing: no forged cancellation, no forged price", async () => {
    const product = await newProduct(100);
    const order = await placeOrder(product.id, 10);
    await expect.poll(() => stateOf(order.id), { timeout: 10_000 }).toBe(CONFIRMED);
    expect(await stockOf(product.id)).toBe(90);
    const observer = await connectAs("observer");
    const js = observer.jetstream();
    const cancelled = `shop.orders.v1.order.${order.id}.cancelled`;
    await expect(js.publish(cancelled, OrderCancelled.encode({ orderId: order.id, customerId: "c-sec", reason: "" }).finish(), eventHeaders("shop.orders.v1.OrderCancelled", "orders"))).rejects.toThrow(
      permissionViolation(cancelled),
    );
    const updated = `shop.products.v1.product.${product.id}.updated`;
    const forgedPrice = ProductUpdated.encode({ productId: product.id, product: { ...product, price: eur(1), version: 2 ** 52 }, changedFields: ["price"] }).finish();
    await expect(js.publish(updated, forgedPrice, eventHeaders("shop.products.v1.ProductUpdated", "products"))).rejects.toThrow(permissionViolation(updated));
    // The order service's user may not send product events either.
    const asOrders = (await connectAs("orders")).jetstream();
    await expect(asOrders.publish(updated, forgedPrice, eventHeaders("shop.products.v1.ProductUpdated", "products"))).rejects.toThrow(permissionViolation(updated));
    const jsm = await observer.jetstreamManager();
    await expect(jsm.streams.purge("CONCORD_DLQ")).rejects.toThrow(/permissions violation/i);
    await expect(js.publish("concord.dlq.SHOP_ORDERS.products-order-placed", new Uint8Array(1))).rejects.toThrow(/permissions violation/i);
    // A service's durable consumer is the service's: the observer's pull request is refused, nothing is taken from it.
    const before = (await jsm.consumers.info("SHOP_ORDERS", "products-order-placed")).delivered.stream_seq;
    const next = (await orders.client.createOrder({ customerId: "c-sec", lines: [{ productId: product.id, quantity: 1 }], shippingAddress: address })).order!;
    expect(next.total).toEqual(eur(1000)); // priced from the order service's catalogue, which no forged ProductUpdated reached
    expect(await (await js.consumers.get("SHOP_ORDERS", "products-order-placed")).next({ expires: 1_000 })).toBeNull();
    await expect.poll(async () => (await jsm.consumers.info("SHOP_ORDERS", "products-order-placed")).delivered.stream_seq, { timeout: 10_000 }).toBeGreaterThan(before);
    await expect.poll(() => stockOf(product.id), { timeout: 10_000 }).toBe(89);

    expect(await stateOf(order.id)).toBe(CONFIRMED);
    expect((await products.client.getProduct({ id: product.id })).product).toMatchObject({ price: eur(1000), version: 1 });
    // What it may do: read, through a consumer of its own.
    const reader = await openObserverReader(observer, { stream: "SHOP_ORDERS", start: { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 1 }, filterSubject: `shop.orders.v1.order.${order.id}.placed` });
    const [placed] = await reader.fetch({ max_messages: 1, expires: 5_000 });
    await reader.close();
    expect(placed?.headers?.get("ce-source")).toBe("orders");
  });

  it("lets the observer and the operator have no more than 16 consumers on a stream between them, under the observer's names; a reader told so when they are all in use", async () => {
    const names = natsAuthorization.observer.consumerNames;
    expect(names).toEqual(Array.from({ length: 16 }, (_, i) => `observer-${i + 1}`));
    const observer = await connectAs("observer");
    const jsm = await observer.jetstreamManager();
    const operator = await (await connectAs("operator")).jetstreamManager();
    const before = (await jsm.streams.info("SHOP_PRODUCTS")).state.consumer_count;
    // Durable, the kind that stays: each name once, whoever makes it.
    for (const name of names) await jsm.consumers.add("SHOP_PRODUCTS", { durable_name: name, ack_policy: AckPolicy.Explicit });
    try {
      for (const user of [jsm, operator]) {
        for (const name of ["observer-17", "observer-0", "billing-order-events", "watch_3nR4"]) {
          await expect(user.consumers.add("SHOP_PRODUCTS", { name, ack_policy: AckPolicy.None }), name).rejects.toThrow(permissionViolation(`$JS.API.CONSUMER.CREATE.SHOP_PRODUCTS.${name}`));
          await expect(user.consumers.add("SHOP_PRODUCTS", { durable_name: name, ack_policy: AckPolicy.Explicit, filter_subject: "shop.products.v1.>" }), name).rejects.toThrow(/permissions violation/i);
        }
      }
      await expect(operator.consumers.add("SHOP_PRODUCTS", { name: "observer-3", ack_policy: AckPolicy.None })).rejects.toThrow(/consumer already exists/);
      expect((await jsm.streams.info("SHOP_PRODUCTS")).state.consumer_count).toBe(before + 16);
      await expect(openObserverReader(observer, { stream: "SHOP_PRODUCTS", start: { deliver_policy: DeliverPolicy.New } })).rejects.toThrow(
        "every consumer name this user may read stream SHOP_PRODUCTS with is in use (observer-1 to observer-16); wait a minute for readers that died to give theirs back, or delete one that stays (nats consumer rm SHOP_PRODUCTS <name>)",
      );
    } finally {
      for (const name of names) await jsm.consumers.delete("SHOP_PRODUCTS", name);
    }
    const reader = await openObserverReader(observer, { stream: "SHOP_PRODUCTS", start: { deliver_policy: DeliverPolicy.New } });
    expect(reader.name).toBe("observer-1");
    await reader.close();
    expect((await jsm.streams.info("SHOP_PRODUCTS")).state.consumer_count).toBe(before);
  });

  it("lets neither the observer nor the operator change a service's durable through the create subject that names no consumer", async () => {
    for (const user of ["observer", "operator"]) {
      const nc = await connectAs(user);
      const jsm = await nc.jetstreamManager();
      const before = await jsm.consumers.info("SHOP_ORDERS", "products-order-placed");
      // The name only in the body: the server would take it as an update of the service's durable.
      const config = { name: "products-order-placed", ack_policy: "explicit", filter_subject: "shop.orders.v1.order.nothing.placed" };
      await expect(nc.request("$JS.API.CONSUMER.CREATE.SHOP_ORDERS", new TextEncoder().encode(JSON.stringify({ stream_name: "SHOP_ORDERS", config, action: "update" })))).rejects.toThrow(
        permissionViolation("$JS.API.CONSUMER.CREATE.SHOP_ORDERS"),
      );
      const after = await jsm.consumers.info("SHOP_ORDERS", "products-order-placed");
      expect(after.config.filter_subject).toBe(before.config.filter_subject);
      expect(after.config.filter_subject).toBe("shop.orders.v1.order.*.placed");
    }
  });

  it("lets neither the observer nor the operator change a service's durable through a create subject naming one of the observer's names: the server holds the body to the subject's name", async () => {
    const body = (config: Record<string, unknown>) => new TextEncoder().encode(JSON.stringify({ stream_name: "SHOP_ORDERS", config: { ack_policy: "explicit", filter_subject: "shop.orders.v1.order.nothing.placed", ...config }, action: "update" }));
    const answerOf = async (nc: NatsConnection, subject: string, data: Uint8Array) => JSON.parse(new TextDecoder().decode((await nc.request(subject, data)).data)) as { error?: { err_code: number } };
    for (const user of ["observer", "operator"]) {
      const nc = await connectAs(user);
      const jsm = await nc.jetstreamManager();
      const before = await jsm.consumers.info("SHOP_ORDERS", "products-order-placed");
      // The subject names observer-1, which the permissions allow; the body names the service's durable.
      for (const config of [{ name: "products-order-placed" }, { durable_name: "products-order-placed" }, { name: "products-order-placed", durable_name: "products-order-placed" }]) {
        expect((await answerOf(nc, "$JS.API.CONSUMER.CREATE.SHOP_ORDERS.observer-1", body(config))).error, JSON.stringify(config)).toBeDefined();
      }
      expect((await answerOf(nc, "$JS.API.CONSUMER.CREATE.SHOP_ORDERS.observer-1.shop.orders.v1.>", body({ name: "products-order-placed" }))).error).toBeDefined();
      // A subject naming one stream, a body naming the other.
      expect((await answerOf(nc, "$JS.API.CONSUMER.CREATE.SHOP_PRODUCTS.observer-1", body({ name: "observer-1" }))).error).toBeDefined();
      const after = await jsm.consumers.info("SHOP_ORDERS", "products-order-placed");
      expect(after.config).toEqual(before.config);
      expect(after.config.filter_subject).toBe("shop.orders.v1.order.*.placed");
      await expect(jsm.consumers.info("SHOP_ORDERS", "observer-1")).rejects.toThrow(/consumer not found/i);
    }
  });

  it("holds a consumer of the observer's to 1,000 messages unacknowledged, as the services' durables: one asking for more is refused, and one pulling everything without acking gets no more", { timeout: 60_000 }, async () => {
    const publisher = (await connectAs("orders")).jetstream();
    // Confirmations, which no service consumes.
    const orderIds = Array.from({ length: 1_500 }, () => uuidv7());
    await Promise.all(orderIds.map((id) => publisher.publish(`shop.orders.v1.order.${id}.confirmed`, new Uint8Array(1), eventHeaders("shop.orders.v1.OrderConfirmed", "orders"))));
    const observer = await connectAs("observer");
    const jsm = await observer.jetstreamManager();
    // Unbounded, four such consumers pulling 200,000 events took a server from 93 to 231 MiB.
    await expect(jsm.consumers.add("SHOP_ORDERS", { durable_name: "observer-1", ack_policy: AckPolicy.Explicit, max_ack_pending: 1_000_000_000 })).rejects.toThrow(/max ack pending exceeds system limit of 1000/);
    const made = await jsm.consumers.add("SHOP_ORDERS", { durable_name: "observer-1", ack_policy: AckPolicy.Explicit });
    try {
      expect(made.config.max_ack_pending).toBe(1_000);
      const consumer = await observer.jetstream().consumers.get("SHOP_ORDERS", "observer-1");
      let got = 0;
      for await (const _ of await consumer.fetch({ max_messages: 5_000, expires: 2_000 })) got++;
      expect(got).toBe(1_000);
      expect((await jsm.consumers.info("SHOP_ORDERS", "observer-1")).num_ack_pending).toBe(1_000);
      expect((await jsm.consumers.info("SHOP_ORDERS", "products-order-placed")).config.max_ack_pending).toBe(1_000);
    } finally {
      await jsm.consumers.delete("SHOP_ORDERS", "observer-1");
    }
  });

  it("lets the operator put a dead letter back on its subject and delete dead letters, as `concord dlq replay` does, and nothing of the services'", async () => {
    const operator = await connectAs("operator");
    const js = operator.jetstream();
    const jsm = await operator.jetstreamManager();
    // A dead letter, as the product service writes one for its consumer.
    const dead = await (await connectAs("products")).jetstream().publish("concord.dlq.SHOP_ORDERS.products-order-placed", new Uint8Array(1));
    expect(dead.stream).toBe("CONCORD_DLQ");
    expect(await jsm.streams.deleteMessage("CONCORD_DLQ", dead.seq)).toBe(true);
    await jsm.streams.purge("CONCORD_DLQ");
    const product = await newProduct(5);
    const orderId = uuidv7();
    const replayed = `shop.orders.v1.order.${orderId}.cancelled`;
    const ack = await js.publish(replayed, OrderCancelled.encode({ orderId, customerId: "c-sec", reason: "" }).finish(), eventHeaders("shop.orders.v1.OrderCancelled", "orders"));
    expect(ack.stream).toBe("SHOP_ORDERS");
    const refused = /permissions violation/i;
    await expect(jsm.streams.purge("SHOP_ORDERS")).rejects.toThrow(refused);
    await expect(jsm.streams.delete("CONCORD_DLQ")).rejects.toThrow(refused);
    await expect(jsm.consumers.delete("SHOP_ORDERS", "products-order-placed")).rejects.toThrow(refused);
    await expect(jsm.consumers.delete("SHOP_PRODUCTS", "orders-stock-reserved")).rejects.toThrow(refused);
    // A durable no contract declares (`concord consumer stale --delete`) it may delete: the server looks for it.
    await expect(jsm.consumers.delete("SHOP_ORDERS", "products-order-placed-v0")).rejects.toThrow(/consumer not found/i);
    await expect(jsm.consumers.delete("CONCORD_DLQ", "anything")).rejects.toThrow(refused);
    expect(await stockOf(product.id)).toBe(5);
  });

  it("dead-letters an OrderPlaced with a negative quantity even from the order service's own user; stock unchanged", async () => {
    const product = await newProduct(100);
    const orderId = uuidv7();
    const subject = `shop.orders.v1.order.${orderId}.placed`;
    const evil = OrderPlaced.encode({ orderId, customerId: "c-evil", lines: [{ productId: product.id, productName: "Teapot", quantity: -500, unitPrice: eur(1000), lineTotal: eur(0) }], total: eur(0), linesVersion: 1 }).finish();
    await (await connectAs("orders")).jetstream().publish(subject, evil, eventHeaders("shop.orders.v1.OrderPlaced", "orders"));
    const observer = await connectAs("observer");
    const reason = await deadLetterReason(observer, "concord.dlq.SHOP_ORDERS.products-order-placed", subject);
    expect(reason).toMatch(/lines\[0\]\.quantity: must be greater than 0/);
    expect(await stockOf(product.id)).toBe(100);
  });

  it("takes an OrderPlaced from a newer order service, whose contract has fields this one lacks: they are skipped, the stock reserved (StockReserved), nothing dead-lettered", async () => {
    const product = await newProduct(100);
    const orderId = uuidv7();
    const placed = OrderPlaced.encode({ orderId, customerId: "c-newer", lines: [{ productId: product.id, productName: "Teapot", quantity: 2, unitPrice: eur(1000), lineTotal: eur(2000) }], total: eur(2000), linesVersion: 1 }).finish();
    // string note = 6 ("leave at the door") and a varint field 99, as a later contract might add them.
    const note = new TextEncoder().encode("leave at the door");
    const newer = Uint8Array.from([...placed, 0x32, note.length, ...note, 0x98, 0x06, 0x01]);
    const observer = await (await connectAs("observer")).jetstreamManager();
    const dlqBefore = await countOn(observer, "CONCORD_DLQ", "concord.dlq.SHOP_ORDERS.products-order-placed");
    await (await connectAs("orders")).jetstream().publish(`shop.orders.v1.order.${orderId}.placed`, newer, eventHeaders("shop.orders.v1.OrderPlaced", "orders"));
    // The order service does not know the order and answers OrderUnknown, which releases the stock again: the StockReserved tells.
    await eventually("StockReserved is published", async () => (await countOn(observer, "SHOP_PRODUCTS", `shop.products.v1.reservation.${orderId}.reserved`)) === 1);
    expect(await countOn(observer, "CONCORD_DLQ", "concord.dlq.SHOP_ORDERS.products-order-placed")).toBe(dlqBefore);
  });

  it("drops what a push consumer of the observer's delivers into a service's pull inbox (named by /connz): nothing handled, dead-lettered or acked, one warning", async () => {
    await newProduct(1);
    const jsm = await (await connectAs("observer")).jetstreamManager();
    const deadLetters = (await jsm.streams.info("CONCORD_DLQ")).state.messages;
    const name = "observer-12";
    let target: string | undefined;
    const inboxesOfOrders = async () => {
      const connz = (await (await fetch(`http://127.0.0.1:${nats().monitorPort}/connz?subs=1`)).json()) as { connections: Array<{ name?: string; subscriptions_list?: string[] }> };
      return connz.connections.filter((c) => c.name?.startsWith("orders")).flatMap((c) => c.subscriptions_list ?? []).filter((sub) => sub.startsWith("_INBOX_orders.") && !sub.endsWith(".*"));
    };
    // A pull's inbox lives as long as its request (5 s at most): a consumer aimed at one that has gone is aimed again.
    await eventually("a consumer of the observer's delivered SHOP_PRODUCTS's events into a pull inbox of the order service", async () => {
      if (target !== undefined && (await jsm.consumers.info("SHOP_PRODUCTS", name)).delivered.consumer_seq > 0) return true;
      const inboxes = await inboxesOfOrders();
      if (target !== undefined && inboxes.includes(target)) return false;
      if (target !== undefined) await jsm.consumers.delete("SHOP_PRODUCTS", name);
      target = inboxes[0];
      if (target !== undefined) await jsm.consumers.add("SHOP_PRODUCTS", { name, deliver_subject: target, ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.All });
      return false;
    });
    await jsm.consumers.delete("SHOP_PRODUCTS", name);
    await eventually("the order service warns of the messages it dropped", () => ordersLog.lines.some((l) => String(l.msg).startsWith("dropped messages in the pull inbox")));
    const warning = ordersLog.lines.find((l) => String(l.msg).startsWith("dropped messages in the pull inbox"))!;
    expect(warning).toMatchObject({ level: "warn", stream: "SHOP_PRODUCTS", deliveredBy: `SHOP_PRODUCTS > ${name}` });
    // Before, the order service handled them: those of another type dead-lettered, each acked to the observer's consumer, which its user may not.
    expect(ordersLog.lines.filter((l) => JSON.stringify(l).includes(name) && l !== warning)).toEqual([]);
    expect((await jsm.streams.info("CONCORD_DLQ")).state.messages).toBe(deadLetters);
  });

  it("dead-letters an event whose ce-source is not its stream's owner, with the reason", async () => {
    const product = await newProduct(5);
    const orderId = uuidv7();
    const subject = `shop.products.v1.reservation.${orderId}.reserved`;
    const payload = StockReserved.encode({ orderId, lines: [{ productId: product.id, quantity: 1 }], linesVersion: 1 }).finish();
    await (await connectAs("products")).jetstream().publish(subject, payload, eventHeaders("shop.products.v1.StockReserved", "orders"));
    const reason = await deadLetterReason(await connectAs("observer"), "concord.dlq.SHOP_PRODUCTS.orders-stock-reserved", subject);
    expect(reason).toBe('stream SHOP_PRODUCTS holds events of "products" only, but the message\'s ce-source is "orders"');
  });

  it("cannot keep a user, the observer included, from having the server write into a stream through a reply subject, which nats-server checks against no permission: the answer is stored, and its consumer dead-letters it", async () => {
    const observer = await connectAs("observer");
    const jsm = await observer.jetstreamManager();
    const cancelled = `shop.orders.v1.order.${uuidv7()}.cancelled`;
    // Its publish on the subject is refused (above); a request it may make, answered there, is not.
    observer.publish("$JS.API.STREAM.INFO.SHOP_ORDERS", new Uint8Array(0), { reply: cancelled });
    await observer.flush();
    const storedType = async () => (await jsm.streams.getMessage("SHOP_ORDERS", { last_by_subj: cancelled }).catch(() => undefined))?.json<{ type: string }>().type;
    await expect.poll(storedType, { timeout: 10_000 }).toBe("io.nats.jetstream.api.v1.stream_info_response");
    const reason = await deadLetterReason(observer, "concord.dlq.SHOP_ORDERS.products-order-cancelled", cancelled);
    expect(reason).toBe('stream SHOP_ORDERS holds events of "orders" only, but the message\'s ce-source is missing');
  });

  it("dead-letters an event the protobuf wire format does not allow, from its own service's user: a StockReserved with field number 0 and more after its fields", async () => {
    const product = await newProduct(5);
    const orderId = uuidv7();
    const subject = `shop.products.v1.reservation.${orderId}.reserved`;
    const valid = StockReserved.encode({ orderId, lines: [{ productId: product.id, quantity: 1 }], linesVersion: 1 }).finish();
    const payload = Buffer.concat([valid, Buffer.from([0x00, 0x18, 0x02])]);
    await (await connectAs("products")).jetstream().publish(subject, payload, eventHeaders("shop.products.v1.StockReserved", "products"));
    const reason = await deadLetterReason(await connectAs("observer"), "concord.dlq.SHOP_PRODUCTS.orders-stock-reserved", subject);
    expect(reason).toBe("the shop.products.v1.StockReserved payload cannot be decoded: a tag names field number 0, which no field has");
  });

  it("parks an event its service may not publish, logging an error that names the subject", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ service: "orders", level: "info", destination: { write: (line: string) => void lines.push(JSON.parse(line)) } });
    const db = await openDatabase({ path: join(dir.path, "misrouted.db"), migrations: eventMigrations });
    const runtime = createEventRuntime({ db, natsUrl: nats().url, service: "orders", streams: allStreams, streamSources, descriptorSet, logger, nkeySeedFile: nats().seedFile("orders") });
    try {
      await runtime.start([]);
      const orderId = uuidv7();
      await db.transaction(async (tx) => {
        runtime.outbox.add(tx, StockReservedEvent, { orderId, lines: [{ productId: uuidv7(), quantity: 1 }], linesVersion: 1 });
      });
      await runtime.relay.flush();
      expect(runtime.relay.stats().parked).toBe(1);
      const subject = `shop.products.v1.reservation.${orderId}.reserved`;
      expect(lines).toContainEqual(expect.objectContaining({ level: "error", subject, reason: expect.stringMatching(/NATS refused the publish to shop\.products\.v1\.reservation\..*: it is not in the permissions/) }));
    } finally {
      await runtime.stop();
      await db.close();
    }
  });

  it("gives each service exactly its own events, dead letters and durable consumers", () => {
    const orders = natsAuthorization.services.find((s) => s.name === "orders")!;
    expect(orders.events).toEqual(["shop.orders.v1.order.*.cancelled", "shop.orders.v1.order.*.confirmed", "shop.orders.v1.order.*.placed", "shop.orders.v1.order.*.rejected", "shop.orders.v1.order.*.unknown", "shop.orders.v1.order.*.updated"]);
    const allow: readonly string[] = orders.permissions.publish.allow;
    expect(allow.filter((s) => s.startsWith("shop."))).toEqual(orders.events);
    expect(allow).toContain("$JS.API.CONSUMER.MSG.NEXT.SHOP_PRODUCTS.orders-stock-reserved");
    expect(allow).not.toContain("$JS.API.CONSUMER.MSG.NEXT.SHOP_ORDERS.products-order-placed");
    expect(allow).not.toContain("$JS.API.STREAM.UPDATE.SHOP_PRODUCTS");
    expect(allow.some((s) => /PURGE|DELETE/.test(s))).toBe(false);
    expect(allow.some((s) => /^\$JS\.API\.STREAM\.(CREATE|UPDATE)\./.test(s))).toBe(false);
    expect(natsAuthorization.operator.permissions.publish.allow).toEqual(expect.arrayContaining(["$JS.API.STREAM.CREATE.SHOP_ORDERS", "$JS.API.STREAM.UPDATE.CONCORD_DLQ"]));
    expect(streamSources).toEqual({ SHOP_ORDERS: "orders", SHOP_PRODUCTS: "products" });
  });

  it("is the table README.md's Security section shows", () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    expect(readme).toContain(`${natsPermissionTable(natsAuthorization as unknown as NatsAuthorization)}\n`);
  });
});

describe("consumers the observer makes before the services start", () => {
  const dir = createTempDir("concord-nats-observer-consumers-");
  afterAll(() => dir.remove());
  const nats = useNatsServer({ credentialsDir: join(dir.path, "credentials") });

  it("leave room for the services' durables: the observer is refused its 17th consumer on a stream, far below the server's 1,000, and the product service starts", { timeout: 120_000 }, async () => {
    const seed = new TextEncoder().encode(readFileSync(nats().seedFile("observer"), "utf8").trim());
    const nc = await connect({ servers: nats().url, authenticator: nkeyAuthenticator(seed), inboxPrefix: "_INBOX" });
    try {
      const jsm = await nc.jetstreamManager();
      // Every name it might try, the observer's own first: as many durable consumers as it can make.
      const tried = [...natsAuthorization.observer.consumerNames, ...Array.from({ length: 1_000 }, (_, i) => `hog-${i}`)];
      let made = 0;
      for (const name of tried) {
        try {
          await jsm.consumers.add("SHOP_ORDERS", { durable_name: name, ack_policy: AckPolicy.Explicit });
          made++;
        } catch (err) {
          expect((err as Error).message, name).toMatch(/permissions violation/i);
        }
      }
      expect(made).toBe(16);
      expect((await jsm.streams.info("SHOP_ORDERS")).state.consumer_count).toBe(16);
      // The product service makes its durables on SHOP_ORDERS at start.
      const products = await startTestProducts(dir.path, nats().url, { natsSeedFile: nats().seedFile("products") });
      await products.stop();
      expect((await jsm.streams.info("SHOP_ORDERS")).state.consumer_count).toBe(16 + natsAuthorization.services.find((s) => s.name === "products")!.consumers.length);
    } finally {
      await nc.close();
    }
  });
});

describe("streams the operator provisions", () => {
  const dir = createTempDir("concord-nats-provision-");
  afterAll(() => dir.remove());
  const nats = useNatsServer({ credentialsDir: join(dir.path, "credentials"), provision: false });

  it("stops a service whose stream is missing, saying the operator provisions it; `concord streams provision` does, and the service starts", { timeout: 120_000 }, async () => {
    await expect(startTestProducts(dir.path, nats().url, { natsSeedFile: nats().seedFile("products") })).rejects.toThrow(
      /stream \w+ does not exist, and this NATS user may not create it: the operator provisions streams \(npx concord streams provision/,
    );
    const run = await runConcord({ NATS_URL: nats().url, NATS_NKEY_SEED: nats().seedFile("operator") }, ["streams", "provision"]);
    expect(run.stderr).toContain("concord streams provision: 3 streams as their specs declare");
    expect(run.status).toBe(0);
    const provisioned = run.stdout.trim().split("\n").map((line) => JSON.parse(line) as { stream: string; replicas: number });
    expect(provisioned.map((p) => p.stream)).toEqual(["SHOP_ORDERS", "SHOP_PRODUCTS", "CONCORD_DLQ"]);
    // Run again, it finds them as they should be and changes nothing.
    expect((await runConcord({ NATS_URL: nats().url, NATS_NKEY_SEED: nats().seedFile("operator") }, ["streams", "provision"])).status).toBe(0);
    const products = await startTestProducts(dir.path, nats().url, { natsSeedFile: nats().seedFile("products") });
    await products.stop();
  });

  it("leaves a stream whose settings conflict with its spec as it is, and tells the operator what to do; widens one that keeps less, leaves one that keeps more", { timeout: 60_000 }, async () => {
    const provision = () => runConcord({ NATS_URL: nats().url, NATS_NKEY_SEED: nats().seedFile("operator") }, ["streams", "provision"]);
    expect((await provision()).status).toBe(0);
    const nc = await connect({ servers: nats().url, authenticator: nkeyAuthenticator(new TextEncoder().encode(readFileSync(nats().seedFile("operator"), "utf8").trim())) });
    try {
      const jsm = await nc.jetstreamManager();
      const spec = allStreams.find((s) => s.name === "SHOP_ORDERS")!;
      await jsm.streams.update("SHOP_ORDERS", { subjects: ["by-hand.>"] });
      const run = await provision();
      // It exited 1, as for a failure: the stream is the operator's to migrate, a setting as a limit to raise is.
      expect(run.status).toBe(2);
      expect(run.stderr).toBe(
        `concord streams provision: stream SHOP_ORDERS exists with settings that conflict with its spec (subjects: existing ["by-hand.>"], wanted ${JSON.stringify([...spec.subjects].sort())}): ` +
          "left as it is, and SHOP_PRODUCTS, CONCORD_DLQ not provisioned; change the contract back to what the stream has, or migrate the stream deliberately " +
          "(for example with the nats CLI), then run `npx concord streams provision` (or `npm start`) again\n",
      );
      expect((await jsm.streams.info("SHOP_ORDERS")).config.subjects).toEqual(["by-hand.>"]);
      // A stream made by hand to keep less than its spec is widened to it; one that keeps more is left so.
      await jsm.streams.update("SHOP_ORDERS", { subjects: [...spec.subjects], max_age: nanos(spec.maxAgeMs / 2) });
      const widening = await provision();
      expect(widening.status).toBe(0);
      const told = `max_age (ms): existing ${spec.maxAgeMs / 2}, wanted ${spec.maxAgeMs}`;
      expect(widening.stderr).toContain(`concord streams provision: 3 streams as their specs declare (SHOP_ORDERS widened to its contract: ${told})`);
      expect(widening.stdout.split("\n").filter(Boolean).map((line) => JSON.parse(line) as { stream: string; widened: string[] }).map((st) => [st.stream, st.widened])).toEqual([
        ["SHOP_ORDERS", [told]],
        ["SHOP_PRODUCTS", []],
        ["CONCORD_DLQ", []],
      ]);
      expect((await jsm.streams.info("SHOP_ORDERS")).config.max_age).toBe(nanos(spec.maxAgeMs));
      await jsm.streams.update("SHOP_ORDERS", { max_age: nanos(spec.maxAgeMs * 2) });
      const left = await provision();
      expect(left.status).toBe(0);
      const more = `max_age (ms): existing ${spec.maxAgeMs * 2}, wanted ${spec.maxAgeMs}`;
      expect(left.stderr).toContain(`concord streams provision: 3 streams as their specs declare (SHOP_ORDERS keeps more than its contract, left so: ${more})\n`);
      expect(left.stdout.split("\n").filter(Boolean).map((line) => (JSON.parse(line) as { keepsMore: string[] }).keepsMore)).toEqual([[more], [], []]);
      expect((await jsm.streams.info("SHOP_ORDERS")).config.max_age).toBe(nanos(spec.maxAgeMs * 2));
      await jsm.streams.update("SHOP_ORDERS", { max_age: nanos(spec.maxAgeMs) });
    } finally {
      await nc.close();
    }
  });
});
