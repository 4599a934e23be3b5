import type { Database } from "../../../platform/sql/index.js";
import type { ReservationRecord } from "../domain/reservation.js";

/**
 * Reservations and the stock moves they make. Synchronous; used inside the
 * event handler's transaction, so stock, reservation, inbox row and reply
 * event commit together.
 */
export interface ReservationStore {
  get(orderId: string): ReservationRecord | undefined;
  put(record: ReservationRecord, now: number): void;
  /** Stock on hand of a product; undefined when it does not exist. */
  stockOf(productId: string): number | undefined;
  /**
   * Moves `delta` units between a product's stock and the units it holds for
   * orders (negative: reserve, positive: release) and raises its stock
   * version. The table's CHECKs refuse a negative result.
   */
  moveStock(productId: string, delta: number, now: number): void;
}

export function createReservationStore(db: Database): ReservationStore {
  const s = db.sqlite;
  const get = s.prepare<[string], { order_id: string; lines_version: number; status: string; lines_json: string }>("SELECT * FROM reservations WHERE order_id = ?");
  const put = s.prepare(
    `INSERT INTO reservations (order_id, lines_version, status, lines_json, updated_at) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (order_id) DO UPDATE SET lines_version = excluded.lines_version, status = excluded.status,
       lines_json = excluded.lines_json, updated_at = excluded.updated_at`,
  );
  const stockOf = s.prepare<[string], number>("SELECT stock FROM products WHERE id = ?").pluck();
  const moveStock = s.prepare("UPDATE products SET stock = stock + @delta, reserved = reserved - @delta, stock_version = stock_version + 1, updated_at = @now WHERE id = @productId");
  return {
    get(orderId) {
      const row = get.get(orderId);
      return row && { orderId: row.order_id, linesVersion: row.lines_version, status: row.status as ReservationRecord["status"], lines: JSON.parse(row.lines_json) };
    },
    put: (r, now) => void put.run(r.orderId, r.linesVersion, r.status, JSON.stringify(r.lines), now),
    stockOf: (productId) => stockOf.get(productId),
    moveStock(productId, delta, now) {
      if (moveStock.run({ delta, now, productId }).changes !== 1) throw new Error(`product ${productId} vanished while moving its stock`);
    },
  };
}
