/**
 * Two instances of each service on one Postgres under a steady 100 orders/s,
 * some of them cancelled, while one instance of each service is killed
 * (SIGKILL) and started again and Postgres itself crashes and comes back.
 * Callers do what the README asks of them: a request id per order, the same
 * call again while the answer is UNAVAILABLE or late. Afterwards every order
 * has settled, each exactly once, stock and held units add up, no event was
 * stored twice or took effect twice, and both outboxes are empty.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderServiceService } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { OrderServiceMethods } from "../gen/ts/shop/orders/v1/order_service_rpc.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { deadLetterStreamSpec } from "../platform/events/index.js";
import { Code, StatusError } from "../platform/errors/index.js";
import { createClient, waitForServing } from "../platform/grpc/index.js";
import { uuidv7 } from "../platform/ids/index.js";
import { freePort, useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { usePostgresServer } from "./support/postgres.js";
import { startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { address } from "./support/shop.js";
import { readStream } from "./support/streams.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ratePerSecond = 100;
const loadSeconds = 16;
/** Codes a caller answers by sending the same request again. */
// What a caller may try again: the system away for a while, a write conflict, or a server at capacity
// (RESOURCE_EXHAUSTED, nothing done: calls waiting on a Postgres that is down hold their places meanwhile).
const tryAgain = new Set([Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.ABORTED, Code.RESOURCE_EXHAUSTED]);

