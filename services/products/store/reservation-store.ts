import { type Queryable, sendAhead, type SqlValue, type Transaction } from "../../../platform/sql/index.js";
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
  /**
   * Writes the order's reservation. Sent ahead of the transaction's next
   * statement (see sendAhead): its failure may be that statement's, or the
   * commit's.
   */
  put(tx: Transaction, record: ReservationRecord, now: number): Promise<void>;
  /**
   * Stock on hand of each product that exists among `productIds`, their rows
   * locked until the transaction ends (Postgres; in id order, so two
   * reservations of the same products never wait on each other in a circle).
   */
  stockOf(tx: Transaction, productIds: readonly string[]): Promise<Map<string, number>>;
  /** The products whose units the orders among `orderIds` hold now (their reservations' lines), without locking anything. */
  heldProducts(tx: Transaction, orderIds: readonly string[]): Promise<string[]>;
  /**
   * Moves each line's `quantity` units between its product's stock and the
   * units it holds for orders (`sign` -1: reserve, 1: release) and raises the
   * product's stock version once per line, in one statement. The table's
   * CHECKs refuse a negative result, and a product missing fails it. Sent
   * ahead of the transaction's next statement, like `put`: the products'
   * rows are locked by `stockOf` first, in every caller.
   */
  moveStock(tx: Transaction, lines: readonly ReservedUnits[], sign: 1 | -1, now: number): Promise<void>;
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
      await sendAhead(
        tx,
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
    async heldProducts(tx, orderIds) {
      const rows = await tx.query<{ lines_json: string }>(`SELECT lines_json FROM reservations WHERE order_id ${tx.dialect.anyOf("$1")} AND status = 'reserved'`, [[...new Set(orderIds)]]);
      return rows.flatMap((r) => (JSON.parse(r.lines_json) as ReservedUnits[]).map((l) => l.productId));
    },
    async moveStock(tx, lines, sign, now) {
      const moves = new Map<string, { units: number; lines: number }>();
      for (const { productId, quantity } of lines) {
        const move = moves.get(productId) ?? { units: 0, lines: 0 };
        moves.set(productId, { units: move.units + sign * quantity, lines: move.lines + 1 });
      }
      if (moves.size === 0) return;
      const params: SqlValue[] = [now];
      const units: string[] = [];
      const versions: string[] = [];
      const ids: string[] = [];
      for (const [productId, move] of moves) {
        const id = `$${params.push(productId)}`;
        units.push(`WHEN ${id} THEN CAST($${params.push(move.units)} AS INTEGER)`);
        versions.push(`WHEN ${id} THEN CAST($${params.push(move.lines)} AS INTEGER)`);
        ids.push(id);
      }
      const delta = `CASE id ${units.join(" ")} END`;
      await sendAhead(
        tx,
        `UPDATE products SET stock = stock + ${delta}, reserved = reserved - ${delta}, stock_version = stock_version + CASE id ${versions.join(" ")} END, updated_at = $1 WHERE id IN (${ids.join(", ")})`,
        params,
        { rows: moves.size, error: (changed) => new Error(`${moves.size - changed} of the products ${[...moves.keys()].join(", ")} vanished while moving their stock`) },
      );
    },
  };
}

/** A reservation holding stock, as `heldReservations` reads it. */
export interface HeldReservation {
  readonly orderId: string;
  readonly linesVersion: number;
  readonly lines: readonly ReservedUnits[];
  /** When it was last written (ms since the epoch). */
  readonly updatedAt: number;
}

/**
 * Up to `limit` reservations holding stock whose order id sorts after
 * `afterOrderId` ("" for the first), in order id order, locking nothing:
 * a page of them, for a tool reading the database beside the service.
 */
export async function heldReservations(q: Queryable, afterOrderId: string, limit: number): Promise<HeldReservation[]> {
  const rows = await q.query<Row & { updated_at: number | string }>(
    "SELECT order_id, lines_version, status, lines_json, updated_at FROM reservations WHERE status = 'reserved' AND order_id > $1 ORDER BY order_id LIMIT $2",
    [afterOrderId, limit],
  );
  return rows.map((r) => ({ orderId: r.order_id, linesVersion: Number(r.lines_version), lines: JSON.parse(r.lines_json) as ReservedUnits[], updatedAt: Number(r.updated_at) }));
}

/**
 * The reservation records, whatever their status, of those of `orderIds`
 * that have one, by order id, read in one statement locking nothing
 * (callers bound how many): for a tool reading the database beside the
 * service.
 */
export async function reservationsOf(q: Queryable, orderIds: readonly string[]): Promise<Map<string, ReservationRecord>> {
  if (orderIds.length === 0) return new Map();
  const rows = await q.query<Row>(`SELECT order_id, lines_version, status, lines_json FROM reservations WHERE order_id ${q.dialect.anyOf("$1")}`, [[...new Set(orderIds)]]);
  return new Map(rows.map((r) => [r.order_id, { orderId: r.order_id, linesVersion: Number(r.lines_version), status: r.status as ReservationRecord["status"], lines: JSON.parse(r.lines_json) as ReservedUnits[] }]));
}
