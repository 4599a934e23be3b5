import { type Queryable, sendAhead, type Transaction } from "../../../platform/sql/index.js";
import type { OrderRecord, OrderState } from "../domain/order.js";

/**
 * Order queries. Writes take the transaction of the change they belong to,
 * so a change and the events it emits commit together; reads take the
 * database, or a transaction to see its own writes.
 */
export interface OrderStore {
  /** Adds the order, sent ahead of the transaction's next statement or its commit (see sendAhead), which its failure fails. */
  insert(tx: Transaction, order: OrderRecord): Promise<void>;
  get(q: Queryable, id: string): Promise<OrderRecord | undefined>;
  /** The order, its row locked until `tx` ends (Postgres): for a change that reads it first. */
  getForUpdate(tx: Transaction, id: string): Promise<OrderRecord | undefined>;
  /** Writes `next` if the stored version is still `expectedVersion`; false otherwise. */
  replace(tx: Transaction, next: OrderRecord, expectedVersion: number): Promise<boolean>;
  /**
   * Writes `next` over the order `getForUpdate` locked in `tx`, sent ahead of
   * the transaction's next statement (see sendAhead): when the stored version
   * is not `expectedVersion`, the transaction fails at that statement or at
   * its commit.
   */
  replaceLocked(tx: Transaction, next: OrderRecord, expectedVersion: number): Promise<void>;
  /**
   * Up to `limit` PENDING orders that entered PENDING at or before `before`
   * (ms since the epoch), by when they did, then id, starting after `after`:
   * the orders whose saga has run out of time, a batch at a time.
   */
  listPendingSince(q: Queryable, before: number, after: PendingCursor | undefined, limit: number): Promise<OrderRecord[]>;
  /** How many orders are PENDING, and since when the oldest of them is (undefined when none is), through the index orders_pending. */
  pendingSummary(q: Queryable): Promise<{ readonly count: number; readonly oldestPendingSince: number | undefined }>;
  /** Up to `limit` of one customer's orders with ids after `afterId`, in id order. */
  listByCustomer(q: Queryable, customerId: string, afterId: string, limit: number): Promise<OrderRecord[]>;
}

/** Where a walk over PENDING orders (listPendingSince) got to: its last order's. */
export type PendingCursor = Pick<OrderRecord, "pendingSince" | "id">;

interface Row {
  id: string;
  customer_id: string;
  state: string;
  lines_json: string;
  currency: string;
  total_minor: number;
  shipping_json: string;
  rejection_reason: string;
  cancellation_reason: string;
  lines_version: number;
  pending_since: number;
  version: number;
  created_at: number;
  updated_at: number;
}

const columns =
  "id, customer_id, state, lines_json, currency, total_minor, shipping_json, rejection_reason, lines_version, pending_since, version, created_at, updated_at, cancellation_reason";

const fromRow = (r: Row): OrderRecord => ({
  id: r.id,
  customerId: r.customer_id,
  state: r.state as OrderState,
  lines: JSON.parse(r.lines_json),
  currency: r.currency,
  totalMinor: Number(r.total_minor),
  shippingAddress: JSON.parse(r.shipping_json),
  rejectionReason: r.rejection_reason,
  cancellationReason: r.cancellation_reason,
  linesVersion: Number(r.lines_version),
  pendingSince: Number(r.pending_since),
  version: Number(r.version),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

/** The values of `columns`, in order. */
const valuesOf = (o: OrderRecord) => [
  o.id,
  o.customerId,
  o.state,
  JSON.stringify(o.lines),
  o.currency,
  o.totalMinor,
  JSON.stringify(o.shippingAddress),
  o.rejectionReason,
  o.linesVersion,
  o.pendingSince,
  o.version,
  o.createdAt,
  o.updatedAt,
  o.cancellationReason,
];

const replaceSql = `UPDATE orders SET customer_id = $2, state = $3, lines_json = $4, currency = $5, total_minor = $6, shipping_json = $7,
    rejection_reason = $8, lines_version = $9, pending_since = $10, version = $11, created_at = $12, updated_at = $13, cancellation_reason = $14
  WHERE id = $1 AND version = $15`;

// The state is written out, not a parameter, so that the partial index orders_pending (state = 'PENDING') serves it.
const pendingSinceSql = `SELECT ${columns} FROM orders
  WHERE state = 'PENDING' AND pending_since <= $1 AND (pending_since, id) > ($2, $3)
  ORDER BY pending_since, id LIMIT $4`;

export function createOrderStore(): OrderStore {
  return {
    async insert(tx, o) {
      await sendAhead(tx, `INSERT INTO orders (${columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`, valuesOf(o));
    },
    async get(q, id) {
      const [row] = await q.query<Row>(`SELECT ${columns} FROM orders WHERE id = $1`, [id]);
      return row && fromRow(row);
    },
    async getForUpdate(tx, id) {
      const [row] = await tx.query<Row>(`SELECT ${columns} FROM orders WHERE id = $1${tx.dialect.forUpdate}`, [id]);
      return row && fromRow(row);
    },
    async replace(tx, next, expectedVersion) {
      return (await tx.run(replaceSql, [...valuesOf(next), expectedVersion])) === 1;
    },
    async replaceLocked(tx, next, expectedVersion) {
      await sendAhead(tx, replaceSql, [...valuesOf(next), expectedVersion], {
        rows: 1,
        error: () => new Error(`order ${next.id} changed while it was being written (its version is not ${expectedVersion})`),
      });
    },
    async listPendingSince(q, before, after, limit) {
      return (await q.query<Row>(pendingSinceSql, [before, after?.pendingSince ?? -1, after?.id ?? "", limit])).map(fromRow);
    },
    async pendingSummary(q) {
      const [row] = await q.query<{ n: number | string; oldest: number | string | null }>("SELECT count(*) AS n, min(pending_since) AS oldest FROM orders WHERE state = 'PENDING'");
      return { count: Number(row.n), oldestPendingSince: row.oldest === null ? undefined : Number(row.oldest) };
    },
    async listByCustomer(q, customerId, afterId, limit) {
      return (await q.query<Row>(`SELECT ${columns} FROM orders WHERE customer_id = $1 AND id > $2 ORDER BY id LIMIT $3`, [customerId, afterId, limit])).map(fromRow);
    },
  };
}

/** Which of `ids` name orders this database has, read in one statement (callers bound how many). */
export async function existingOrderIds(q: Queryable, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await q.query<{ id: string }>(`SELECT id FROM orders WHERE id ${q.dialect.anyOf("$1")}`, [[...new Set(ids)]]);
  return new Set(rows.map((r) => r.id));
}

/** Up to `limit` orders, any state, whose ids sort after `afterId` ("" for the first), in id order, locking nothing: a page of them, for a tool reading the database beside the service. */
export async function ordersAfter(q: Queryable, afterId: string, limit: number): Promise<OrderRecord[]> {
  return (await q.query<Row>(`SELECT ${columns} FROM orders WHERE id > $1 ORDER BY id LIMIT $2`, [afterId, limit])).map(fromRow);
}
