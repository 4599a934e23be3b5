import { once } from "node:events";
import { statfs } from "node:fs/promises";
import { connect as connectHttp2 } from "node:http2";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import Database from "better-sqlite3";
import { headers as natsHeaders } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { Code } from "../platform/errors/index.js";
import { uuidv7 } from "../platform/ids/index.js";
import { freePort, useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { startProducts } from "../services/products/app.js";
import { insecureGrpc } from "../platform/runtime/index.js";
import { capturedLogger } from "./support/captured-logger.js";
import { runConcord } from "./support/concord.js";
import { address, grpcError, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";

/** One scrape of a service's metrics endpoint over HTTP. */
async function scrape(metricsAddress: string | undefined): Promise<string> {
  if (!metricsAddress) throw new Error("the service serves no metrics");
  const res = await fetch(`http://${metricsAddress}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
  return res.text();
}

/** The value of one sample (`name{labels}`), or undefined when the scrape does not have it. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = (match[2] ?? "").split(",").filter(Boolean);
    if (wanted.every((w) => have.includes(w))) return Number(match[3]);
  }
  return undefined;
}

describe("metrics", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const nats = useNatsServer({ storeDir: join(dir.path, "nats") });
  const nc = useNatsConnection(nats);
  let products: RunningProducts;
  let orders: RunningOrders;
  beforeAll(async () => {
    products = await startTestProducts(dir.path, nats().url, { metricsListen: "127.0.0.1:0" });
    orders = await startTestOrders(dir.path, products.service.address, nats().url, { metricsListen: "127.0.0.1:0" });
  });
  afterAll(async () => {
    await orders?.stop();
    await products?.stop();
  });

  it("shows each consumer's counters at 0 from the start, before its first event: rate() and increase() see the first dead letter", async () => {
    const [productsText, ordersText] = [await scrape(products.service.metricsAddress), await scrape(orders.service.metricsAddress)];
    for (const name of ["concord_consumer_handled_total", "concord_consumer_retried_total", "concord_consumer_dead_lettered_total"]) {
      for (const consumer of ["products-order-placed", "products-order-cancelled", "products-order-updated", "products-order-unknown"]) expect(sample(productsText, name, { consumer }), `${name} ${consumer}`).toBe(0);
      for (const consumer of ["orders-stock-reserved", "orders-stock-reservation-failed", "orders-product-created", "orders-product-updated"]) expect(sample(ordersText, name, { consumer }), `${name} ${consumer}`).toBe(0);
    }
    for (const answer of ["StockReserved", "StockReservationFailed"]) expect(sample(ordersText, "concord_orders_unknown_order_answers_total", { answer }), answer).toBe(0);
  });

  it("counts calls by method and status code, with their latency", async () => {
    const before = await scrape(products.service.metricsAddress);
    const createProduct = { grpc_service: "shop.products.v1.ProductService", grpc_method: "CreateProduct" };
    const invalidBefore = sample(before, "grpc_server_handled_total", { ...createProduct, grpc_code: "INVALID_ARGUMENT" }) ?? 0;
    const err = await grpcError(products.client.createProduct({ name: "", description: "", price: { currencyCode: "EUR", amountMinor: 100 }, initialStock: 1 }));
    expect(err.code).toBe(Code.INVALID_ARGUMENT);
    await products.client.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 100 }, initialStock: 1 });
    const after = await scrape(products.service.metricsAddress);
    expect(sample(after, "grpc_server_handled_total", { ...createProduct, grpc_code: "INVALID_ARGUMENT" })).toBe(invalidBefore + 1);
    expect(sample(after, "grpc_server_handled_total", { ...createProduct, grpc_code: "OK" })).toBeGreaterThanOrEqual(1);
    expect(sample(after, "grpc_server_handling_seconds_count", createProduct)).toBe((sample(before, "grpc_server_handling_seconds_count", createProduct) ?? 0) + 2);
    expect(sample(after, "grpc_server_handling_seconds_bucket", { ...createProduct, le: "+Inf" })).toBe(sample(after, "grpc_server_handling_seconds_count", createProduct));
    // Answers its callers take none of: none here.
    expect(sample(after, "concord_grpc_stalled_answer_bytes")).toBe(0);
    expect(sample(after, "concord_grpc_calls_cancelled_unread_total")).toBe(0);
  });

  it("counts the calls refused before any handler apart from those served, and the connections dropped", async () => {
    const before = await scrape(products.service.metricsAddress);
    const refusedLabels = { grpc_service: "shop.products.v1.ProductService", grpc_method: "GetProduct", grpc_code: "UNIMPLEMENTED", reason: "compressed" };
    const handledBefore = before.match(/^grpc_server_handled_total\{grpc_service="shop.products.v1.ProductService",grpc_method="GetProduct",.*$/gm) ?? [];
    expect(sample(before, "concord_grpc_connections_dropped_total", { reason: "no_preface" })).toBe(0);
    // A request sent gzip-compressed, as a client told to compress sends it: refused before it is read.
    const session = connectHttp2(`http://${products.service.address}`);
    try {
      const body = gzipSync(Buffer.from([0x0a, 0x01, 0x78]));
      const prefix = Buffer.from([1, 0, 0, 0, body.length]);
      const stream = session.request({ ":method": "POST", ":path": "/shop.products.v1.ProductService/GetProduct", "content-type": "application/grpc", te: "trailers", "grpc-encoding": "gzip" });
      let answer: Record<string, unknown> = {};
      stream.on("response", (headers) => (answer = headers)).on("data", () => {}).end(Buffer.concat([prefix, body]));
      await once(stream, "close");
      expect(answer["grpc-status"]).toBe(String(Code.UNIMPLEMENTED));
    } finally {
      session.close();
    }
    const after = await scrape(products.service.metricsAddress);
    expect(sample(after, "concord_grpc_refused_total", refusedLabels)).toBe((sample(before, "concord_grpc_refused_total", refusedLabels) ?? 0) + 1);
    expect(after.match(/^grpc_server_handled_total\{grpc_service="shop.products.v1.ProductService",grpc_method="GetProduct",.*$/gm) ?? []).toEqual(handledBefore);
  });

  it("counts the events each consumer handled, with their latency, and shows its lag and the outbox", async () => {
    const { product } = await products.client.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 5 });
    const { order } = await orders.client.createOrder({ customerId: "c-metrics", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address });
    await expect.poll(async () => (await orders.client.getOrder({ id: order!.id })).order!.state).toBe(OrderState.ORDER_STATE_CONFIRMED);
    const consumer = { consumer: "products-order-placed" };
    await expect.poll(async () => sample(await scrape(products.service.metricsAddress), "concord_consumer_handled_total", consumer)).toBeGreaterThanOrEqual(1);
    const text = await scrape(products.service.metricsAddress);
    expect(sample(text, "concord_consumer_handling_seconds_count", consumer)).toBeGreaterThanOrEqual(1);
    expect(sample(text, "concord_consumer_pending", { ...consumer, stream: "SHOP_ORDERS" })).toBe(0);
    expect(sample(text, "concord_consumer_ack_pending", { ...consumer, stream: "SHOP_ORDERS" })).toBeTypeOf("number");
    await expect.poll(async () => sample(await scrape(orders.service.metricsAddress), "concord_consumer_handled_total", { consumer: "orders-stock-reserved" })).toBeGreaterThanOrEqual(1);
    await expect.poll(async () => sample(await scrape(products.service.metricsAddress), "concord_outbox_depth")).toBe(0);
    const later = await scrape(products.service.metricsAddress);
    expect(sample(later, "concord_outbox_oldest_age_seconds")).toBe(0);
    expect(sample(later, "concord_outbox_parked")).toBe(0);
    expect(sample(later, "process_resident_memory_bytes")).toBeGreaterThan(0);
  });

  it("shows the orders PENDING and how long the oldest has waited, 0 once the saga settles them", { timeout: 60_000 }, async () => {
    const { product } = await products.client.createProduct({ name: "Urn", description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 5 });
    // The product service's reservations refused: its handler retries, the order waits.
    const db = new Database(join(dir.path, "products.db"));
    db.pragma("busy_timeout = 5000");
    db.exec("CREATE TRIGGER refuse_reservations BEFORE INSERT ON reservations BEGIN SELECT RAISE(ABORT, 'reservations refused'); END");
    let order: Awaited<ReturnType<typeof orders.client.createOrder>>["order"];
    try {
      ({ order } = await orders.client.createOrder({ customerId: "c-pending", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address }));
      await new Promise((resolve) => setTimeout(resolve, 300));
      const text = await scrape(orders.service.metricsAddress);
      expect(sample(text, "concord_orders_pending")).toBe(1);
      expect(sample(text, "concord_orders_pending_oldest_age_seconds")).toBeGreaterThanOrEqual(0.3);
      expect(sample(text, "concord_orders_pending_oldest_age_seconds")).toBeLessThan(30);
    } finally {
      db.exec("DROP TRIGGER refuse_reservations");
      db.close();
    }
    await expect.poll(async () => (await orders.client.getOrder({ id: order!.id })).order!.state, { timeout: 20_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    const settled = await scrape(orders.service.metricsAddress);
    expect(sample(settled, "concord_orders_pending")).toBe(0);
    expect(sample(settled, "concord_orders_pending_oldest_age_seconds")).toBe(0);
    // The product service keeps no orders: it has no such gauges.
    expect(sample(await scrape(products.service.metricsAddress), "concord_orders_pending")).toBeUndefined();
  });

  it("counts a dead letter under its consumer", async () => {
    const consumer = { consumer: "products-order-placed" };
    const deadBefore = sample(await scrape(products.service.metricsAddress), "concord_consumer_dead_lettered_total", consumer) ?? 0;
    const h = natsHeaders();
    h.set("ce-specversion", "1.0");
    h.set("ce-id", uuidv7());
    h.set("ce-type", "shop.orders.v1.OrderPlaced");
    h.set("ce-source", "test");
    h.set("content-type", "application/protobuf");
    await nc().jetstream().publish(`shop.orders.v1.order.${uuidv7()}.placed`, new Uint8Array([0xff, 0xff, 0xff]), { headers: h });
    await expect.poll(async () => sample(await scrape(products.service.metricsAddress), "concord_consumer_dead_lettered_total", consumer)).toBe(deadBefore + 1);
  });

  it("shows whether the service serves and reaches NATS: connected 1, 0 while nats-server is stopped, 1 again once it is back", { timeout: 60_000 }, async () => {
    const before = await scrape(orders.service.metricsAddress);
    expect(sample(before, "concord_nats_connected")).toBe(1);
    expect(sample(before, "concord_grpc_serving")).toBe(1);
    await nats().stopForRestart();
    try {
      // The service still reports SERVING meanwhile (its events wait in the outbox): nothing else said NATS was gone.
      await expect.poll(async () => sample(await scrape(orders.service.metricsAddress), "concord_nats_connected"), { timeout: 20_000 }).toBe(0);
      expect(sample(await scrape(products.service.metricsAddress), "concord_nats_connected")).toBe(0);
    } finally {
      await nats().restart();
    }
    await expect.poll(async () => sample(await scrape(orders.service.metricsAddress), "concord_nats_connected"), { timeout: 20_000 }).toBe(1);
  });

  it("shows the bytes free on the file system holding a SQLite database, as statfs counts them", async () => {
    const { bavail, bsize } = await statfs(dir.path);
    for (const service of [products.service, orders.service]) {
      const free = sample(await scrape(service.metricsAddress), "concord_database_free_bytes");
      // Other work on the machine writes meanwhile: close to statfs's count, not equal to it.
      expect(free).toBeGreaterThan(0);
      expect(Math.abs(free! - bavail * bsize)).toBeLessThan(256 * 1024 * 1024);
    }
  });

  it("shows each service's database taking writes: concord_database_writes_failing 0 for both reasons", async () => {
    for (const service of [products.service, orders.service]) {
      const text = await scrape(service.metricsAddress);
      for (const reason of ["full", "failing"]) expect(sample(text, "concord_database_writes_failing", { reason }), reason).toBe(0);
    }
  });

  it("reads the event loop's delay as its lateness, not the 100 ms between samples: near 0 while the process idles", async () => {
    // Node's histogram holds the samples since the last scrape.
    await scrape(products.service.metricsAddress);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const text = await scrape(products.service.metricsAddress);
    // The whole interval was read, 0.099 to 0.101 s at every percentile, for a loop late by a millisecond or so.
    for (const name of ["min", "p50", "mean"]) expect(sample(text, `nodejs_eventloop_lag_${name}_seconds`), name).toBeLessThan(0.05);
    for (const name of ["min", "max", "mean", "p50", "p90", "p99"]) expect(sample(text, `nodejs_eventloop_lag_${name}_seconds`), name).toBeGreaterThanOrEqual(0);
    expect(sample(text, "nodejs_eventloop_lag_p99_seconds")).toBeGreaterThanOrEqual(sample(text, "nodejs_eventloop_lag_p50_seconds")!);
  });

  it("holds its address while the database is opened, answering 503 until the service has started", { timeout: 30_000 }, async () => {
    const metricsPort = await freePort();
    const stop = new AbortController();
    const { lines, logger } = capturedLogger("products");
    // No PostgreSQL server there: the service waits for one.
    const starting = startProducts({
      listen: "127.0.0.1:0",
      database: `postgres://postgres@127.0.0.1:${await freePort()}/products`,
      natsUrl: nats().url,
      security: insecureGrpc,
      logger,
      metricsListen: `127.0.0.1:${metricsPort}`,
      signal: stop.signal,
    });
    starting.catch(() => undefined);
    try {
      await expect.poll(() => lines.some((line) => line.msg === "the database cannot be reached; waiting for it"), { timeout: 10_000 }).toBe(true);
      const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      expect(res.status).toBe(503);
      expect(await res.text()).toMatch(/^the service is starting/);
      // concord status says so on the instance's outbox line, where it said "HTTP 503" alone.
      const status = await runConcord({ GRPC_INSECURE: "1" }, ["status", "--nats", nats().url, "--products", `127.0.0.1:${await freePort()}`, "--products-metrics", `127.0.0.1:${metricsPort}`], 30_000);
      expect(status.status).toBe(1);
      expect(status.stdout).toContain(`metrics at 127.0.0.1:${metricsPort}: HTTP 503: the service is starting (opening and migrating its database); its metrics are served once it has started`);
    } finally {
      stop.abort();
      await expect(starting).rejects.toThrow();
    }
    // Given up with the start.
    await expect(fetch(`http://127.0.0.1:${metricsPort}/metrics`)).rejects.toThrow();
  });

  it("serves 404 off /metrics, and no endpoint when not asked for", async () => {
    const res = await fetch(`http://${products.service.metricsAddress}/other`);
    expect(res.status).toBe(404);
    const plain = await startTestProducts(dir.path, nats().url, { database: join(dir.path, "plain.db") });
    try {
      expect(plain.service.metricsAddress).toBeUndefined();
    } finally {
      await plain.stop();
    }
  });
});
