import { join } from "node:path";
import type pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { OrderCancelledEvent } from "../../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { OrderCancelled } from "../../../gen/ts/shop/orders/v1/order_events_pb.js";
import { usePostgresServer } from "../../../test/support/postgres.js";
import { tempDirForSuite } from "../../../test/support/temp-dir.js";
import { createOutbox, outboxMigrations } from "../../../platform/events/index.js";
import { Code, StatusError } from "../../../platform/errors/index.js";
import { createLogger } from "../../../platform/log/index.js";
import { type Database, openDatabase } from "../../../platform/sql/index.js";
import type { OrderRecord } from "../domain/order.js";
import { orderMigrations } from "../store/migrations.js";
import { createOrderStore, type OrderStore } from "../store/order-store.js";
import { startSagaTimeout, sweepIntervalOf, type SagaTimeout } from "./saga-timeout.js";

const dir = tempDirForSuite("concord-saga-timeout-");
const minute = 60_000;
const t0 = 1_700_000_000_000;
const id = (n: number) => `0190a5b4-7c4e-7d3e-9f1a-${String(n).padStart(12, "0")}`;
const order = (n: number, overrides: Partial<OrderRecord> = {}): OrderRecord => ({
  id: id(n),
  customerId: `c-${n}`,
  state: "PENDING",
  lines: [{ productId: id(9999), productName: "Teapot", quantity: 1, unitPriceMinor: 1999 }],
  currency: "EUR",
  totalMinor: 1999,
  shippingAddress: { recipient: "A", line1: "B", line2: "", city: "C", postalCode: "D", countryCode: "GB" },
  rejectionReason: "",
  cancellationReason: "",
  linesVersion: 1,
  pendingSince: t0,
  version: 1,
  createdAt: t0,
  updatedAt: t0,
  ...overrides,
});

/** A destination that keeps every line, parsed. */
function memoryLog(): { lines: Record<string, unknown>[]; stream: pino.DestinationStream } {
  const lines: Record<string, unknown>[] = [];
  return { lines, stream: { write: (line: string) => void lines.push(JSON.parse(line)) } };
}

