import type { Transaction } from "../../../platform/sql/index.js";
import type { ReservationRecord, ReservedUnits } from "../domain/reservation.js";

/**
 * Reservations and the stock moves they make, inside the event handler's
 * transaction, so stock, reservation, inbox row and reply event commit
 * together.
 */
export interface ReservationStore {
  /**
   * The order's reservation, if any, with the order locked until the
   * transaction ends (even when it has no reservation yet), so handlers of
   * the same order on several instances take turns rather than overwrite
   * each other's decision.
   */
  get(tx: Transaction, orderId: string): Promise<ReservationRecord | undefined>;
  put(tx: Transaction, record: ReservationRecord, now: number): Promise<void>;
  /**
   * Stock on hand of each product that exists among `productIds`, their rows
   * locked until the transaction ends (Postgres; in id order, so two
   * reservations of the same products never wait on each other in a circle).
   */
  stockOf(tx: Transaction, productIds: readonly string[]): Promise<Map<string, number>>;
  /**
   * Moves `delta` units between a product's stock and the units it holds for
   * orders (negative: reserve, positive: release) and raises its stock
   * version. The table's CHECKs refuse a negative result.
   */
  moveStock(tx: Transaction, productId: string, delta: number, now: number): Promise<void>;
}

interface Row {
  order_id: string;
  lines_version: number;
  status: string;
  lines_json: string;
}

export function createReservationStore(): ReservationStore {
  return {
    async get(tx, orderId) {
      // Held until the transaction ends: the order's events, taken by different instances at once, take turns.
      await tx.lock(`reservation ${orderId}`);
      const [row] = await tx.query<Row>("SELECT order_id, lines_version, status, lines_json FROM reservations WHERE order_id = $1", [orderId]);
      return row && { orderId: row.order_id, linesVersion: Number(row.lines_version), status: row.status as ReservationRecord["status"], lines: JSON.parse(row.lines_json) as ReservedUnits[] };
    },
    async put(tx, r, now) {
      await tx.run(
        `INSERT INTO reservations (order_id, lines_version, status, lines_json, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (order_id) DO UPDATE SET lines_version = excluded.lines_version, status = excluded.status,
           lines_json = excluded.lines_json, updated_at = excluded.updated_at`,
        [r.orderId, r.linesVersion, r.status, JSON.stringify(r.lines), now],
      );
    },
    async stockOf(tx, productIds) {
      const ids = [...new Set(productIds)].sort();
      const rows = await tx.query<{ id: string; stock: number }>(`SELECT id, stock FROM products WHERE id ${tx.dialect.anyOf("$1")} ORDER BY id${tx.dialect.forUpdate}`, [ids]);
      return new Map(rows.map((r) => [r.id, Number(r.stock)]));
    },
    async moveStock(tx, productId, delta, now) {
      const changed = await tx.run("UPDATE products SET stock = stock + $1, reserved = reserved - $1, stock_version = stock_version + 1, updated_at = $2 WHERE id = $3", [delta, now, productId]);
      if (changed !== 1) throw new Error(`product ${productId} vanished while moving its stock`);
    },
  };
}
