/**
 * One suite for every store, run against each database the services can
 * use (sqlite.test.ts, postgres.test.ts), as the interop suite runs against
 * each SDK: products, orders, the order service's catalogue copy,
 * reservations, the outbox, the inbox, request ids and migrations behave
 * the same on both.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventMigrations, createInbox, createOutbox, parkedEvents, retryParked } from "../../platform/events/index.js";
import { createOutboxStore } from "../../platform/events/outbox-store.js";
import { createRequestIds, requestIdMigrations } from "../../platform/idempotency/index.js";
import { openDatabase, type Database, type Migration } from "../../platform/sql/index.js";
import { createCatalogStore } from "../../services/orders/store/catalog-store.js";
import { orderMigrations } from "../../services/orders/store/migrations.js";
import { createOrderStore } from "../../services/orders/store/order-store.js";
import type { OrderRecord } from "../../services/orders/domain/order.js";
import type { ProductRecord } from "../../services/products/domain/product.js";
import { productMigrations } from "../../services/products/store/migrations.js";
import { createProductStore } from "../../services/products/store/product-store.js";
import { createReservationStore } from "../../services/products/store/reservation-store.js";
import { lockStockAhead } from "../../services/products/events/stock-reservations.js";
import { OrderCancelled, OrderPlaced, OrderUnknown, OrderUpdated } from "../../gen/ts/shop/orders/v1/order_events_pb.js";
import { sampleStream } from "../support/sample-events.js";
import { findOrdersNotHeld, findOrphanedReservations } from "../../tools/reservations.js";

/** Gives each test group a database of its own: a fresh SQLite file, or a fresh Postgres database. */
export type OpenLocation = (name: string) => Promise<string>;

const id = (n: number) => `0190a5b4-7c4e-7d3e-9f1a-${String(n).padStart(12, "0")}`;
const product = (n: number, overrides: Partial<ProductRecord> = {}): ProductRecord => ({
  id: id(n),
  name: `Product ${n}`,
  description: "",
  priceMinor: 1999,
  currency: "EUR",
  stock: 10,
  reserved: 0,
  version: 1,
  stockVersion: 1,
  createdAt: 1_700_000_000_000,
  updatedAt: 1_700_000_000_000,
  ...overrides,
});
const order = (n: number, overrides: Partial<OrderRecord> = {}): OrderRecord => ({
  id: id(1000 + n),
  customerId: "c-1",
  state: "PENDING",
  lines: [{ productId: id(1), productName: "Teapot", quantity: 2, unitPriceMinor: 1999 }],
  currency: "EUR",
  totalMinor: 3998,
  shippingAddress: { recipient: "A", line1: "B", line2: "", city: "C", postalCode: "D", countryCode: "GB" },
  rejectionReason: "",
  cancellationReason: "",
  linesVersion: 1,
  pendingSince: 1_700_000_000_000,
  version: 1,
  createdAt: 1_700_000_000_000,
  updatedAt: 1_700_000_000_000,
  ...overrides,
});