describe("the saga's timeout", () => {
  const cleanups: Array<() => unknown> = [];
  let n = 0;
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  const open = async (path = join(dir, `orders-${++n}.db`)): Promise<Database> => {
    const db = await openDatabase({ path, migrations: [...orderMigrations, ...outboxMigrations] });
    cleanups.push(() => db.close());
    return db;
  };
  const start = (db: Database, options: Partial<Parameters<typeof startSagaTimeout>[0]> = {}): SagaTimeout => {
    const timeout = startSagaTimeout({
      db,
      store: createOrderStore(),
      outbox: createOutbox({ db, source: "orders" }),
      timeoutMs: 15 * minute,
      logger: createLogger({ service: "orders", level: "silent" }),
      ...options,
    });
    cleanups.push(() => timeout.stop());
    return timeout;
  };
  const insert = (db: Database, ...orders: OrderRecord[]) =>
    db.transaction(async (tx) => {
      for (const o of orders) await createOrderStore().insert(tx, o);
    });
  const cancelledEvents = async (db: Database) =>
    (await db.query<{ subject: string; type: string; payload: Uint8Array }>("SELECT subject, type, payload FROM event_outbox ORDER BY seq")).map((r) => ({
      subject: r.subject,
      type: r.type,
      ...OrderCancelled.decode(r.payload),
    }));
  const stateOf = async (db: Database, n: number) => (await createOrderStore().get(db, id(n)))!;

  it("looks a tenth of the timeout apart, within 1 s and 60 s", () => {
    expect(sweepIntervalOf(15 * minute)).toBe(60_000);
    expect(sweepIntervalOf(5 * minute)).toBe(30_000);
    expect(sweepIntervalOf(1_000)).toBe(1_000);
    expect(sweepIntervalOf(50)).toBe(1_000);
  });

  it("cancels the PENDING orders whose time ran out, each with its OrderCancelled, in batches, and leaves every other order alone", async () => {
    const db = await open();
    await insert(
      db,
      order(1),
      order(2, { pendingSince: t0 + 5 * minute }),
      order(3, { pendingSince: t0 + 10 * minute }),
      order(4, { pendingSince: t0 + 14 * minute }),
      order(5, { state: "CONFIRMED", version: 2 }),
      order(6, { state: "REJECTED", rejectionReason: "not enough stock", version: 2 }),
      order(7, { state: "CANCELLED", version: 2 }),
    );
    let counted = 0;
    const log = memoryLog();
    // 15 minutes after order 3 entered PENDING: its time has just run out, order 4's has not.
    const timeout = start(db, { batchSize: 2, now: () => t0 + 25 * minute, onTimedOut: () => counted++, logger: createLogger({ service: "orders", destination: log.stream }) });
    expect(await timeout.sweep()).toBe(3);
    expect(counted).toBe(3);
    // One warning for the sweep, naming the orders it cancelled.
    expect(log.lines.filter((l) => l.level === "warn")).toMatchObject([{ cancelled: 3, orderIds: [id(1), id(2), id(3)], msg: expect.stringMatching(/^cancelled 3 PENDING orders: not confirmed within 15m/) }]);
    for (const n of [1, 2, 3]) expect(await stateOf(db, n)).toMatchObject({ state: "CANCELLED", version: 2, updatedAt: t0 + 25 * minute });
    expect(await stateOf(db, 4)).toEqual(order(4, { pendingSince: t0 + 14 * minute }));
    expect(await stateOf(db, 5)).toEqual(order(5, { state: "CONFIRMED", version: 2 }));
    expect((await stateOf(db, 6)).state).toBe("REJECTED");
    expect((await stateOf(db, 7)).version).toBe(2);
    const reason = "not confirmed within 15m: no answer about its stock came from the product service";
    expect(await cancelledEvents(db)).toEqual(
      [1, 2, 3].map((k) => ({ subject: `shop.orders.v1.order.${id(k)}.cancelled`, type: "shop.orders.v1.OrderCancelled", orderId: id(k), customerId: `c-${k}`, reason })),
    );
    // Nothing is left to do: a second sweep changes nothing.
    expect(await timeout.sweep()).toBe(0);
    expect(await cancelledEvents(db)).toHaveLength(3);
  });

  it("skips an order that changed after the sweep read it", async () => {
    const db = await open();
    await insert(db, order(1), order(2));
    // The product service's answer for order 1 commits between the sweep's read and its write.
    const store = createOrderStore();
    const racing: OrderStore = {
      ...store,
      async listPendingSince(q, before, after, limit) {
        const batch = await store.listPendingSince(q, before, after, limit);
        await db.transaction((tx) => store.replace(tx, { ...batch[0], state: "CONFIRMED", version: 2 }, 1));
        return batch;
      },
    };
    expect(await start(db, { store: racing, batchSize: 10, now: () => t0 + 20 * minute }).sweep()).toBe(1);
    expect(await stateOf(db, 1)).toMatchObject({ state: "CONFIRMED", version: 2 });
    expect(await stateOf(db, 2)).toMatchObject({ state: "CANCELLED", version: 2 });
    expect((await cancelledEvents(db)).map((e) => e.orderId)).toEqual([id(2)]);
  });

  describe("on PostgreSQL", () => {
    const postgres = usePostgresServer();

    it("cancels each order once while two instances sweep one database at once", async () => {
      const path = await postgres().createDatabase("saga_timeout_race");
      const [a, b] = [await open(path), await open(path)];
      await insert(a, ...Array.from({ length: 60 }, (_, k) => order(100 + k, { pendingSince: t0 + k })));
      let counted = 0;
      const sweeps = [a, b].map((d) => start(d, { batchSize: 7, now: () => t0 + 20 * minute, onTimedOut: () => counted++ }));
      const swept = await Promise.all(sweeps.map((s) => s.sweep()));
      expect(swept[0] + swept[1]).toBe(60);
      expect(counted).toBe(60);
      const events = await cancelledEvents(a);
      expect(events).toHaveLength(60);
      expect(new Set(events.map((e) => e.orderId)).size).toBe(60);
      const [{ n: cancelled }] = await a.query<{ n: string }>("SELECT count(*) AS n FROM orders WHERE state = 'CANCELLED' AND version = 2");
      expect(Number(cancelled)).toBe(60);
    }, 30_000);

    it("leaves an order whose row another transaction holds to a later sweep, and cancels the rest", async () => {
      const db = await open(await postgres().createDatabase("saga_timeout_lock"));
      await insert(db, order(1), order(2), order(3));
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let locked!: () => void;
      const isLocked = new Promise<void>((resolve) => (locked = resolve));
      const holder = db.transaction(async (tx) => {
        await createOrderStore().getForUpdate(tx, id(2));
        locked();
        await held;
      });
      await isLocked;
      const timeout = start(db, { now: () => t0 + 20 * minute });
      const began = performance.now();
      expect(await timeout.sweep()).toBe(2);
      expect(performance.now() - began).toBeLessThan(5_000);
      expect((await stateOf(db, 2)).state).toBe("PENDING");
      release();
      await holder;
      expect(await timeout.sweep()).toBe(1);
      expect((await cancelledEvents(db)).map((e) => e.orderId).sort()).toEqual([id(1), id(2), id(3)]);
    }, 30_000);
  });

  /**
   * A PENDING order long out of time, an event the relay has not published in the outbox, and a timeout started
   * 31 s after that event was added, on a clock the test moves; `lagWarnings` counts the warnings saying so.
   */
  const startWithEventWaiting = async () => {
    const db = await open();
    await insert(db, order(1));
    await db.transaction(async (tx) => void createOutbox({ db, source: "orders" }).add(tx, OrderCancelledEvent, { orderId: id(2), customerId: "c-2", reason: "r" }));
    const log = memoryLog();
    const clock = { at: Date.now() + 31_000 };
    const timeout = start(db, { now: () => clock.at, logger: createLogger({ service: "orders", destination: log.stream }) });
    const lagWarnings = () => log.lines.filter((l) => l.level === "warn" && String(l.msg).includes("not yet published")).length;
    return { db, clock, timeout, lagWarnings };
  };

  it("cancels nothing while an event has waited in the outbox for 30 s or more (NATS away), nor for a timeout after it went", async () => {
    const { db, clock, timeout, lagWarnings } = await startWithEventWaiting();
    expect(await timeout.sweep()).toBe(0);
    expect((await stateOf(db, 1)).state).toBe("PENDING");
    expect(lagWarnings()).toBe(1);
    // Published and deleted: the orders placed meanwhile have only now reached the product service.
    await db.run("DELETE FROM event_outbox");
    clock.at += 14 * minute;
    expect(await timeout.sweep()).toBe(0);
    clock.at += minute;
    expect(await timeout.sweep()).toBe(1);
    expect((await stateOf(db, 1)).state).toBe("CANCELLED");
  });

  it("counts events an earlier process left in the outbox for 30 s or more as publishing lagging, though this process's relay sends them before its first sweep", async () => {
    // Left by a process stopped while NATS was away; the relay publishes it before the first sweep, and the order's
    // OrderPlaced has only now reached the product service.
    const { db, clock, timeout, lagWarnings } = await startWithEventWaiting();
    await db.run("DELETE FROM event_outbox");
    clock.at += minute;
    expect(await timeout.sweep()).toBe(0);
    expect((await stateOf(db, 1)).state).toBe("PENDING");
    expect(lagWarnings()).toBe(1);
    clock.at += 14 * minute;
    expect(await timeout.sweep()).toBe(1);
    expect((await stateOf(db, 1)).state).toBe("CANCELLED");
  });

  it("logs an order it cannot cancel and goes on to the next: one order does not hold back the others", async () => {
    const db = await open();
    await insert(db, order(1), order(2));
    const log = memoryLog();
    const store = createOrderStore();
    const stubborn: OrderStore = {
      ...store,
      async replace(tx, next, expectedVersion) {
        if (next.id === id(1)) throw new StatusError(Code.ABORTED, "the transaction lost to concurrent ones 4 times; try again");
        return store.replace(tx, next, expectedVersion);
      },
    };
    const timeout = start(db, { store: stubborn, now: () => t0 + 20 * minute, logger: createLogger({ service: "orders", destination: log.stream }) });
    expect(await timeout.sweep()).toBe(1);
    expect((await stateOf(db, 1)).state).toBe("PENDING");
    expect((await stateOf(db, 2)).state).toBe("CANCELLED");
    expect(log.lines.filter((l) => l.level === "error")).toMatchObject([{ orderId: id(1), msg: "cancelling a PENDING order out of time failed; the next sweep tries it again" }]);
  });

  it("logs a failing sweep once until one works again, and keeps looking meanwhile", async () => {
    const db = await open();
    await insert(db, order(1));
    const log = memoryLog();
    const store = createOrderStore();
    let down = true;
    let reads = 0;
    const flaky: OrderStore = {
      ...store,
      async listPendingSince(...args) {
        reads++;
        if (down) throw new Error("connect ECONNREFUSED 127.0.0.1:5432");
        return store.listPendingSince(...args);
      },
    };
    start(db, { store: flaky, intervalMs: 10, now: () => t0 + 20 * minute, logger: createLogger({ service: "orders", destination: log.stream }) });
    await expect.poll(() => reads).toBeGreaterThanOrEqual(5);
    const errors = () => log.lines.filter((l) => l.level === "error");
    expect(errors()).toHaveLength(1);
    expect(errors()[0]).toMatchObject({ component: "saga-timeout", err: { message: "connect ECONNREFUSED 127.0.0.1:5432" } });
    down = false;
    await expect.poll(async () => (await stateOf(db, 1)).state).toBe("CANCELLED");
    await expect.poll(() => log.lines.some((l) => l.level === "info" && String(l.msg).includes("works again"))).toBe(true);
    // A second outage is logged again, once.
    down = true;
    const seen = reads;
    await expect.poll(() => reads).toBeGreaterThanOrEqual(seen + 5);
    expect(errors()).toHaveLength(2);
  });

  it("stops: a sweep under way ends after its current order, and none starts after", async () => {
    const db = await open();
    await insert(db, ...Array.from({ length: 5 }, (_, k) => order(k + 1)));
    const store = createOrderStore();
    let reads = 0;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const slow: OrderStore = {
      ...store,
      async listPendingSince(...args) {
        reads++;
        return store.listPendingSince(...args);
      },
      async replace(tx, next, expected) {
        await held;
        return store.replace(tx, next, expected);
      },
    };
    const timeout = start(db, { store: slow, intervalMs: 10, now: () => t0 + 20 * minute });
    await expect.poll(() => reads).toBe(1);
    const stopped = timeout.stop();
    release();
    await stopped;
    const after = reads;
    // The order under way when the stop came is done; the other four are left for the next start.
    const states = await Promise.all([1, 2, 3, 4, 5].map(async (k) => (await stateOf(db, k)).state));
    expect(states.filter((s) => s === "CANCELLED")).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(reads).toBe(after);
    await db.close();
    await timeout.stop();
  });
});