describe("two instances of each service on Postgres under 100 orders/s, through crashes", () => {
  const postgres = usePostgresServer();
  const nats = useNatsServer();
  const nc = useNatsConnection(nats);
  let productsDb: string;
  let ordersDb: string;
  const productAddresses: string[] = [];
  const orderAddresses: string[] = [];
  const products: ServiceProcess[] = [];
  const orders: ServiceProcess[] = [];
  const productsEnv = (i: number) => ({ PRODUCTS_LISTEN: productAddresses[i], PRODUCTS_DATABASE_URL: productsDb, NATS_URL: nats().url, LOG_LEVEL: "warn" });
  const ordersEnv = (i: number) => ({
    ORDERS_LISTEN: orderAddresses[i],
    ORDERS_DATABASE_URL: ordersDb,
    PRODUCTS_ADDRESS: productAddresses.join(","),
    NATS_URL: nats().url,
    LOG_LEVEL: "warn",
  });

  beforeAll(async () => {
    productsDb = await postgres().createDatabase("products");
    ordersDb = await postgres().createDatabase("orders");
    for (let i = 0; i < 2; i++) {
      productAddresses.push(`127.0.0.1:${await freePort()}`);
      orderAddresses.push(`127.0.0.1:${await freePort()}`);
    }
    for (let i = 0; i < 2; i++) products.push(startServiceProcess("products", productsEnv(i)));
    await Promise.all(productAddresses.map((a) => waitForServing(a, 60_000)));
    for (let i = 0; i < 2; i++) orders.push(startServiceProcess("orders", ordersEnv(i)));
    await Promise.all(orderAddresses.map((a) => waitForServing(a, 60_000)));
  }, 180_000);
  afterAll(async () => {
    for (const p of [...orders, ...products]) await p.stop();
  });

  it("settles every order once, keeps stock exact and drains both outboxes while instances and Postgres crash", async () => {
    const catalog = createClient(ProductServiceService, { address: productAddresses.join(","), defaultTimeoutMs: 5_000 });
    const shop = createClient(OrderServiceService, { address: orderAddresses.join(","), methods: OrderServiceMethods, defaultTimeoutMs: 5_000 });
    // One product runs out (orders for it are rejected from then on, cancellations give units back); two never do.
    const initialStock = [150, 100_000, 100_000];
    const productIds: string[] = [];
    for (const stock of initialStock) {
      const { product } = await catalog.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 2500 }, initialStock: stock });
      productIds.push(product!.id);
    }
    // The order service prices from its copy of the catalogue, fed by the product events.
    for (const productId of productIds) {
      await expect
        .poll(() => shop.createOrder({ customerId: "c-warmup", lines: [{ productId, quantity: 1 }], shippingAddress: address }).then(() => true, () => false), { timeout: 20_000 })
        .toBe(true);
    }

    const codes = new Map<string, number>();
    const unexpected: string[] = [];
    /** Calls `call` until it answers or fails for a reason other than the system being away for a while. */
    const persist = async <T,>(what: string, call: () => Promise<T>): Promise<T | StatusError> => {
      const deadline = performance.now() + 60_000;
      for (;;) {
        try {
          return await call();
        } catch (err) {
          const e = err instanceof StatusError ? err : new StatusError(Code.UNKNOWN, String(err));
          codes.set(Code[e.code], (codes.get(Code[e.code]) ?? 0) + 1);
          if (!tryAgain.has(e.code)) return e;
          if (performance.now() > deadline) return e;
          await sleep(100);
        }
      }
    };

    interface Placed {
      readonly id: string;
      readonly productId: string;
      readonly startedAt: number;
      readonly tookMs: number;
      cancelled?: boolean;
    }
    const placed: Placed[] = [];
    const jobs: Promise<void>[] = [];
    const placeOne = async (n: number) => {
      const productId = productIds[n % productIds.length];
      const requestId = uuidv7();
      const startedAt = performance.now();
      const result = await persist("CreateOrder", () => shop.createOrder({ requestId, customerId: `c-${n % 17}`, lines: [{ productId, quantity: 1 }], shippingAddress: address }));
      if (result instanceof StatusError) return void unexpected.push(`CreateOrder ${requestId}: ${Code[result.code]} ${result.message}`);
      const order: Placed = { id: result.order!.id, productId, startedAt, tookMs: performance.now() - startedAt };
      placed.push(order);
      // Every fifth order is withdrawn a little later, pending or confirmed by then.
      if (n % 5 === 0) {
        await sleep(Math.random() * 400);
        const cancelled = await persist("CancelOrder", () => shop.cancelOrder({ id: order.id, reason: "changed my mind" }));
        if (!(cancelled instanceof StatusError)) order.cancelled = true;
        else if (cancelled.code !== Code.FAILED_PRECONDITION) unexpected.push(`CancelOrder ${order.id}: ${Code[cancelled.code]} ${cancelled.message}`);
      }
    };

    // The load: one new order every 10 ms, whatever happens to the earlier ones.
    const loadStarted = performance.now();
    const at = (seconds: number) => sleep(Math.max(0, loadStarted + seconds * 1_000 - performance.now()));
    const load = (async () => {
      for (let n = 0; n < ratePerSecond * loadSeconds; n++) {
        jobs.push(placeOne(n));
        await sleep(Math.max(0, loadStarted + ((n + 1) * 1_000) / ratePerSecond - performance.now()));
      }
    })();
    const faults = (async () => {
      await at(3);
      await Promise.all([orders[0].kill(), products[0].kill()]);
      await at(5);
      orders[0] = startServiceProcess("orders", ordersEnv(0));
      products[0] = startServiceProcess("products", productsEnv(0));
      await at(9);
      await postgres().kill();
      const downAt = performance.now();
      await at(10);
      await postgres().restart();
      return { postgresDownMs: performance.now() - downAt, postgresBackAt: performance.now() };
    })();
    const { postgresDownMs, postgresBackAt } = await faults;
    await load;
    await Promise.all(jobs);
    const loadEnded = performance.now();
    // A process that died on its own, or callers left without an answer, are explained by the services' last words.
    const ended = [...orders, ...products].filter((p) => p.process.exitCode !== null || p.process.signalCode !== null);
    if (ended.length > 0 || unexpected.length > 0) {
      for (const p of [...orders, ...products]) console.log(`--- ${p.name} pid ${p.process.pid}${ended.includes(p) ? " (ended)" : ""}\n${p.lines().slice(-20).map((l) => l.slice(0, 600)).join("\n")}`);
    }
    expect(ended.map((p) => `${p.name} pid ${p.process.pid}`), "services that died").toEqual([]);
    expect(unexpected, "answers a caller cannot act on").toEqual([]);
    await Promise.all(orderAddresses.concat(productAddresses).map((a) => waitForServing(a, 30_000)));

    // Every order settles: CONFIRMED or REJECTED, or CANCELLED when it was withdrawn.
    const db = (url: string) => new pg.Pool({ connectionString: url, max: 2 });
    const ordersPool = db(ordersDb);
    const productsPool = db(productsDb);
    try {
      const pending = async () => Number((await ordersPool.query("SELECT count(*) AS n FROM orders WHERE state = 'PENDING'")).rows[0].n);
      await expect.poll(pending, { timeout: 90_000, interval: 250 }).toBe(0);
      const settledMs = performance.now() - loadEnded;
      // No order is PENDING, yet events that change no order's state (OrderCancelled, StockReleased) may still be on
      // their way: in an outbox, or at a consumer of their own (waiting out the ack_wait of a killed instance, or the
      // backoff of a transaction that failed while Postgres was down). Stock is checked once everything is through.
      const jsm = await nc().jetstreamManager();
      const outboxRows = (pool: pg.Pool) => pool.query("SELECT count(*) AS n FROM event_outbox").then((r) => Number(r.rows[0].n));
      const inFlight = async () => {
        const parts: string[] = [];
        for (const [name, pool] of [["orders", ordersPool], ["products", productsPool]] as const) {
          const n = await outboxRows(pool);
          if (n > 0) parts.push(`${name} outbox ${n}`);
        }
        for (const stream of ["SHOP_ORDERS", "SHOP_PRODUCTS"]) {
          for await (const c of jsm.consumers.list(stream)) {
            if (c.num_pending + c.num_ack_pending > 0) parts.push(`${c.name} ${c.num_pending} waiting, ${c.num_ack_pending} unacknowledged`);
          }
        }
        return parts;
      };
      const stillInFlight = await inFlight();
      await expect
        .poll(async () => (await inFlight()).join("; "), { timeout: 90_000, interval: 250 })
        .toBe("")
        .catch((err: unknown) => {
          // What the relays and consumers last said tells why something stayed.
          for (const p of [...orders, ...products]) console.log(`--- ${p.name} pid ${p.process.pid}\n${p.lines().slice(-20).map((l) => l.slice(0, 600)).join("\n")}`);
          throw err;
        });
      const states = new Map<string, string>(
        (await ordersPool.query<{ id: string; state: string }>("SELECT id, state FROM orders WHERE customer_id <> 'c-warmup'")).rows.map((r) => [r.id, r.state]),
      );
      // One order per request id: none placed twice by a repeated call.
      expect(states.size).toBe(ratePerSecond * loadSeconds);
      expect(placed).toHaveLength(ratePerSecond * loadSeconds);
      for (const o of placed) {
        const state = states.get(o.id);
        if (o.cancelled) expect(state, o.id).toBe("CANCELLED");
        else expect(["CONFIRMED", "REJECTED"], o.id).toContain(state);
      }

      // Stock: every unit is on the shelf or held for exactly one confirmed order.
      const confirmed = (await ordersPool.query<{ lines_json: string }>("SELECT lines_json FROM orders WHERE state = 'CONFIRMED'")).rows;
      const held = new Map<string, number>();
      for (const { lines_json } of confirmed) for (const line of JSON.parse(lines_json) as Array<{ productId: string; quantity: number }>) held.set(line.productId, (held.get(line.productId) ?? 0) + line.quantity);
      const expectedStock = productIds.map((productId, i) => ({ stock: initialStock[i] - (held.get(productId) ?? 0), reserved: held.get(productId) ?? 0 }));
      const stockRows = await Promise.all(productIds.map(async (productId) => (await productsPool.query<{ stock: number; reserved: number }>("SELECT stock, reserved FROM products WHERE id = $1", [productId])).rows[0]));
      const reservations = new Map((await productsPool.query<{ order_id: string; status: string }>("SELECT order_id, status FROM reservations")).rows.map((r) => [r.order_id, r.status]));
      const agrees = (state: string, reservation: string | undefined) =>
        state === "CONFIRMED" ? reservation === "reserved" : state === "REJECTED" ? reservation === "failed" : [undefined, "released", "failed"].includes(reservation);
      const disagreeing = [...states].filter(([id, state]) => !agrees(state, reservations.get(id)));
      const stockAddsUp = stockRows.every((row, i) => row.stock === expectedStock[i].stock && row.reserved === expectedStock[i].reserved);
      if (disagreeing.length > 0 || !stockAddsUp) {
        // What each side did with the orders that disagree says where it went wrong.
        const events = [...(await readStream(jsm, "SHOP_ORDERS")), ...(await readStream(jsm, "SHOP_PRODUCTS"))];
        console.log(`--- ${disagreeing.length} orders whose reservation disagrees with their state; dead letters ${(await jsm.streams.info(deadLetterStreamSpec.name)).state.messages}`);
        for (const [id, state] of disagreeing.slice(0, 5)) {
          const kinds = events.filter((e) => e.subject.includes(`.${id}.`)).map((e) => e.subject.split(".").filter((_, i, parts) => i === 1 || i === parts.length - 1).join("."));
          console.log(`order ${id}: ${state}, reservation ${reservations.get(id)}, events ${kinds.join(", ")}`);
          for (const p of [...orders, ...products]) for (const line of p.lines().filter((l) => l.includes(id)).slice(-5)) console.log(`  ${p.name}: ${line.slice(0, 400)}`);
        }
      }
      for (const [i, productId] of productIds.entries()) {
        expect(stockRows[i], productId).toEqual(expectedStock[i]);
      }
      for (const [id, state] of states) {
        if (state === "CONFIRMED") expect(reservations.get(id), id).toBe("reserved");
        if (state === "REJECTED") expect(reservations.get(id), id).toBe("failed");
        if (state === "CANCELLED") expect([undefined, "released", "failed"], id).toContain(reservations.get(id));
      }

      // Both outboxes drain, nothing parked, nothing dead-lettered.
      for (const [name, pool] of [["orders", ordersPool], ["products", productsPool]] as const) {
        const left = () => outboxRows(pool);
        const drained = await expect.poll(left, { timeout: 30_000 }).toBe(0).then(() => true, () => false);
        if (!drained) {
          // What is left, and which process holds the relay's lock, say where it stuck.
          const rows = (await pool.query("SELECT seq, subject FROM event_outbox ORDER BY seq LIMIT 5")).rows;
          const holders = (await pool.query("SELECT l.pid, a.application_name, a.state, a.backend_start FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory'")).rows;
          console.log(`--- ${name} outbox not drained: ${await left()} rows, first ${JSON.stringify(rows)}; advisory locks ${JSON.stringify(holders)}`);
          for (const p of [...orders, ...products]) {
            const relayLines = p.lines().filter((l) => l.includes('"outbox-relay"'));
            console.log(`--- ${p.name} pid ${p.process.pid}, its relay:\n${relayLines.slice(-20).map((l) => l.slice(0, 400)).join("\n")}`);
          }
        }
        expect(await left(), `${name} outbox rows left`).toBe(0);
        expect(Number((await pool.query("SELECT count(*) AS n FROM event_outbox_parked")).rows[0].n)).toBe(0);
      }
      expect((await jsm.streams.info(deadLetterStreamSpec.name)).state.messages, "dead letters").toBe(0);

      // Each event stored once; each order's events once each, in the order they happened.
      const orderEvents = await readStream(jsm, "SHOP_ORDERS");
      const productEvents = await readStream(jsm, "SHOP_PRODUCTS");
      for (const stream of [orderEvents, productEvents]) {
        const ids = stream.map((e) => e.headers.get("ce-id"));
        expect(new Set(ids).size, "no event stored twice").toBe(ids.length);
      }
      const byOrder = new Map<string, string[]>();
      for (const e of orderEvents) {
        const [, , , , id, kind] = e.subject.split(".");
        byOrder.set(id, [...(byOrder.get(id) ?? []), kind]);
      }
      for (const [id, state] of states) {
        const kinds = byOrder.get(id) ?? [];
        if (state === "CONFIRMED") expect(kinds, id).toEqual(["placed", "confirmed"]);
        if (state === "REJECTED") expect(kinds, id).toEqual(["placed", "rejected"]);
        if (state === "CANCELLED") expect([["placed", "cancelled"], ["placed", "confirmed", "cancelled"], ["placed", "rejected", "cancelled"]], id).toContainEqual(kinds);
      }

      const during = (from: number, to: number) => placed.filter((o) => o.startedAt >= loadStarted + from * 1_000 && o.startedAt < loadStarted + to * 1_000);
      const slowest = (list: Placed[]) => Math.max(0, ...list.map((o) => o.tookMs));
      const firstAfterPostgres = Math.min(...placed.filter((o) => o.startedAt + o.tookMs > postgresBackAt).map((o) => o.startedAt + o.tookMs)) - postgresBackAt;
      const count = (s: string) => [...states.values()].filter((v) => v === s).length;
      // How long each consumer waited for Postgres: its last pause before trying its batch again, of those logged (five
      // lines in 10 s a service, the rest counted without their pauses).
      const waited = new Map<string, number>();
      for (const p of [...orders, ...products]) {
        for (const line of p.lines().filter((l) => l.includes("the database is away or takes no writes; trying it again"))) {
          const { consumer, retryInMs } = JSON.parse(line) as { consumer: string; retryInMs: number };
          waited.set(consumer, Math.max(waited.get(consumer) ?? 0, retryInMs));
        }
      }
      console.log(
        [
          `fault run: ${placed.length} orders at ${ratePerSecond}/s over ${loadSeconds} s, 2 instances of each service on Postgres`,
          `  settled: ${count("CONFIRMED")} CONFIRMED, ${count("REJECTED")} REJECTED, ${count("CANCELLED")} CANCELLED; the last ${(settledMs / 1000).toFixed(1)} s after the load ended`,
          `  one instance of each killed at 3 s, started again at 5 s: slowest order placed meanwhile took ${(slowest(during(3, 6)) / 1000).toFixed(2)} s`,
          `  Postgres killed at 9 s, back ${(postgresDownMs / 1000).toFixed(1)} s later: first order answered ${(firstAfterPostgres / 1000).toFixed(2)} s after that, slowest ${(slowest(during(9, 12)) / 1000).toFixed(2)} s`,
          `  answers the callers repeated: ${[...codes].map(([c, n]) => `${c} ${n}`).join(", ") || "none"}`,
          `  consumers' longest pause logged waiting for Postgres: ${[...waited].map(([c, ms]) => `${c} ${ms} ms`).join(", ") || "none"}`,
          `  still on their way when the last order settled: ${stillInFlight.join("; ") || "nothing"}`,
        ].join("\n"),
      );
    } finally {
      await ordersPool.end();
      await productsPool.end();
      catalog.close();
      shop.close();
    }
  }, 300_000);
});