export function describeStores(kind: "sqlite" | "postgres", setup: () => Promise<{ location: OpenLocation; teardown(): Promise<void> }>): void {
  describe(`the stores on ${kind}`, () => {
    let location: OpenLocation;
    let teardown: () => Promise<void>;
    const opened: Database[] = [];
    const open = async (name: string, migrations: readonly Migration[]) => {
      const db = await openDatabase({ path: await location(name), migrations });
      opened.push(db);
      return db;
    };
    beforeAll(async () => {
      ({ location, teardown } = await setup());
    });
    afterAll(async () => {
      for (const db of opened) await db.close();
      await teardown?.();
    });

    it("runs each migration once, across reopening, and names one that fails", async () => {
      const where = await location("migrations");
      const first = await openDatabase({ path: where, migrations: productMigrations });
      await first.close();
      const db = await openDatabase({ path: where, migrations: productMigrations });
      opened.push(db);
      const [row] = await db.query<{ n: number }>("SELECT count(*) AS n FROM schema_migrations");
      expect(Number(row.n)).toBe(productMigrations.length);
      await expect(openDatabase({ path: where, migrations: [...productMigrations, { id: "zz_broken", sql: "CREATE TABLE broken (" }] })).rejects.toThrow(/migration zz_broken failed/);
    });

    it("keeps products: insert, read, a catalogue edit only at the expected version, stock with its own version, pages in id order", async () => {
      const db = await open("products", productMigrations);
      const store = createProductStore();
      await db.transaction(async (tx) => {
        for (const n of [3, 1, 2]) await store.insert(tx, product(n));
      });
      expect(await store.get(db, id(1))).toEqual(product(1));
      expect(await store.get(db, id(99))).toBeUndefined();
      expect((await store.getMany(db, [id(2), id(99), id(1)])).map((p) => p.id)).toEqual([id(2), id(1)]);
      expect(await store.getMany(db, [])).toEqual([]);
      const edited = { ...product(1), name: "Kettle", version: 2 };
      expect(await db.transaction((tx) => store.replace(tx, edited, 1))).toBe(true);
      expect(await db.transaction((tx) => store.replace(tx, { ...edited, name: "Stale", version: 2 }, 1))).toBe(false);
      await db.transaction((tx) => store.setStock(tx, { ...edited, stock: 7, stockVersion: 2 }, -3, "count"));
      expect(await store.get(db, id(1))).toMatchObject({ name: "Kettle", version: 2, stock: 7, stockVersion: 2 });
      expect((await store.list(db, "", 2)).map((p) => p.id)).toEqual([id(1), id(2)]);
      expect((await store.list(db, id(2), 5)).map((p) => p.id)).toEqual([id(3)]);
      await expect(db.transaction((tx) => store.setStock(tx, { ...edited, stock: -1 }, -8, "too many"))).rejects.toThrow();
      expect((await store.get(db, id(1)))!.stock).toBe(7);
    });

    it("keeps reservations and moves stock between the shelf and orders, never below zero", async () => {
      const db = await open("reservations", productMigrations);
      const products = createProductStore();
      const store = createReservationStore();
      await db.transaction(async (tx) => {
        await products.insert(tx, product(1, { stock: 5 }));
        await products.insert(tx, product(2, { stock: 1 }));
      });
      const onHand = await db.transaction((tx) => store.stockOf(tx, [id(2), id(1), id(99), id(1)]));
      expect([...onHand.entries()]).toEqual([[id(1), 5], [id(2), 1]]);
      await db.transaction(async (tx) => {
        await store.moveStock(tx, [{ productId: id(1), quantity: 4 }], -1, 1);
        await store.put(tx, { orderId: id(500), linesVersion: 1, status: "reserved", lines: [{ productId: id(1), quantity: 4 }] }, 1);
      });
      expect(await products.get(db, id(1))).toMatchObject({ stock: 1, reserved: 4, stockVersion: 2 });
      expect(await db.transaction((tx) => store.get(tx, id(500)))).toEqual({ orderId: id(500), linesVersion: 1, status: "reserved", lines: [{ productId: id(1), quantity: 4 }] });
      await expect(db.transaction((tx) => store.moveStock(tx, [{ productId: id(1), quantity: 2 }], -1, 2))).rejects.toThrow();
      await expect(db.transaction((tx) => store.moveStock(tx, [{ productId: id(2), quantity: 1 }, { productId: id(99), quantity: 1 }], -1, 2))).rejects.toThrow(/1 of the products .* vanished/);
      expect(await products.get(db, id(2))).toMatchObject({ stock: 1, reserved: 0, stockVersion: 1 });
      // A product named on two lines moves by both, its version raised once per line; several products move in one statement.
      const moved = (lines: Array<[number, number]>, sign: 1 | -1, at: number) =>
        db.transaction((tx) => store.moveStock(tx, lines.map(([n, quantity]) => ({ productId: id(n), quantity })), sign, at));
      await moved([[1, 1], [1, 3]], 1, 3);
      expect(await products.get(db, id(1))).toMatchObject({ stock: 5, reserved: 0, stockVersion: 4, updatedAt: 3 });
      await moved([[2, 1], [1, 2]], -1, 4);
      expect(await products.get(db, id(1))).toMatchObject({ stock: 3, reserved: 2, stockVersion: 5, updatedAt: 4 });
      expect(await products.get(db, id(2))).toMatchObject({ stock: 0, reserved: 1, stockVersion: 2, updatedAt: 4 });
      await moved([], -1, 5);
      await db.transaction((tx) => store.put(tx, { orderId: id(500), linesVersion: 2, status: "released", lines: [] }, 3));
      expect((await db.transaction((tx) => store.get(tx, id(500))))!.status).toBe("released");
    });

    it("names the products orders hold now; a batch of order events locks those and its new lines' products before its first event runs (PostgreSQL)", async () => {
      const db = await open("stock-ahead", productMigrations);
      const products = createProductStore();
      const store = createReservationStore();
      await db.transaction(async (tx) => {
        for (const n of [1, 2, 3, 4, 5]) await products.insert(tx, product(n));
        await store.put(tx, { orderId: id(700), linesVersion: 1, status: "reserved", lines: [{ productId: id(2), quantity: 1 }] }, 1);
        await store.put(tx, { orderId: id(701), linesVersion: 1, status: "failed", lines: [] }, 1);
        await store.put(tx, { orderId: id(702), linesVersion: 1, status: "reserved", lines: [{ productId: id(5), quantity: 1 }, { productId: id(4), quantity: 2 }] }, 1);
      });
      expect((await db.transaction((tx) => store.heldProducts(tx, [id(700), id(701), id(702), id(703), id(700)]))).sort()).toEqual([id(2), id(4), id(5)]);
      if (kind !== "postgres") return;
      const ahead = lockStockAhead(store);
      const line = (n: number) => ({ productId: id(n), productName: `Product ${n}`, quantity: 1 });
      /** The products among 1..5 that `lock` leaves free for another session, seen while its transaction is open. */
      const freeWhile = (lock: (tx: Parameters<NonNullable<typeof ahead.orderPlaced>>[1]) => Promise<void>) =>
        db.transaction(async (tx) => {
          await lock(tx);
          const free = await db.query<{ id: string }>(`SELECT id FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED`, [[1, 2, 3, 4, 5].map(id)]);
          return free.map((r) => r.id);
        });
      expect(await freeWhile((tx) => ahead.orderPlaced!([OrderPlaced.fromPartial({ orderId: id(703), lines: [line(3)] }), OrderPlaced.fromPartial({ orderId: id(700), lines: [line(1)] })], tx))).toEqual([id(4), id(5)]);
      expect(
        await freeWhile((tx) =>
          ahead.orderUpdated!(
            [
              OrderUpdated.fromPartial({ orderId: id(701), changedFields: ["lines"], order: { id: id(701), lines: [line(1)] } }),
              OrderUpdated.fromPartial({ orderId: id(700), changedFields: ["shipping_address"], order: { id: id(700), lines: [line(3)] } }),
            ],
            tx,
          ),
        ),
      ).toEqual([id(2), id(3), id(4), id(5)]);
      expect(await freeWhile((tx) => ahead.orderCancelled!([OrderCancelled.fromPartial({ orderId: id(702) }), OrderCancelled.fromPartial({ orderId: id(701) })], tx))).toEqual([id(1), id(2), id(3)]);
      expect(await freeWhile((tx) => ahead.orderUnknown!([OrderUnknown.fromPartial({ orderId: id(702) }), OrderUnknown.fromPartial({ orderId: id(703) })], tx))).toEqual([id(1), id(2), id(3)]);
    });

    it("makes an order's reservation handlers take turns, even before the order has a reservation row", async () => {
      const db = await open("reservation-turns", productMigrations);
      const products = createProductStore();
      const store = createReservationStore();
      await db.transaction((tx) => products.insert(tx, product(1, { stock: 5 })));
      // A reservation and a cancellation of one order, started together: whichever reads second sees the other's decision.
      // The cancellation reads first (the reservation starts once its read returned) and decides a moment later.
      let cancelRead!: () => void;
      const cancelHasRead = new Promise<void>((r) => (cancelRead = r));
      const cancelled = db.transaction(async (tx) => {
        const seen = await store.get(tx, id(600));
        cancelRead();
        await new Promise((r) => setTimeout(r, 100));
        if (!seen) await store.put(tx, { orderId: id(600), linesVersion: 0, status: "released", lines: [] }, 1);
      });
      await cancelHasRead;
      const reserved = db.transaction(async (tx) => {
        if ((await store.get(tx, id(600)))?.status === "released") return;
        await store.moveStock(tx, [{ productId: id(1), quantity: 2 }], -1, 2);
        await store.put(tx, { orderId: id(600), linesVersion: 1, status: "reserved", lines: [{ productId: id(1), quantity: 2 }] }, 2);
      });
      await Promise.all([cancelled, reserved]);
      expect((await db.transaction((tx) => store.get(tx, id(600))))!.status).toBe("released");
      expect(await products.get(db, id(1))).toMatchObject({ stock: 5, reserved: 0 });
    });

    it("finds the reservations holding stock for orders the order database does not have, a page at a time", async () => {
      const products = await open("orphans-products", productMigrations);
      const orders = await open("orphans-orders", orderMigrations);
      const reservations = createReservationStore();
      const orderStore = createOrderStore();
      await products.transaction(async (tx) => {
        await createProductStore().insert(tx, product(1, { stock: 50 }));
        // Orders 1 to 7 reserved, 8 failed, 9 released; the order database has 2, 4 and 6 of them.
        for (const n of [1, 2, 3, 4, 5, 6, 7]) await reservations.put(tx, { orderId: id(1000 + n), linesVersion: n, status: "reserved", lines: [{ productId: id(1), quantity: n }] }, 100 + n);
        await reservations.put(tx, { orderId: id(1008), linesVersion: 1, status: "failed", lines: [] }, 108);
        await reservations.put(tx, { orderId: id(1009), linesVersion: 1, status: "released", lines: [] }, 109);
      });
      await orders.transaction(async (tx) => {
        for (const n of [2, 4, 6, 8]) await orderStore.insert(tx, order(n));
      });
      for (const pageSize of [2, 3, 500]) {
        const found = await findOrphanedReservations(products, orders, pageSize);
        expect({ checked: found.checked, known: found.known }).toEqual({ checked: 7, known: 3 });
        expect(found.orphaned).toEqual([1, 3, 5, 7].map((n) => ({ orderId: id(1000 + n), linesVersion: n, lines: [{ productId: id(1), quantity: n }], updatedAt: 100 + n })));
      }
      expect(await findOrphanedReservations(await open("orphans-none", productMigrations), orders)).toEqual({ checked: 0, known: 0, orphaned: [] });
    });

    it("finds the orders whose stock the product database does not hold as they say, orders read first, a page at a time, those changed after the given time left out", async () => {
      const products = await open("not-held-products", productMigrations);
      const orders = await open("not-held-orders", orderMigrations);
      const reservations = createReservationStore();
      const orderStore = createOrderStore();
      const units = [{ productId: id(1), quantity: 2 }];
      const t = 1_700_000_000_000;
      // n: the order (state, lines version, last change) and the product database's record of it, if any.
      const cases: Array<[number, Partial<OrderRecord>, { status: "reserved" | "failed" | "released"; linesVersion: number } | undefined]> = [
        [1, { state: "CONFIRMED" }, { status: "reserved", linesVersion: 1 }],
        [2, { state: "CONFIRMED" }, undefined],
        [3, { state: "PENDING" }, undefined],
        [4, { state: "PENDING", updatedAt: t + 10, pendingSince: t + 10 }, undefined],
        [5, { state: "CONFIRMED", linesVersion: 3 }, { status: "reserved", linesVersion: 2 }],
        [6, { state: "CONFIRMED", linesVersion: 2 }, { status: "reserved", linesVersion: 3 }],
        [7, { state: "CONFIRMED" }, { status: "failed", linesVersion: 1 }],
        [8, { state: "PENDING" }, { status: "failed", linesVersion: 1 }],
        [9, { state: "CONFIRMED" }, { status: "released", linesVersion: Number.MAX_SAFE_INTEGER }],
        [10, { state: "CANCELLED" }, { status: "reserved", linesVersion: 1 }],
        [11, { state: "REJECTED", linesVersion: 2 }, { status: "reserved", linesVersion: 1 }],
        [12, { state: "CANCELLED" }, undefined],
        [13, { state: "REJECTED" }, { status: "failed", linesVersion: 1 }],
        [14, { state: "CANCELLED" }, { status: "released", linesVersion: Number.MAX_SAFE_INTEGER }],
        [15, { state: "PENDING", linesVersion: 2 }, { status: "failed", linesVersion: 1 }],
      ];
      await orders.transaction(async (tx) => {
        for (const [n, overrides] of cases) await orderStore.insert(tx, order(n, overrides));
      });
      await products.transaction(async (tx) => {
        for (const [n, , r] of cases) if (r) await reservations.put(tx, { orderId: id(1000 + n), ...r, lines: r.status === "failed" ? [] : units }, t);
      });
      const expected = [
        [2, "unreserved", "reserve"],
        [3, "unreserved", "reserve"],
        [5, "lines-version", "reserve"],
        [6, "lines-version", undefined],
        [7, "refused", undefined],
        [9, "released", undefined],
        [10, "held", "release"],
        [11, "held", "release"],
        [15, "lines-version", "reserve"],
      ];
      for (const pageSize of [2, 5, 500]) {
        const found = await findOrdersNotHeld(orders, products, t + 5, pageSize);
        expect({ checked: found.checked, recent: found.recent }).toEqual({ checked: cases.length, recent: 1 });
        expect(found.found.map((f) => [Number(f.order.id.slice(-4)) - 1000, f.problem, f.remedy])).toEqual(expected);
        expect(found.found[0]).toEqual({ order: order(2, { state: "CONFIRMED" }), problem: "unreserved", reservation: undefined, remedy: "reserve" });
        expect(found.found[2].reservation).toEqual({ orderId: id(1005), linesVersion: 2, status: "reserved", lines: units });
      }
      // Once its time has come, the young PENDING order is judged too.
      expect((await findOrdersNotHeld(orders, products, t + 10)).found.map((f) => f.order.id)).toContain(id(1004));
      expect(await findOrdersNotHeld(await open("not-held-none", orderMigrations), products, t)).toEqual({ checked: 0, recent: 0, found: [] });
    });

    it("keeps orders: insert, read, replace only at the expected version, one customer's pages", async () => {
      const db = await open("orders", orderMigrations);
      const store = createOrderStore();
      await db.transaction(async (tx) => {
        for (const n of [1, 2, 3]) await store.insert(tx, order(n, { customerId: n === 3 ? "c-2" : "c-1" }));
      });
      expect(await store.get(db, id(1001))).toEqual(order(1));
      const confirmed = { ...order(1), state: "CONFIRMED" as const, version: 2 };
      expect(await db.transaction((tx) => store.replace(tx, confirmed, 1))).toBe(true);
      expect(await db.transaction((tx) => store.replace(tx, confirmed, 1))).toBe(false);
      expect(await db.transaction((tx) => store.getForUpdate(tx, id(1001)))).toEqual(confirmed);
      const cancelled = { ...confirmed, state: "CANCELLED" as const, cancellationReason: "changed my mind", version: 3 };
      expect(await db.transaction((tx) => store.replace(tx, cancelled, 2))).toBe(true);
      expect(await store.get(db, id(1001))).toEqual(cancelled);
      expect((await store.listByCustomer(db, "c-1", "", 10)).map((o) => o.id)).toEqual([id(1001), id(1002)]);
      expect((await store.listByCustomer(db, "c-1", id(1001), 10)).map((o) => o.id)).toEqual([id(1002)]);
      expect(await store.listByCustomer(db, "c-9", "", 10)).toEqual([]);
      expect((await store.listByCustomer(db, "c-1", "", 10))[0]).toEqual(cancelled);
    });

    it("finds the PENDING orders that entered PENDING by a time, oldest first, a batch at a time after the last one read", async () => {
      const db = await open("orders-pending", orderMigrations);
      const store = createOrderStore();
      const t = 1_700_000_000_000;
      await db.transaction(async (tx) => {
        await store.insert(tx, order(1, { pendingSince: t + 30 }));
        await store.insert(tx, order(2, { pendingSince: t + 10 }));
        await store.insert(tx, order(3, { pendingSince: t + 10 }));
        await store.insert(tx, order(4, { pendingSince: t + 20, state: "CONFIRMED" }));
        await store.insert(tx, order(5, { pendingSince: t + 20, state: "CANCELLED" }));
        await store.insert(tx, order(6, { pendingSince: t + 50 }));
      });
      const ids = (orders: OrderRecord[]) => orders.map((o) => o.id);
      expect(ids(await store.listPendingSince(db, t + 30, undefined, 10))).toEqual([id(1002), id(1003), id(1001)]);
      expect(ids(await store.listPendingSince(db, t + 29, undefined, 10))).toEqual([id(1002), id(1003)]);
      expect(ids(await store.listPendingSince(db, t + 9, undefined, 10))).toEqual([]);
      const first = await store.listPendingSince(db, t + 60, undefined, 2);
      expect(ids(first)).toEqual([id(1002), id(1003)]);
      expect(ids(await store.listPendingSince(db, t + 60, first[1], 2))).toEqual([id(1001), id(1006)]);
      expect(ids(await store.listPendingSince(db, t + 60, { pendingSince: t + 10, id: id(1002) }, 10))).toEqual([id(1003), id(1001), id(1006)]);
      expect((await store.listPendingSince(db, t + 60, undefined, 10))[0]).toEqual(order(2, { pendingSince: t + 10 }));
      // What the order service's gauges read: the PENDING orders and since when the oldest is, as numbers on either store.
      expect(await store.pendingSummary(db)).toEqual({ count: 4, oldestPendingSince: t + 10 });
      const none = await open("orders-none-pending", orderMigrations);
      expect(await store.pendingSummary(none)).toEqual({ count: 0, oldestPendingSince: undefined });
    });

    it("gives orders stored before pending_since their last change as the time they entered PENDING, and one placed without it its insert's", async () => {
      const where = await location("orders-upgrade");
      const before = await openDatabase({ path: where, migrations: orderMigrations.filter((m) => m.id < "orders_0003") });
      // As an instance not yet upgraded writes them, without the column.
      const oldInsert = `INSERT INTO orders (id, customer_id, state, lines_json, currency, total_minor, shipping_json, rejection_reason, lines_version, version, created_at, updated_at)
        VALUES ($1, 'c-1', $2, '[]', 'EUR', 0, '{}', '', 1, 1, 5, $3)`;
      await before.transaction(async (tx) => {
        await tx.run(oldInsert, [id(1001), "PENDING", 1_700_000_000_000]);
        await tx.run(oldInsert, [id(1002), "CONFIRMED", 1_700_000_000_000]);
      });
      await before.close();
      const db = await openDatabase({ path: where, migrations: orderMigrations });
      opened.push(db);
      const store = createOrderStore();
      expect((await store.get(db, id(1001)))!.pendingSince).toBe(1_700_000_000_000);
      // Nothing on record says why an order stored before orders_0004 was cancelled.
      expect((await store.get(db, id(1002)))!.cancellationReason).toBe("");
      expect((await store.listPendingSince(db, 1_800_000_000_000, undefined, 10)).map((o) => o.id)).toEqual([id(1001)]);
      if (kind === "postgres") {
        const placed = Date.now();
        await db.transaction((tx) => tx.run(oldInsert, [id(1003), "PENDING", placed]));
        expect(Math.abs((await store.get(db, id(1003)))!.pendingSince - placed)).toBeLessThan(5_000);
      }
    });

    it("keeps the catalogue copy at the newest version it has seen", async () => {
      const db = await open("catalog", orderMigrations);
      const catalog = createCatalogStore();
      const entry = (version: number, priceMinor: number) => ({ id: id(1), name: "Teapot", currency: "EUR", priceMinor, version });
      for (const e of [entry(1, 100), entry(3, 300), entry(2, 200), entry(3, 1)]) await db.transaction((tx) => catalog.upsert(tx, e));
      expect([...(await catalog.getMany(db, [id(1), id(2)])).values()]).toEqual([{ id: id(1), name: "Teapot", currency: "EUR", priceMinor: 300 }]);
    });

    it("keeps the outbox: events staged with their transaction, read in seq order, removed, parked and put back", async () => {
      const db = await open("outbox", eventMigrations);
      const sample = sampleStream("stores");
      const outbox = createOutbox({ db, source: "things" });
      const store = createOutboxStore(db);
      const added = await db.transaction(async (tx) => [1, 2, 3].map((n) => outbox.add(tx, sample.event, { thingId: `t-${n}`, note: "" })));
      await expect(db.transaction(async (tx) => {
        outbox.add(tx, sample.event, { thingId: "t-lost", note: "" });
        throw new Error("rolled back");
      })).rejects.toThrow("rolled back");
      expect(await outbox.pending()).toBe(3);
      const rows = await store.after(0, 10);
      expect(rows.map((r) => r.eventId)).toEqual(added);
      expect(rows.map((r) => r.seq)).toEqual([...rows.map((r) => r.seq)].sort((a, b) => a - b));
      expect(Buffer.from(rows[0].headers).toString()).toContain(`ce-id: ${added[0]}`);
      expect(await store.lastSeq()).toBe(rows[2].seq);
      await store.remove([rows[0].seq]);
      expect(await store.anyUpTo(rows[0].seq)).toBe(false);
      expect(await store.anyUpTo(rows[1].seq)).toBe(true);
      await store.park(rows[1], "too large");
      expect((await parkedEvents(db)).map((p) => [p.eventId, p.reason])).toEqual([[added[1], "too large"]]);
      expect(await retryParked(db, [added[1]])).toBe(1);
      expect((await store.after(0, 10)).map((r) => r.eventId)).toEqual([added[2], added[1]]);
      expect(await parkedEvents(db)).toEqual([]);
    });

    it("claims an event once per consumer in the inbox, and only when its transaction commits", async () => {
      const db = await open("inbox", eventMigrations);
      const inbox = createInbox();
      expect(await db.transaction((tx) => inbox.claim(tx, "c", "e-1"))).toBe(true);
      expect(await db.transaction((tx) => inbox.claim(tx, "c", "e-1"))).toBe(false);
      await expect(db.transaction(async (tx) => {
        await inbox.claim(tx, "c", "e-2");
        throw new Error("handler failed");
      })).rejects.toThrow("handler failed");
      expect(await db.transaction((tx) => inbox.claim(tx, "c", "e-2"))).toBe(true);
      // Two transactions claiming one event at once: one wins, the other sees it processed.
      const both = await Promise.all([1, 2].map(() => db.transaction((tx) => inbox.claim(tx, "c", "e-3"))));
      expect(both.sort()).toEqual([false, true]);
    });

    it("gives up a transaction whose caller cancelled while it waited for its turn, and asks for a lazy signal only when it has to wait", async () => {
      const db = await openDatabase({ path: await location("turns"), migrations: [], poolSize: 1 });
      opened.push(db);
      let asked = 0;
      const lazy = (signal: AbortSignal) => () => {
        asked++;
        return signal;
      };
      expect(await db.transaction(async () => 1, { signal: lazy(new AbortController().signal) })).toBe(1);
      // SQLite starts a transaction with nothing ahead of it before any I/O; Postgres may wait for a connection.
      if (kind === "sqlite") expect(asked).toBe(0);
      let release!: () => void;
      let holds!: () => void;
      const started = new Promise<void>((resolve) => (holds = resolve));
      const holding = db.transaction(
        () =>
          new Promise<void>((resolve) => {
            release = resolve;
            holds();
          }),
      );
      await started;
      const caller = new AbortController();
      let ran = false;
      const waiting = db.transaction(
        async () => {
          ran = true;
        },
        { signal: lazy(caller.signal) },
      );
      const refused = expect(waiting).rejects.toThrow("the caller went away");
      caller.abort(new Error("the caller went away"));
      release();
      await holding;
      await refused;
      expect(ran).toBe(false);
      expect(asked).toBeGreaterThan(0);
      expect(await db.transaction(async () => 2, { signal: lazy(new AbortController().signal) })).toBe(2);
      // A signal given as it is is checked even with nothing ahead.
      const gone = new AbortController();
      gone.abort(new Error("the caller had gone"));
      let ranGone = false;
      await expect(
        db.transaction(
          async () => {
            ranGone = true;
          },
          { signal: gone.signal },
        ),
      ).rejects.toThrow("the caller had gone");
      expect(ranGone).toBe(false);
    });

    it("returns the first response for a repeated request id, even when the two calls come at once", async () => {
      const db = await open("request-ids", requestIdMigrations);
      const ids = createRequestIds();
      const codec = { encode: (n: number) => ({ finish: () => Uint8Array.of(n) }), decode: (b: Uint8Array) => b[0] };
      const call = { method: "/shop.test.v1.Things/Make", requestDigest: Uint8Array.of(1), principal: { subject: "alice" } };
      let runs = 0;
      const results = await Promise.all(
        [7, 8, 9].map((n) =>
          db.transaction((tx) =>
            ids.once(tx, call, "r-1", codec, async () => {
              runs++;
              return n;
            }),
          ),
        ),
      );
      expect(runs).toBe(1);
      expect(new Set(results).size).toBe(1);
    });

    it("keeps each caller's request ids apart, and finds a call stored before ids were their callers' by its retry with a token", async () => {
      const where = await location("request-ids-by-caller");
      const codec = { encode: (n: number) => ({ finish: () => Uint8Array.of(n) }), decode: (b: Uint8Array) => b[0] };
      const method = "/shop.test.v1.Things/Make";
      const before = await openDatabase({ path: where, migrations: requestIdMigrations.slice(0, 2) });
      await before.run("INSERT INTO request_ids (method, request_id, digest, response, created_at) VALUES ($1, $2, $3, $4, $5)", [method, "r-old", Uint8Array.of(1), Uint8Array.of(7), Date.now()]);
      await before.close();
      const db = await openDatabase({ path: where, migrations: requestIdMigrations });
      opened.push(db);
      const ids = createRequestIds();
      const runs: string[] = [];
      const make = (subject: string | undefined, digest: number, id: string, result: number) =>
        db.transaction((tx) => ids.once(tx, { method, requestDigest: Uint8Array.of(digest), principal: { subject } }, id, codec, async () => (runs.push(`${subject} ${id}`), result)));
      expect(await make("alice", 1, "r-old", 8)).toBe(7);
      expect(await make("bob", 2, "r-old", 9)).toBe(9);
      expect(await make("alice", 1, "r-new", 10)).toBe(10);
      expect(await make("bob", 2, "r-new", 11)).toBe(11);
      expect(await make("alice", 1, "r-new", 12)).toBe(10);
      expect(await make("bob", 2, "r-new", 13)).toBe(11);
      await expect(make("alice", 2, "r-new", 14)).rejects.toMatchObject({ code: 6 });
      expect(runs).toEqual(["bob r-old", "alice r-new", "bob r-new"]);
      // Two callers' calls with one id at once: each runs once.
      const both = await Promise.all(["carol", "dave", "carol", "dave"].map((subject, i) => make(subject, 3, "r-both", 20 + i)));
      expect(both[0]).toBe(both[2]);
      expect(both[1]).toBe(both[3]);
      expect(runs.filter((r) => r.endsWith("r-both")).sort()).toEqual(["carol r-both", "dave r-both"]);
    });
  });
}
