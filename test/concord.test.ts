import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { AckPolicy, connect as natsConnect, headers as natsHeaders, type NatsConnection } from "nats";
import { type ConcordRun, runConcord } from "./support/concord.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderPlacedEvent } from "../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { OrderServiceConsumers } from "../gen/ts/shop/orders/v1/order_service_jetstream.js";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { ProductServiceConsumers } from "../gen/ts/shop/products/v1/product_service_jetstream.js";
import { bindConsumer, deadLetterStreamSpec, eventMigrations, type RunningConsumers, startConsumers } from "../platform/events/index.js";
import { openDatabase, type Database } from "../platform/sql/index.js";
import { databaseWritesFailingMetrics } from "../platform/metrics/index.js";
import { Registry } from "prom-client";
import { freePort, startNatsServer, useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { provisionStreams } from "../tools/concord/provision.js";
import { readTokenSecret, signToken } from "../platform/auth/index.js";
import { findNatsServer } from "../tools/nats/find-nats-server.mjs";
import { clientTlsCredentials } from "../platform/grpc/index.js";
import { address, devSecurity, quietLogger, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";

/** Runs the `concord` bin as an operator would; resolves once it exits. The services here serve in plaintext. */
function concord(...args: string[]): Promise<ConcordRun> {
  return concordWith({ GRPC_INSECURE: "1" }, ...args);
}

/** Runs the `concord` bin with `env` on top of this process's environment. */
function concordWith(env: Record<string, string>, ...args: string[]): Promise<ConcordRun> {
  return runConcord(env, args);
}

/** `concord` started in the background, for the commands that follow events until stopped. */
function concordRunning(...args: string[]) {
  const child = spawn(process.execPath, ["tools/concord.mjs", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, exited, stdout: () => stdout, stderr: () => stderr };
}

const fulfilmentTable = { id: "test_0001_fulfilled", sqlite: "CREATE TABLE fulfilled (order_id TEXT NOT NULL, event_id TEXT NOT NULL);", postgres: "CREATE TABLE fulfilled (order_id TEXT NOT NULL, event_id TEXT NOT NULL);" };

describe("npx concord", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const nats = useNatsServer({ storeDir: join(dir.path, "nats") });
  const nc = useNatsConnection(nats);
  let products: RunningProducts;
  let orders: RunningOrders;
  let fulfilmentDb: Database;
  let fulfilment: RunningConsumers;
  /** The cause of the fulfilment consumer's failures; cleared to fix it. */
  let broken: string | undefined = "the warehouse is closed";

  beforeAll(async () => {
    products = await startTestProducts(dir.path, nats().url, { metricsListen: "127.0.0.1:0" });
    orders = await startTestOrders(dir.path, products.service.address, nats().url, { metricsListen: "127.0.0.1:0" });
    // A third service's consumer of the orders placed: it fails until its cause is fixed, after 2 attempts
    // each event goes to the dead letter stream.
    fulfilmentDb = await openDatabase({ path: join(dir.path, "fulfilment.db"), migrations: [...eventMigrations, fulfilmentTable] });
    fulfilment = await startConsumers({
      nc: nc(),
      db: fulfilmentDb,
      service: "fulfilment",
      logger: quietLogger("fulfilment"),
      consumers: [
        bindConsumer({
          spec: { durable: "fulfilment-order-placed", stream: "SHOP_ORDERS", filterSubject: "shop.orders.v1.order.*.placed", eventType: "shop.orders.v1.OrderPlaced", maxDeliver: 2, backoffMs: [50], ackWaitMs: 5_000 },
          descriptor: OrderPlacedEvent,
          async handle(event, context) {
            if (broken) throw new Error(broken);
            await context.tx.run("INSERT INTO fulfilled (order_id, event_id) VALUES ($1, $2)", [event.orderId, context.eventId]);
          },
        }),
      ],
    });
  }, 60_000);
  afterAll(async () => {
    await fulfilment?.stop();
    await fulfilmentDb?.close();
    await orders?.stop();
    await products?.stop();
  });

  const fulfilled = async (orderId: string) => (await fulfilmentDb.query<{ n: number }>("SELECT count(*) AS n FROM fulfilled WHERE order_id = $1", [orderId]))[0].n;
  const stockOf = async (id: string) => (await products.client.getProduct({ id })).product!.stock;
  const dlqMessages = async () => (await (await nc().jetstreamManager()).streams.info(deadLetterStreamSpec.name)).state.messages;
  const placeConfirmedOrder = async (stock: number, quantity: number) => {
    const { product } = await products.client.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: stock });
    const { order } = await orders.client.createOrder({ customerId: "c-ops", lines: [{ productId: product!.id, quantity }], shippingAddress: address });
    await expect.poll(async () => (await orders.client.getOrder({ id: order!.id })).order!.state, { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    return { productId: product!.id, orderId: order!.id };
  };
  type Listed = { seq: number; reason: string; subject: string; consumer: string; deliveryCount: number; type: string; id: string; traceId?: string; payload: { orderId?: string } };
  const listed = async (...filter: string[]): Promise<Listed[]> => {
    const out = await concord("dlq", "list", "--nats", nats().url, ...filter);
    expect(out.status, out.stderr).toBe(0);
    return out.stdout.split("\n").filter(Boolean).map((line) => JSON.parse(line) as Listed);
  };

  it("lists and shows a dead letter decoded; replays it once its cause is fixed, to one effect however often it is replayed; a dry run changes nothing", { timeout: 120_000 }, async () => {
    broken = "the warehouse is closed";
    const { productId, orderId } = await placeConfirmedOrder(5, 2);
    await expect.poll(async () => (await listed("--consumer", "fulfilment-order-placed")).length, { timeout: 15_000 }).toBe(1);
    const [letter] = await listed("--consumer", "fulfilment-order-placed");
    expect(letter).toMatchObject({
      reason: "the warehouse is closed",
      subject: `shop.orders.v1.order.${orderId}.placed`,
      consumer: "fulfilment-order-placed",
      deliveryCount: 2,
      type: "shop.orders.v1.OrderPlaced",
      payload: { orderId },
    });
    expect(letter.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(await listed("--type", "shop.products.v1.StockReserved")).toEqual([]);

    const shown = await concord("dlq", "show", String(letter.seq), "--nats", nats().url);
    expect(shown.status, shown.stderr).toBe(0);
    const detail = JSON.parse(shown.stdout) as Listed & { headers: Record<string, string> };
    expect(detail).toMatchObject({ seq: letter.seq, reason: "the warehouse is closed", deliveryCount: 2, payload: { orderId, lines: [expect.objectContaining({ productId, quantity: 2 })] } });
    expect(detail.headers["ce-id"]).toBe(letter.id);
    expect(detail.headers.traceparent).toContain(letter.traceId);

    // A dry run says what it would do and does nothing.
    const ordersBefore = (await (await nc().jetstreamManager()).streams.info("SHOP_ORDERS")).state.last_seq;
    const dry = await concord("dlq", "replay", "--all", "--dry-run", "--nats", nats().url);
    expect(dry.status, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`"wouldReplay":${letter.seq}`);
    expect((await (await nc().jetstreamManager()).streams.info("SHOP_ORDERS")).state.last_seq).toBe(ordersBefore);
    expect(await listed("--consumer", "fulfilment-order-placed")).toHaveLength(1);

    // The same dead letter twice in the stream, as after a replay cut short before it deleted it:
    // both are replayed within JetStream's duplicate window, and the event takes effect once.
    const copy = natsHeaders();
    for (const [name, value] of Object.entries(detail.headers)) copy.set(name, value);
    const stored = await (await nc().jetstreamManager()).streams.getMessage(deadLetterStreamSpec.name, { seq: letter.seq });
    for (const name of stored.header.keys()) if (name.startsWith("concord-dlq-")) copy.set(name, stored.header.get(name));
    await nc().jetstream().publish(`concord.dlq.SHOP_ORDERS.fulfilment-order-placed`, stored.data, { headers: copy });
    expect(await listed("--consumer", "fulfilment-order-placed")).toHaveLength(2);

    broken = undefined;
    const replay = await concord("dlq", "replay", "--consumer", "fulfilment-order-placed", "--rate", "20/s", "--nats", nats().url);
    expect(replay.status, replay.stderr).toBe(0);
    expect(replay.stdout.split("\n").filter((l) => l.includes('"replayed"'))).toHaveLength(2);
    expect(replay.stderr).toContain("2 of 2 replayed");
    await expect.poll(() => fulfilled(orderId), { timeout: 10_000 }).toBe(1);
    expect(await listed("--consumer", "fulfilment-order-placed")).toEqual([]);
    // Both replays were stored and delivered; the inbox dropped the second, and the product service,
    // which had reserved the stock the first time, dropped both.
    await expect
      .poll(async () => {
        const info = await (await nc().jetstreamManager()).consumers.info("SHOP_ORDERS", "fulfilment-order-placed");
        return info.num_pending + info.num_ack_pending;
      })
      .toBe(0);
    expect((await (await nc().jetstreamManager()).streams.info("SHOP_ORDERS")).state.last_seq).toBeGreaterThanOrEqual(ordersBefore + 2);
    expect(await fulfilled(orderId)).toBe(1);
    expect(await stockOf(productId)).toBe(3);
  });

  it("purges the dead letters only with --yes, all of them or those named by their sequences", { timeout: 60_000 }, async () => {
    broken = "still closed";
    const { orderId } = await placeConfirmedOrder(1, 1);
    await expect.poll(async () => (await listed("--subject", `shop.orders.v1.order.${orderId}.*`)).length, { timeout: 15_000 }).toBe(1);
    // A dead letter without a ce-id cannot be replayed: a replay says so, leaves it (exit 1), and would replay the others.
    const h = natsHeaders();
    h.set("concord-dlq-subject", `shop.orders.v1.order.${orderId}.placed`);
    h.set("concord-dlq-reason", "written by hand");
    await nc().jetstream().publish("concord.dlq.SHOP_ORDERS.fulfilment-order-placed", new Uint8Array([1]), { headers: h });
    const before = await dlqMessages();
    const handWritten = (await listed()).find((l) => l.reason === "written by hand")!.seq;
    for (const args of [["--all", "--dry-run"], [String(handWritten)]]) {
      const refused = await concord("dlq", "replay", ...args, "--nats", nats().url);
      expect(refused.status, args.join(" ")).toBe(1);
      expect(refused.stderr).toMatch(/has no ce-id, so a replay could not be deduplicated/);
      expect(refused.stderr).toMatch(/1 dead letter\(s\) cannot be replayed, said above with why/);
      expect(await dlqMessages()).toBe(before);
    }
    // The one written by hand alone, by its sequence: the others stay to be replayed.
    const askedOne = await concord("dlq", "purge", String(handWritten), "--nats", nats().url);
    expect(askedOne.status).toBe(2);
    expect(askedOne.stderr).toBe(`concord dlq purge: this deletes dead letter(s) ${handWritten} and no other; run again with --yes to do it\n`);
    expect(await dlqMessages()).toBe(before);
    const one = await concord("dlq", "purge", String(handWritten), "--yes", "--nats", nats().url);
    expect(one.status, one.stderr).toBe(0);
    expect(one.stdout).toBe(`deleted 1 dead letter(s): ${handWritten}\n`);
    expect(await dlqMessages()).toBe(before - 1);
    expect((await listed()).map((l) => l.reason)).not.toContain("written by hand");
    const again = await concord("dlq", "purge", String(handWritten), "--yes", "--nats", nats().url);
    expect(again.status).toBe(1);
    expect(again.stderr).toContain(`concord dlq purge: there is no dead letter ${handWritten} in CONCORD_DLQ: replayed or purged since, or never filed`);
    expect(again.stdout).toBe("deleted 0 dead letter(s)\n");
    const asked = await concord("dlq", "purge", "--nats", nats().url);
    expect(asked.status).toBe(2);
    expect(asked.stderr).toMatch(/run again with --yes/);
    expect(await dlqMessages()).toBeGreaterThan(0);
    const purged = await concord("dlq", "purge", "--yes", "--nats", nats().url);
    expect(purged.status, purged.stderr).toBe(0);
    expect(await dlqMessages()).toBe(0);
    expect(await listed()).toEqual([]);
    broken = undefined;
  });

  it("shows each service's health, consumers' lag and outbox, and fails when a service cannot be reached", { timeout: 120_000 }, async () => {
    const args = ["--nats", nats().url, "--products", products.service.address, "--orders", orders.service.address, "--products-metrics", products.service.metricsAddress!, "--orders-metrics", orders.service.metricsAddress!];
    const status = await concord("status", ...args);
    expect(status.status, status.stdout + status.stderr).toBe(0);
    expect(status.stdout).toContain(`products  gRPC ${products.service.address}: SERVING`);
    expect(status.stdout).toContain(`orders  gRPC ${orders.service.address}: SERVING`);
    expect(status.stdout).toMatch(/outbox: depth \d+, oldest [\d.]+s, parked 0/);
    expect(status.stdout).toMatch(/consumer products-order-placed on SHOP_ORDERS: pending 0, unacked \d+, redelivered \d+, dead letters \d+/);
    expect(status.stdout).toMatch(/consumer orders-stock-reserved on SHOP_PRODUCTS: pending \d+/);
    // The dead letter stream as a whole, last; a limit on it that would delete dead letters unsaid fails the status.
    expect(status.stdout).toMatch(/\nCONCORD_DLQ: \d+ dead letter\(s\), [\d.]+ MiB(, the oldest filed .* ago)?\n$/);
    const jsm = await nc().jetstreamManager();
    await jsm.streams.update(deadLetterStreamSpec.name, { max_msgs: 100_000 });
    try {
      const dropping = await concord("status", ...args);
      expect(dropping.status, dropping.stdout + dropping.stderr).toBe(1);
      expect(dropping.stdout).toMatch(/\nCONCORD_DLQ: \d+ dead letter\(s\) of its max_msgs 100000, .*: its max_msgs 100000 with discard old delete\(s\) dead letters unsaid; /);
    } finally {
      await jsm.streams.update(deadLetterStreamSpec.name, { max_msgs: -1 });
    }
    // Nothing listens there: said as the connection's refusal, without grpc-js's or fetch's wrapping.
    const closed = `127.0.0.1:${await freePort()}`;
    const down = await concord("status", ...args.slice(0, 4), "--orders", closed, "--products-metrics", products.service.metricsAddress!, "--orders-metrics", closed);
    expect(down.status).toBe(1);
    expect(down.stdout).toContain(`orders  gRPC ${closed}: unreachable (connect ECONNREFUSED ${closed})\n`);
    expect(down.stdout).toContain(`  outbox: unknown (metrics at ${closed}: connect ECONNREFUSED ${closed})\n`);
    // Instances given as lists: each one reported, the consumers once, and one unreachable fails the status.
    const instances = await concord("status", ...args.slice(0, 2), "--products", `${products.service.address},${closed}`, "--products-metrics", `${products.service.metricsAddress},${closed}`, ...args.slice(4, 6), ...args.slice(8));
    expect(instances.status, instances.stdout + instances.stderr).toBe(1);
    expect(instances.stdout).toContain(`products#1  gRPC ${products.service.address}: SERVING\nproducts#2`);
    expect(instances.stdout).toContain(`products#2  gRPC ${closed}: unreachable (connect ECONNREFUSED ${closed})\n  outbox not read through it: metrics at ${closed}: connect ECONNREFUSED ${closed}\n`);
    // The instances' one outbox (one database), once, read through the instance that answered.
    expect(instances.stdout).toMatch(/\nproducts {2}outbox, one in the database its 2 instances share: depth \d+, oldest [\d.]+s, parked 0 \(read through products#1\)\n/);
    expect(instances.stdout).toContain("products  consumers, shared by its 2 instances:\n  consumer products-order-placed on SHOP_ORDERS: pending 0");
    // Two instances that both answer (one process named twice here): still one outbox, not one per instance.
    const twice = await concord("status", ...args.slice(0, 2), "--products", `${products.service.address},${products.service.address}`, "--products-metrics", `${products.service.metricsAddress},${products.service.metricsAddress}`, ...args.slice(4, 6), ...args.slice(8));
    expect(twice.status, twice.stdout + twice.stderr).toBe(0);
    const productsPart = twice.stdout.slice(twice.stdout.indexOf("products#1"), twice.stdout.indexOf("products  consumers"));
    expect(productsPart.split("\n").filter((line) => line.includes("outbox"))).toEqual([expect.stringMatching(/^products {2}outbox, one in the database its 2 instances share: depth \d+, oldest [\d.]+s, parked 0 \(read through products#1\)$/)]);
    expect(instances.stdout).toContain(`orders  gRPC ${orders.service.address}: SERVING\n`);
    // The two services' addresses swapped: each server answered SERVING for itself, and the status passed. Each is
    // asked for its own service by name.
    const swapped = await concord("status", ...args.slice(0, 2), "--products", orders.service.address, "--orders", products.service.address, ...args.slice(6));
    expect(swapped.status, swapped.stdout + swapped.stderr).toBe(1);
    expect(swapped.stdout).toContain(`products  gRPC ${orders.service.address}: not this service: the server there serves no shop.products.v1.ProductService (another service's address?)\n`);
    expect(swapped.stdout).toContain(`orders  gRPC ${products.service.address}: not this service: the server there serves no shop.orders.v1.OrderService (another service's address?)\n`);
    const uneven = await concord("status", ...args.slice(0, 2), "--products", `${products.service.address},${closed}`, "--products-metrics", products.service.metricsAddress!);
    expect(uneven.status).toBe(2);
    expect(uneven.stderr).toContain("--products names 2 instance(s) and --products-metrics 1");
  });

  /**
   * `concord status` against the real services, one of whose metrics endpoints is a server of the test's answering
   * `metrics` (as that service's read in a fault), the other service's real.
   */
  async function statusWithMetrics(faked: "products" | "orders", metrics: string) {
    const server = createHttpServer((_req, res) => res.end(metrics));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const at = `127.0.0.1:${(server.address() as { port: number }).port}`;
      const [productsMetrics, ordersMetrics] = faked === "products" ? [at, orders.service.metricsAddress!] : [products.service.metricsAddress!, at];
      return await concord("status", "--nats", nats().url, "--products", products.service.address, "--orders", orders.service.address, "--products-metrics", productsMetrics, "--orders-metrics", ordersMetrics);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  }

  it("fails on an outbox whose oldest event has waited 30 s or more, saying it is held up and where to look", { timeout: 60_000 }, async () => {
    // A service whose relay publishes nothing: its metrics as they read while its stream's store could not write.
    const status = await statusWithMetrics("products", "concord_outbox_depth 3\nconcord_outbox_oldest_age_seconds 45.25\nconcord_outbox_parked 0\n");
    expect(status.status, status.stdout + status.stderr).toBe(1);
    expect(status.stdout).toContain(`products  gRPC ${products.service.address}: SERVING\n  outbox: depth 3, oldest 45.3s, parked 0: held up, its events not published for 30 s or more; the service's log says why ("component":"outbox-relay"), and with NATS connected but no PubAck, the nats-server's log (its store's disk full, say: a stream that met that takes no event, space freed or not, until nats-server is restarted)\n`);
    expect(status.stdout).toMatch(/orders {2}gRPC \S+: SERVING\n {2}outbox: depth \d+, oldest [\d.]+s, parked 0\n/);
  });

  it("fails on an instance whose SQLite database's disk has under 64 MiB free, saying so under it", { timeout: 60_000 }, async () => {
    // A service whose database's disk is nearly full: it reports SERVING, its reads work, and every write soon fails.
    const status = await statusWithMetrics("products", "concord_outbox_depth 0\nconcord_outbox_oldest_age_seconds 0\nconcord_outbox_parked 0\nconcord_database_free_bytes 131072\n");
    expect(status.status, status.stdout + status.stderr).toBe(1);
    expect(status.stdout).toContain(
      `products  gRPC ${products.service.address}: SERVING\n  database: 0.1 MiB free on its file system (concord_database_free_bytes), under 64 MiB: ` +
        `once it is full every write fails, answered UNAVAILABLE ("the service's storage is full"), while health says SERVING; free space there\n  outbox: depth 0, oldest 0.0s, parked 0\n`,
    );
    // The real order service's disk has room: nothing said of it.
    expect(status.stdout).toMatch(/orders {2}gRPC \S+: SERVING\n {2}outbox: /);
  });

  it("fails on a service whose own NATS connection is down while the command's is up, saying so under it", { timeout: 60_000 }, async () => {
    // As a service's metrics read while it could not reach NATS (a network between them cut, say) and the command could.
    const status = await statusWithMetrics("orders", "concord_outbox_depth 0\nconcord_outbox_oldest_age_seconds 0\nconcord_outbox_parked 0\nconcord_nats_connected 0\n");
    expect(status.status, status.stdout + status.stderr).toBe(1);
    expect(status.stdout).toContain(`orders  gRPC ${orders.service.address}: SERVING\n  NATS: not connected from this process (concord_nats_connected 0); its log says why ("component":"event-bus")\n  outbox: depth 0, oldest 0.0s, parked 0\n`);
    // A service connected says nothing of it.
    expect(status.stdout.match(/NATS: not connected/g)).toHaveLength(1);
  });

  it("fails while an instance's database refuses writes (concord_database_writes_failing 1), saying so under it with what to do, and passes once a write commits", { timeout: 60_000 }, async () => {
    // The real gauge over a real SQLite file held at its size, as a full disk: health says SERVING, reads work.
    const db = await openDatabase({ path: join(dir.path, "status-writes-full.db"), migrations: [{ id: "test_0001_notes", sql: "CREATE TABLE notes (body TEXT NOT NULL)" }] });
    try {
      const registry = new Registry();
      databaseWritesFailingMetrics(registry, db);
      const outbox = "concord_outbox_depth 0\nconcord_outbox_oldest_age_seconds 0\nconcord_outbox_parked 0\n";
      const [{ page_count: pages }] = await db.query<{ page_count: number }>("PRAGMA page_count");
      await db.run(`PRAGMA max_page_count = ${pages}`);
      const write = () => db.transaction((tx) => tx.run("INSERT INTO notes (body) VALUES ($1)", ["x".repeat(100_000)]));
      await expect(write()).rejects.toMatchObject({ code: "SQLITE_FULL" });
      const full = await statusWithMetrics("products", outbox + (await registry.metrics()));
      expect(full.status, full.stdout + full.stderr).toBe(1);
      expect(full.stdout).toContain(
        `products  gRPC ${products.service.address}: SERVING\n  database: refusing writes, its storage is full (concord_database_writes_failing{reason="full"} 1): ` +
          `every write fails, calls that write answered UNAVAILABLE ("the service's storage is full"), its consumers' and outbox relay's writes failing too, ` +
          `while health says SERVING; free space on the disk holding the database (PostgreSQL: its server's); it reads 0 again once a write commits\n  outbox: depth 0, oldest 0.0s, parked 0\n`,
      );
      await db.run("PRAGMA max_page_count = 1073741823");
      await write();
      const room = await statusWithMetrics("products", outbox + (await registry.metrics()));
      expect(room.status, room.stdout + room.stderr).toBe(0);
      expect(room.stdout).not.toContain("refusing writes");
    } finally {
      await db.close();
    }
    // A failing disk (PostgreSQL's io_error, SQLite's I/O errors): said as such.
    const failing = await statusWithMetrics("orders", 'concord_outbox_depth 0\nconcord_outbox_oldest_age_seconds 0\nconcord_outbox_parked 0\nconcord_database_writes_failing{reason="full"} 0\nconcord_database_writes_failing{reason="failing"} 1\n');
    expect(failing.status).toBe(1);
    expect(failing.stdout).toContain(`orders  gRPC ${orders.service.address}: SERVING\n  database: refusing writes, its storage failed (concord_database_writes_failing{reason="failing"} 1): writes fail with I/O errors`);
  });

  it("fails on a service's own *_oldest_age_seconds gauge at 60 s or more (the orders PENDING longest), saying what waits from its HELP", { timeout: 60_000 }, async () => {
    const pending = (seconds: number) =>
      "concord_outbox_depth 0\nconcord_outbox_oldest_age_seconds 0\nconcord_outbox_parked 0\n" +
      "# HELP concord_orders_pending_oldest_age_seconds How long the oldest PENDING order has waited since it entered PENDING (0 when none is)\n" +
      `# TYPE concord_orders_pending_oldest_age_seconds gauge\nconcord_orders_pending_oldest_age_seconds ${seconds}\n`;
    const stuck = await statusWithMetrics("orders", pending(73.25));
    expect(stuck.status, stuck.stdout + stuck.stderr).toBe(1);
    expect(stuck.stdout).toContain(
      `orders  gRPC ${orders.service.address}: SERVING\n  waiting: How long the oldest PENDING order has waited since it entered PENDING (0 when none is): 73.3s ` +
        `(concord_orders_pending_oldest_age_seconds), 60 s or more; the service's log says why, and README's "When something goes wrong" what to look at beside it\n  outbox: `,
    );
    const moving = await statusWithMetrics("orders", pending(12));
    expect(moving.status, moving.stdout + moving.stderr).toBe(0);
    expect(moving.stdout).not.toContain("waiting:");
  });

  it("says each consumer is unknown when NATS is up and JetStream does not answer, asking JetStream everything at once", { timeout: 90_000 }, async () => {
    // A nats-server of its own, without JetStream: nothing serves the JetStream API's subjects.
    const port = await freePort();
    const server = spawn(findNatsServer()!.path, ["-a", "127.0.0.1", "-p", String(port)], { stdio: "ignore" });
    const url = `nats://127.0.0.1:${port}`;
    let silent: NatsConnection | undefined;
    try {
      await expect.poll(async () => natsConnect({ servers: url }).then((c) => c.close().then(() => true), () => false), { timeout: 20_000 }).toBe(true);
      const closed = "127.0.0.1:1";
      const args = ["status", "--nats", url, "--products", closed, "--products-metrics", closed, "--orders", closed, "--orders-metrics", closed];
      const consumers = [...Object.values(ProductServiceConsumers), ...Object.values(OrderServiceConsumers)].map((c) => c.spec);
      // nats.js hears at once that no one serves the API.
      const none = await concord(...args);
      expect(none.status, none.stdout + none.stderr).toBe(1);
      expect(none.stdout).toContain(`products  gRPC ${closed}: unreachable (connect ECONNREFUSED ${closed})\n`);
      for (const spec of consumers) {
        expect(none.stdout).toContain(`  consumer ${spec.durable} on ${spec.stream}: unknown (JetStream does not answer: nothing serves its API on this NATS server (is JetStream enabled there?))\n`);
      }
      // Now something takes every JetStream request and answers only the account's: each request waits out its
      // timeout, which one after another, as status asked them, took 5 s per consumer and the dead letters.
      silent = await natsConnect({ servers: url });
      const api = silent.subscribe("$JS.API.>");
      void (async () => {
        for await (const m of api) if (m.subject === "$JS.API.INFO") m.respond(new TextEncoder().encode("{}"));
      })();
      await silent.flush();
      const quiet = await runConcord({ GRPC_INSECURE: "1" }, args, 30_000);
      expect(quiet.status, `ended on its own: ${quiet.stdout}${quiet.stderr}`).toBe(1);
      for (const spec of consumers) expect(quiet.stdout).toContain(`  consumer ${spec.durable} on ${spec.stream}: unknown (JetStream did not answer within 5 s)\n`);
    } finally {
      await silent?.close();
      server.kill("SIGKILL");
    }
  });

  it("says the dead letters are unknown, and why, when the dead letter stream cannot be read, and fails", { timeout: 90_000 }, async () => {
    // A JetStream of its own whose consumers are there and whose dead letter stream is not (provisioning undone).
    const bare = await startNatsServer();
    const bareNc = await natsConnect({ servers: bare.url });
    try {
      await provisionStreams(bareNc);
      const jsm = await bareNc.jetstreamManager();
      const consumers = [...Object.values(ProductServiceConsumers), ...Object.values(OrderServiceConsumers)].map((c) => c.spec);
      for (const spec of consumers) await jsm.consumers.add(spec.stream, { durable_name: spec.durable, filter_subject: spec.filterSubject, ack_policy: AckPolicy.Explicit });
      await jsm.streams.delete(deadLetterStreamSpec.name);
      const args = ["--nats", bare.url, "--products", products.service.address, "--orders", orders.service.address, "--products-metrics", products.service.metricsAddress!, "--orders-metrics", orders.service.metricsAddress!];
      const status = await concord("status", ...args);
      expect(status.status, status.stdout + status.stderr).toBe(1);
      for (const spec of consumers) {
        expect(status.stdout).toContain(`  consumer ${spec.durable} on ${spec.stream}: pending 0, unacked 0, redelivered 0, dead letters unknown (CONCORD_DLQ: stream not on this NATS: \`npm start\` or \`npx concord streams provision\` makes it)\n`);
      }
    } finally {
      await bareNc.close();
      await bare.stop();
    }
  });

  it("reports a service that takes the connection and never answers as unreachable, and exits", { timeout: 60_000 }, async () => {
    // A process stopped or wedged: the kernel accepts the connection, nothing answers the TLS handshake.
    const dataDir = tempDir();
    devSecurity(dataDir.path, "products");
    const accepted = new Set<Socket>();
    const silent = createServer((socket) => accepted.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const at = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
    try {
      const status = await runConcord({ DATA_DIR: dataDir.path, GRPC_INSECURE: undefined }, ["status", "--nats", nats().url, "--products", at, "--products-metrics", at, "--orders", at, "--orders-metrics", at], 30_000);
      expect(status.status, status.stdout + status.stderr).toBe(1);
      expect(status.stdout).toContain(`products  gRPC ${at}: unreachable (no answer within 2 s)\n  outbox: unknown (metrics at ${at}: no answer within 3 s)\n`);
    } finally {
      for (const socket of accepted) socket.destroy();
      silent.close();
      dataDir.remove();
    }
  });

  it("asks the services while NATS is still to answer, so a hung NATS costs its timeout once, not on top of theirs", { timeout: 60_000 }, async () => {
    // A NATS server stopped (SIGSTOP) that runs again only once a service's metrics have been asked: status waiting
    // for NATS before asking the services waited out its 5 s, found NATS unreachable, and only then asked.
    const stalled = await startNatsServer();
    const metrics = createHttpServer((_req, res) => {
      stalled.resume();
      res.end("concord_outbox_depth 0\nconcord_outbox_oldest_age_seconds 0\nconcord_outbox_parked 0\n");
    });
    await new Promise<void>((resolve) => metrics.listen(0, "127.0.0.1", resolve));
    const at = `127.0.0.1:${(metrics.address() as AddressInfo).port}`;
    try {
      stalled.pause();
      const status = await concord("status", "--nats", stalled.url, "--products", "127.0.0.1:1", "--products-metrics", at, "--orders", "127.0.0.1:1", "--orders-metrics", at);
      expect(status.stdout).toMatch(new RegExp(`^NATS ${stalled.url}: connected to `));
      expect(status.stdout).toContain(`products  gRPC 127.0.0.1:1: unreachable (connect ECONNREFUSED 127.0.0.1:1)\n  outbox: depth 0, oldest 0.0s, parked 0\n`);
    } finally {
      stalled.resume();
      await new Promise((resolve) => metrics.close(resolve));
      await stalled.stop();
    }
  });

  it("takes no instances from a record a start killed outright left in DATA_DIR", { timeout: 60_000 }, async () => {
    const dataDir = tempDir();
    try {
      const closed = `127.0.0.1:${await freePort()}`;
      // Named by a process that is not a start (this one): the start that wrote it is gone.
      writeFileSync(join(dataDir.path, "start-services.json"), JSON.stringify({ pid: process.pid, products: [{ grpc: closed, metrics: closed }], orders: [{ grpc: closed, metrics: closed }] }));
      const env = { DATA_DIR: dataDir.path, PRODUCTS_LISTEN: products.service.address, PRODUCTS_METRICS_LISTEN: products.service.metricsAddress!, ORDERS_LISTEN: orders.service.address, ORDERS_METRICS_LISTEN: orders.service.metricsAddress! };
      const status = await concordWith({ GRPC_INSECURE: "1", ...env }, "status", "--nats", nats().url);
      expect(status.status, status.stdout + status.stderr).toBe(0);
      expect(status.stdout).toContain(`products  gRPC ${products.service.address}: SERVING\n`);
      expect(status.stdout).not.toContain(closed);
    } finally {
      dataDir.remove();
    }
  });

  it("takes the services from the variables over a running start's record, unless they name where it put the first instance", { timeout: 60_000 }, async () => {
    const dataDir = tempDir();
    // Stands in for a running `npm start`: the record counts only while a process whose command line is tools/start.ts runs.
    const start = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)", join("tools", "start.ts")], { stdio: "ignore" });
    try {
      const closed = `127.0.0.1:${await freePort()}`;
      const real = (service: RunningProducts | RunningOrders) => ({ grpc: service.service.address, metrics: service.service.metricsAddress! });
      writeFileSync(join(dataDir.path, "start-services.json"), JSON.stringify({ pid: start.pid, starting: false, products: [real(products), { grpc: closed, metrics: closed }], orders: [{ grpc: closed, metrics: closed }] }));
      const env = {
        GRPC_INSECURE: "1",
        DATA_DIR: dataDir.path,
        // Where the start put products#1: the record's two instances stand.
        PRODUCTS_LISTEN: products.service.address,
        PRODUCTS_METRICS_LISTEN: undefined,
        // Elsewhere than the record says: these win, as a flag would.
        ORDERS_LISTEN: orders.service.address,
        ORDERS_METRICS_LISTEN: orders.service.metricsAddress!,
      };
      const status = await runConcord(env, ["status", "--nats", nats().url]);
      expect(status.stdout).toContain(`products#1  gRPC ${products.service.address}: SERVING\n`);
      expect(status.stdout).toContain(`products#2  gRPC ${closed}: unreachable`);
      expect(status.stdout).toContain(`orders  gRPC ${orders.service.address}: SERVING\n  outbox: depth `);
      expect(status.stdout).not.toContain(`orders  gRPC ${closed}`);
    } finally {
      start.kill();
      dataDir.remove();
    }
  });

  it("connects through the other servers a start's record names when NATS_PORT names its first, down, where it said NATS could not be reached", { timeout: 60_000 }, async () => {
    const dataDir = tempDir();
    // Stands in for a running `npm start --cluster` whose first server is down: nothing listens on its port.
    const start = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)", join("tools", "start.ts")], { stdio: "ignore" });
    try {
      const down = await freePort();
      const cluster = `nats://127.0.0.1:${down},${nats().url}`;
      const real = (service: RunningProducts | RunningOrders) => ({ grpc: service.service.address, metrics: service.service.metricsAddress! });
      writeFileSync(join(dataDir.path, "start-services.json"), JSON.stringify({ pid: start.pid, starting: false, nats: cluster, products: [real(products)], orders: [real(orders)] }));
      const status = await concordWith({ GRPC_INSECURE: "1", DATA_DIR: dataDir.path, NATS_PORT: String(down) }, "status");
      expect(status.stdout, status.stderr).toMatch(new RegExp(`^NATS ${cluster}: connected to `));
      // A NATS_PORT the start did not put its first server on is that server alone, as before.
      const other = await freePort();
      const elsewhere = await concordWith({ GRPC_INSECURE: "1", DATA_DIR: dataDir.path, NATS_PORT: String(other) }, "status");
      expect(elsewhere.stdout).toMatch(new RegExp(`^NATS nats://127\\.0\\.0\\.1:${other}: cannot reach NATS at nats://127\\.0\\.0\\.1:${other}: CONNECTION_REFUSED`));
    } finally {
      start.kill();
      dataDir.remove();
    }
  });

  it("asks services that serve over TLS, as `npm start` runs them, trusting the development CA", { timeout: 120_000 }, async () => {
    const secureDir = tempDir();
    const secure = await startTestProducts(secureDir.path, nats().url, { metricsListen: "127.0.0.1:0", security: devSecurity(secureDir.path, "products") }, {
      credentials: clientTlsCredentials({ caFile: join(secureDir.path, "tls", "ca.pem") }),
      token: () => signToken(readTokenSecret(join(secureDir.path, "auth", "token-hs256.key")), { subject: "ops", roles: ["admin"] }, 300),
    });
    try {
      const args = ["--nats", nats().url, "--products", secure.service.address, "--products-metrics", secure.service.metricsAddress!, "--orders", orders.service.address, "--orders-metrics", orders.service.metricsAddress!];
      const status = await concordWith({ DATA_DIR: secureDir.path }, "status", ...args);
      expect(status.stdout).toContain(`products  gRPC ${secure.service.address}: SERVING`);
      // The order service here serves in plaintext, which a TLS client cannot talk to.
      expect(status.stdout).toMatch(/orders {2}gRPC .*: unreachable/);
      expect(status.status).toBe(1);
    } finally {
      await secure.stop();
      secureDir.remove();
    }
  });

  it("tails the events decoded, filtered by type or subject", { timeout: 60_000 }, async () => {
    // Stored events of several types on several subjects for the filters to leave out: ProductCreated and
    // StockReserved on SHOP_PRODUCTS, OrderPlaced on SHOP_ORDERS.
    const { orderId } = await placeConfirmedOrder(1, 1);
    const tail = concordRunning("events", "tail", "--all", "--type", "shop.products.v1.ProductCreated", "--nats", nats().url);
    try {
      const { product } = await products.client.createProduct({ name: "Tail teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 1 });
      await expect.poll(() => tail.stdout(), { timeout: 20_000 }).toContain(product!.id);
      const lines = tail.stdout().trim().split("\n").map((l) => JSON.parse(l) as { type: string; payload: unknown });
      expect(new Set(lines.map((l) => l.type))).toEqual(new Set(["shop.products.v1.ProductCreated"]));
      expect(JSON.stringify(lines.at(-1)!.payload)).toContain("Tail teapot");
    } finally {
      tail.child.kill("SIGINT");
      await tail.exited;
    }
    const bySubject = concordRunning("events", "tail", "--all", "--subject", "shop.orders.v1.order.*.placed", "--nats", nats().url);
    try {
      await expect.poll(() => bySubject.stdout(), { timeout: 20_000 }).toContain(`"subject":"shop.orders.v1.order.${orderId}.placed"`);
      const types = bySubject.stdout().trim().split("\n").map((l) => (JSON.parse(l) as { type: string }).type);
      expect(new Set(types)).toEqual(new Set(["shop.orders.v1.OrderPlaced"]));
    } finally {
      bySubject.child.kill("SIGINT");
      await bySubject.exited;
    }
  });

  it("says once on standard error what it follows, from where on, and which events, before any comes; standard output holds the events alone", { timeout: 60_000 }, async () => {
    const tail = concordRunning("events", "tail", "--type", "shop.products.v1.ProductCreated", "--subject", "shop.products.>", "--nats", nats().url);
    try {
      // It printed nothing at all until an event came, and looked hung.
      const following = `concord events tail: following SHOP_ORDERS, SHOP_PRODUCTS and CONCORD_DLQ at ${nats().url.replace("nats://", "")}: printing each new event from now on (only those on a subject matching shop.products.>, of type shop.products.v1.ProductCreated); Ctrl-C stops\n`;
      await expect.poll(() => tail.stderr(), { timeout: 20_000 }).toBe(following);
      expect(tail.stdout()).toBe("");
      const { product } = await products.client.createProduct({ name: "Waited-for teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 1 });
      await expect.poll(() => tail.stdout(), { timeout: 20_000 }).toContain(product!.id);
      const lines = tail.stdout().trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(JSON.parse(lines[0]!)).toMatchObject({ stream: "SHOP_PRODUCTS", type: "shop.products.v1.ProductCreated" });
      expect(tail.stderr()).toBe(following);
    } finally {
      tail.child.kill("SIGINT");
      await tail.exited;
    }
    const all = concordRunning("events", "tail", "--all", "--nats", nats().url);
    try {
      await expect.poll(() => all.stderr(), { timeout: 20_000 }).toMatch(/^concord events tail: following SHOP_ORDERS, SHOP_PRODUCTS and CONCORD_DLQ at \S+: printing the stored events from the first, then each new one; Ctrl-C stops\n$/);
    } finally {
      all.child.kill("SIGINT");
      await all.exited;
    }
  });

  it("wraps the parked outbox tool", { timeout: 120_000 }, async () => {
    const list = await concord("outbox", "parked", "list", "--database", products.databasePath);
    expect(list.status, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/\d+ event\(s\) waiting to be published, 0 parked/);
    const none = await concord("outbox", "parked", "retry", "--database", products.databasePath, "0190a5b4-7c4e-7d3e-9f1a-000000000001");
    expect([none.status, none.stdout, none.stderr]).toEqual([2, "", `concord outbox parked: 0190a5b4-7c4e-7d3e-9f1a-000000000001 is not a parked event of ${products.databasePath} (\`list\` shows those that are); nothing put back\n`]);
  });

  it("says what is wrong with exit status 2 on bad usage, and 1 on a failure", { timeout: 240_000 }, async () => {
    // One line naming the problem and where the usage is: the whole help, printed after it, hid it above a screenful.
    for (const args of [["nonsense"], ["dlq", "show", "abc"], ["dlq", "replay"], ["dlq", "replay", "1", "--all"], ["dlq", "replay", "--all", "--rate", "fast"], ["dlq", "list", "--bogus"]]) {
      const out = await concord(...args);
      expect(out.status, args.join(" ")).toBe(2);
      const command = args[0] === "nonsense" ? "" : `${args[0]} ${args[1]} `;
      expect(out.stderr, args.join(" ")).toMatch(new RegExp(`^${`concord ${command}`.trim()}: [^\n]+ \\(\`npx concord ${command}--help\` shows the usage\\)\n$`));
    }
    // A rate is N/s, its unit written: one line says so, and nothing is replayed (no NATS is asked).
    for (const rate of ["50", "fast", "50/m", "0/s", "0.0001/s", "1e3/s", "1000000/s"]) {
      const out = await concord("dlq", "replay", "--all", "--rate", rate, "--nats", "nats://127.0.0.1:1");
      expect(out.status, rate).toBe(2);
      expect(out.stderr).toBe(
        `concord dlq replay: --rate takes replays per second as N/s, N above 0 and below a million with at most 3 decimals (50/s, or 0.5/s for one every 2 s), not ${JSON.stringify(rate)}${rate === "50" ? "; the unit, /s, is part of it" : ""} (\`npx concord dlq replay --help\` shows the usage)\n`,
      );
    }
    for (const rate of ["50/s", "0.5/s", "999999.999/s"]) expect((await concord("dlq", "replay", "--all", "--rate", rate, "--nats", "nats://127.0.0.1:1")).stderr).toMatch(/^concord dlq replay: cannot reach NATS/);
    // A mistyped option is named, with the option it most likely meant, not parseArgs's advice on positionals after "--".
    const typo = await concord("events", "tail", "--typ", "shop.orders.v1.OrderPlaced");
    expect(typo.status).toBe(2);
    expect(typo.stderr).toBe("concord events tail: unknown option --typ; did you mean --type? (`npx concord events tail --help` shows the usage)\n");
    expect((await concord("dlq", "list", "--bogus")).stderr).toBe("concord dlq list: unknown option --bogus (`npx concord dlq list --help` shows the usage)\n");
    const missing = await concord("dlq", "show", "999999", "--nats", nats().url);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toBe("concord dlq show: there is no dead letter 999999 in CONCORD_DLQ: replayed or purged since, or never filed (`concord dlq list` shows those there are)\n");
    const unreachable = await concord("dlq", "list", "--nats", "nats://127.0.0.1:1");
    expect(unreachable.status).toBe(1);
    expect(unreachable.stderr).toMatch(/cannot reach NATS at nats:\/\/127\.0\.0\.1:1/);
    const help = await concord("dlq", "replay", "--help");
    expect(help.status).toBe(0);
    expect(help.stdout).toContain("--dry-run");
  });
});
