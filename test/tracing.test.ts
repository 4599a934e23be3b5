import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import Database from "better-sqlite3";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderServiceService, OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { createClient, type PromiseClient, waitForServing } from "../platform/grpc/index.js";
import { formatTraces, type ReceivedSpan, startTraceReceiver, type TraceReceiver } from "../tools/traces/otlp-receiver.js";
import { freePort, useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { address, type Shop, startShop } from "./support/shop.js";
import { eventually, readStream } from "./support/streams.js";
import { tempDirForSuite } from "./support/temp-dir.js";

const dir = tempDirForSuite("concord-tracing-");
const hex = (bytes: number) => randomBytes(bytes).toString("hex");
const spanFile = join(dir, "traces.jsonl");

/**
 * Both services as production runs them, exporting spans over OTLP/HTTP to a
 * receiver in the test, which plays the caller: it sends its own traceparent
 * on CreateOrder and follows the order's saga to OrderConfirmed.
 */
/** The stored events of one order, OrderPlaced, StockReserved and OrderConfirmed, by type, once `atLeast` of them are. */
async function eventsOf(nc: NatsConnection, orderId: string, atLeast = 3) {
  const jsm = await nc.jetstreamManager();
  const read = async () => [...(await readStream(jsm, "SHOP_ORDERS")), ...(await readStream(jsm, "SHOP_PRODUCTS"))].filter((e) => e.subject.includes(orderId));
  // The order reads CONFIRMED once its transaction commits; its relay publishes OrderConfirmed a moment later.
  await eventually(`the order's ${atLeast} events are stored`, async () => (await read()).length >= atLeast);
  return new Map((await read()).map((e) => [e.headers.get("ce-type"), e.headers]));
}

describe("tracing of an order through both services", () => {
  let receiver: TraceReceiver;
  const nats = useNatsServer({ storeDir: join(dir, "nats") });
  const nc = useNatsConnection(nats);
  let products: ServiceProcess;
  let orders: ServiceProcess;
  let catalog: PromiseClient<typeof ProductServiceService>;
  let client: PromiseClient<typeof OrderServiceService>;

  beforeAll(async () => {
    receiver = await startTraceReceiver({ file: spanFile });
    const productsAddress = `127.0.0.1:${await freePort()}`;
    const ordersAddress = `127.0.0.1:${await freePort()}`;
    const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: "100", LOG_LEVEL: "warn" };
    products = startServiceProcess("products", { ...otel, PRODUCTS_LISTEN: productsAddress, PRODUCTS_DATABASE_URL: join(dir, "products.db"), NATS_URL: nats().url });
    orders = startServiceProcess("orders", { ...otel, ORDERS_LISTEN: ordersAddress, ORDERS_DATABASE_URL: join(dir, "orders.db"), PRODUCTS_ADDRESS: productsAddress, NATS_URL: nats().url });
    await Promise.all([waitForServing(productsAddress, 30_000), waitForServing(ordersAddress, 30_000)]);
    catalog = createClient(ProductServiceService, { address: productsAddress });
    client = createClient(OrderServiceService, { address: ordersAddress });
  }, 60_000);
  afterAll(async () => {
    catalog?.close();
    client?.close();
    await orders?.stop();
    await products?.stop();
    await receiver?.close();
  });

  /** Places an order with the caller's `traceparent` and waits until it is CONFIRMED. */
  const placeConfirmedOrder = async (traceparent: string): Promise<string> => {
    const { product } = await catalog.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 2500 }, initialStock: 10 });
    const { order } = await client.createOrder({ customerId: "c-trace", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address }, { headers: { traceparent } });
    await expect.poll(async () => (await client.getOrder({ id: order!.id })).order!.state, { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    return order!.id;
  };
  const spansOf = (traceId: string) => receiver.spans().filter((s) => s.traceId === traceId);
  const one = (spans: ReceivedSpan[], name: string, kind: string): ReceivedSpan => {
    const found = spans.filter((s) => s.name === name && s.kind === kind);
    expect(found, `${kind} span ${name} in ${spans.map((s) => s.name).join(", ")}`).toHaveLength(1);
    return found[0];
  };

  it("makes one trace from the caller's span to OrderConfirmed, each span child of the one before, and each event carries its producer span", async () => {
    const traceId = hex(16);
    const callerSpan = hex(8);
    const orderId = await placeConfirmedOrder(`00-${traceId}-${callerSpan}-01`);
    await expect.poll(() => spansOf(traceId).some((s) => s.name === "send shop.orders.v1.OrderConfirmed"), { timeout: 15_000 }).toBe(true);
    const spans = spansOf(traceId);

    const server = one(spans, "shop.orders.v1.OrderService/CreateOrder", "SERVER");
    expect(server).toMatchObject({ service: "orders", parentSpanId: callerSpan, attributes: { "rpc.system": "grpc", "rpc.method": "CreateOrder", "rpc.grpc.status_code": 0, "network.peer.address": "127.0.0.1", "network.peer.port": expect.any(Number) } });
    const placed = one(spans, "create shop.orders.v1.OrderPlaced", "PRODUCER");
    expect(placed).toMatchObject({ service: "orders", parentSpanId: server.spanId, attributes: { "messaging.destination.name": `shop.orders.v1.order.${orderId}.placed` } });
    const placedSent = one(spans, "send shop.orders.v1.OrderPlaced", "CLIENT");
    expect(placedSent).toMatchObject({ service: "orders", parentSpanId: placed.spanId });
    const reserving = one(spans, "process shop.orders.v1.OrderPlaced", "CONSUMER");
    expect(reserving).toMatchObject({ service: "products", parentSpanId: placed.spanId, attributes: { "concord.settlement": "ack" } });
    // Linked to the producer span as well, as the messaging conventions ask and Zipkin shows (the `link` tag).
    expect(reserving.links).toEqual([{ traceId, spanId: placed.spanId }]);
    const reserved = one(spans, "create shop.products.v1.StockReserved", "PRODUCER");
    expect(reserved).toMatchObject({ service: "products", parentSpanId: reserving.spanId });
    const confirming = one(spans, "process shop.products.v1.StockReserved", "CONSUMER");
    expect(confirming).toMatchObject({ service: "orders", parentSpanId: reserved.spanId });
    expect(confirming.links).toEqual([{ traceId, spanId: reserved.spanId }]);
    const confirmed = one(spans, "create shop.orders.v1.OrderConfirmed", "PRODUCER");
    expect(confirmed).toMatchObject({ service: "orders", parentSpanId: confirming.spanId });
    // A span for the event's wait in the outbox and its publish: from the outbox write to the PubAck.
    const ms = (ns: string) => BigInt(ns) / 1_000_000n;
    // The row's time is Date.now(), the span's the monotonic clock, which drift apart over a process's life: 50 ms of room.
    expect(ms(placedSent.startNs)).toBeGreaterThanOrEqual(ms(placed.startNs) - 50n);
    expect(ms(placedSent.startNs)).toBeLessThanOrEqual(ms(placed.endNs) + 50n);
    expect(BigInt(placedSent.endNs)).toBeGreaterThan(BigInt(placed.endNs));
    // Every span of the saga hangs under the caller's span.
    const ids = new Set(spans.map((s) => s.spanId));
    expect(spans.filter((s) => !ids.has(s.parentSpanId)).map((s) => s.name)).toEqual(["shop.orders.v1.OrderService/CreateOrder"]);

    const events = await eventsOf(nc(), orderId);
    const carried = (type: string) => events.get(type)!.get("traceparent");
    expect(carried("shop.orders.v1.OrderPlaced")).toBe(`00-${traceId}-${placed.spanId}-01`);
    expect(carried("shop.products.v1.StockReserved")).toBe(`00-${traceId}-${reserved.spanId}-01`);
    expect(carried("shop.orders.v1.OrderConfirmed")).toBe(`00-${traceId}-${confirmed.spanId}-01`);
    for (const headers of events.values()) expect(headers.get("ce-traceparent")).toBe(headers.get("traceparent"));

    const tree = formatTraces(receiver.spans(), orderId);
    expect(tree).toContain(`trace ${traceId}`);
    // The README's way to look at it: the receiver's file, read by `npx concord traces show`.
    const shown = spawnSync(process.execPath, ["tools/concord.mjs", "traces", "show", orderId, "--file", spanFile], { encoding: "utf8", timeout: 30_000 });
    expect(shown.status).toBe(0);
    expect(shown.stdout).toContain(`trace ${traceId}`);
    expect(shown.stdout).toMatch(/\n {6}process shop\.orders\.v1\.OrderPlaced {2}\[products CONSUMER\]/);
    // CreateOrder asks the product service for a product its catalogue does not have yet (ProductCreated not arrived,
    // as on a loaded machine): that lookup, when there is one, comes first under the server span.
    expect(tree).toMatch(
      /\n {2}shop\.orders\.v1\.OrderService\/CreateOrder {2}\[orders SERVER\][^\n]*\n(?: {4}shop\.products\.v1\.ProductService\/BatchGetProducts {2}\[orders CLIENT\][^\n]*\n {6}shop\.products\.v1\.ProductService\/BatchGetProducts {2}\[products SERVER\][^\n]*\n)? {4}create shop\.orders\.v1\.OrderPlaced {2}\[orders PRODUCER\]/,
    );
    // The caller's address, as README Tracing shows it.
    expect(shown.stdout).toMatch(new RegExp(`\\n {2}shop\\.orders\\.v1\\.OrderService/CreateOrder {2}\\[orders SERVER\\] {2}\\+0\\.0 ms {2}[0-9.]+ ms {2}from 127\\.0\\.0\\.1:${server.attributes["network.peer.port"]}\\n`));
  });

  it("marks the span of each failed attempt of a handler as an error with the handler's own error, not a lock conflict", { timeout: 60_000 }, async () => {
    // The product service's reservations refused: its handler fails until the trigger goes.
    const db = new Database(join(dir, "products.db"));
    db.pragma("busy_timeout = 5000");
    db.exec("CREATE TRIGGER refuse_reservations BEFORE INSERT ON reservations BEGIN SELECT RAISE(ABORT, 'reservations refused'); END");
    const traceId = hex(16);
    const traceparent = `00-${traceId}-${hex(8)}-01`;
    const { product } = await catalog.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 2500 }, initialStock: 10 });
    let orderId: string;
    try {
      const { order } = await client.createOrder({ customerId: "c-trace", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address }, { headers: { traceparent } });
      orderId = order!.id;
      // The first attempt and its retry a second later.
      const attempts = () => spansOf(traceId).filter((s) => s.name === "process shop.orders.v1.OrderPlaced" && s.kind === "CONSUMER");
      await eventually("two attempts are traced", async () => attempts().filter((s) => s.attributes["concord.settlement"] === "retry").length >= 2);
      const failed = attempts().filter((s) => s.status.code === 2);
      expect(failed.length).toBeGreaterThanOrEqual(2);
      for (const span of failed) expect(span.status.message).toMatch(/reservations refused/);
      expect(attempts().map((s) => s.status.message ?? "").join("\n")).not.toMatch(/concurrent transaction's locks/);
      // The run given back for a retry is an error too, saying why.
      for (const span of attempts().filter((s) => s.attributes["concord.settlement"] === "retry")) expect(span.status).toEqual({ code: 2, message: "reservations refused" });
      // The product service's line of each retry names the event and the span of its attempt.
      const eventId = (await eventsOf(nc(), orderId, 1)).get("shop.orders.v1.OrderPlaced")!.get("ce-id");
      const retries = () => products.logs().filter((l) => l.msg === "event handler failed; retrying" && l.trace_id === traceId);
      await eventually("the retries are logged", async () => retries().length >= 2);
      const retrySpans = new Set(attempts().filter((s) => s.attributes["concord.settlement"] === "retry").map((s) => s.spanId));
      for (const line of retries()) {
        expect(line).toMatchObject({ level: "warn", eventId });
        expect(retrySpans.has(String(line.span_id))).toBe(true);
      }
    } finally {
      db.exec("DROP TRIGGER refuse_reservations");
      db.close();
    }
    await expect.poll(async () => (await client.getOrder({ id: orderId })).order!.state, { timeout: 30_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
  });

  it("exports no span of a batch's run that was rolled back: one consumer span per delivery, and no producer span of an event never sent", { timeout: 60_000 }, async () => {
    // Two orders' OrderPlaced reach the product service in one batch, the second's reservation refused: the
    // batch runs without savepoints, fails at the second, is rolled back and runs again with a savepoint each.
    const db = new Database(join(dir, "products.db"));
    db.pragma("busy_timeout = 5000");
    db.exec("CREATE TABLE refused_orders (order_id TEXT PRIMARY KEY)");
    db.exec("CREATE TRIGGER refuse_listed BEFORE INSERT ON reservations WHEN NEW.order_id IN (SELECT order_id FROM refused_orders) BEGIN SELECT RAISE(ABORT, 'order refused'); END");
    const [first, second] = [hex(16), hex(16)];
    const { product } = await catalog.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 2500 }, initialStock: 10 });
    const place = async (traceId: string) =>
      (await client.createOrder({ customerId: "c-trace", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address }, { headers: { traceparent: `00-${traceId}-${hex(8)}-01` } })).order!.id;
    // The order service prices the product from its own catalogue once it has it (from ProductCreated, or asked for
    // once): an order placed through to CONFIRMED first makes sure, as the two below are placed while the product
    // service is stopped. On a loaded machine ProductCreated had not arrived yet, and CreateOrder's lookup timed out.
    const warm = await place(hex(16));
    await expect.poll(async () => (await client.getOrder({ id: warm })).order!.state, { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    products.process.kill("SIGSTOP");
    let orderId: string;
    try {
      orderId = await place(first);
      const refused = await place(second);
      db.prepare("INSERT INTO refused_orders VALUES (?)").run(refused);
    } finally {
      products.process.kill("SIGCONT");
    }
    try {
      const attempts = () => spansOf(second).filter((s) => s.name === "process shop.orders.v1.OrderPlaced");
      await eventually("the refused order's event is given back twice", async () => attempts().filter((s) => s.attributes["concord.settlement"] === "retry").length >= 2);
      const deliveries = attempts().map((s) => s.attributes["messaging.nats.delivery_count"]);
      expect(deliveries).toEqual([...new Set(deliveries)]);
      for (const span of attempts()) expect(span.status).toEqual({ code: 2, message: "order refused" });
    } finally {
      db.exec("DROP TRIGGER refuse_listed");
      db.exec("DROP TABLE refused_orders");
      db.close();
    }
    await expect.poll(async () => (await client.getOrder({ id: orderId })).order!.state, { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    await expect.poll(() => spansOf(first).some((s) => s.name === "send shop.orders.v1.OrderConfirmed"), { timeout: 15_000 }).toBe(true);
    const spans = spansOf(first);
    const reserving = one(spans, "process shop.orders.v1.OrderPlaced", "CONSUMER");
    expect(reserving.attributes["concord.settlement"]).toBe("ack");
    const reserved = one(spans, "create shop.products.v1.StockReserved", "PRODUCER");
    expect(reserved.parentSpanId).toBe(reserving.spanId);
    const events = await eventsOf(nc(), orderId);
    expect(events.get("shop.products.v1.StockReserved")!.get("traceparent")).toBe(`00-${first}-${reserved.spanId}-01`);
  });

  it("records nothing for an unsampled caller, and its events carry the unsampled flag", async () => {
    const traceId = hex(16);
    const orderId = await placeConfirmedOrder(`00-${traceId}-${hex(8)}-00`);
    const events = await eventsOf(nc(), orderId);
    expect([...events.keys()].sort()).toEqual(["shop.orders.v1.OrderConfirmed", "shop.orders.v1.OrderPlaced", "shop.products.v1.StockReserved"]);
    for (const headers of events.values()) expect(headers.get("traceparent")).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-00$`));
    // A sampled order placed afterwards has its spans exported; the unsampled one's would have gone with them.
    const after = hex(16);
    await placeConfirmedOrder(`00-${after}-${hex(8)}-01`);
    await expect.poll(() => spansOf(after).some((s) => s.name === "send shop.orders.v1.OrderConfirmed"), { timeout: 15_000 }).toBe(true);
    expect(spansOf(traceId)).toEqual([]);
  });
});

describe("trace context with tracing off", () => {
  let shop: Shop;
  let nc: NatsConnection;
  beforeAll(async () => {
    shop = await startShop();
    nc = await connect({ servers: shop.nats.url });
  });
  afterAll(async () => {
    await nc?.close();
    await shop?.stop();
  });

  it("passes the caller's traceparent and tracestate, sampled flag included, on to every event of the saga", async () => {
    const { product } = await shop.products.client.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 2500 }, initialStock: 10 });
    for (const flags of ["01", "00"]) {
      const traceparent = `00-${hex(16)}-${hex(8)}-${flags}`;
      const { order } = await shop.orders.client.createOrder(
        { customerId: "c-trace", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address },
        { headers: { traceparent, tracestate: "vendor=abc" } },
      );
      await expect.poll(async () => (await shop.orders.client.getOrder({ id: order!.id })).order!.state, { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
      const events = [...(await eventsOf(nc, order!.id)).values()].map((headers) => ({ headers }));
      expect(events.map((e) => e.headers.get("ce-type")).sort()).toEqual(["shop.orders.v1.OrderConfirmed", "shop.orders.v1.OrderPlaced", "shop.products.v1.StockReserved"]);
      for (const e of events) {
        expect(e.headers.get("traceparent")).toBe(traceparent);
        expect(e.headers.get("ce-traceparent")).toBe(traceparent);
        expect(e.headers.get("ce-tracestate")).toBe("vendor=abc");
      }
    }
  });
});
