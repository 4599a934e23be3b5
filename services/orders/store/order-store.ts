import type { Database } from "../../../platform/sql/index.js";
import type { OrderRecord, OrderState } from "../domain/order.js";

/**
 * Order queries. Methods are synchronous and join the caller's transaction,
 * so a change and the events it emits commit together.
 */
export interface OrderStore {
  insert(order: OrderRecord): void;
  get(id: string): OrderRecord | undefined;
  /** Writes `next` if the stored version is still `expectedVersion`; false otherwise. */
  replace(next: OrderRecord, expectedVersion: number): boolean;
  /** Up to `limit` of one customer's orders with ids after `afterId`, in id order. */
  listByCustomer(customerId: string, afterId: string, limit: number): OrderRecord[];
}

interface Row {
  id: string;
  customer_id: string;
  state: string;
  lines_json: string;
  currency: string;
  total_minor: number;
  shipping_json: string;
  rejection_reason: string;
  lines_version: number;
  version: number;
  created_at: number;
  updated_at: number;
}

const fromRow = (r: Row): OrderRecord => ({
  id: r.id,
  customerId: r.customer_id,
  state: r.state as OrderState,
  lines: JSON.parse(r.lines_json),
  currency: r.currency,
  totalMinor: r.total_minor,
  shippingAddress: JSON.parse(r.shipping_json),
  rejectionReason: r.rejection_reason,
  linesVersion: r.lines_version,
  version: r.version,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

const toParams = (o: OrderRecord) => ({
  id: o.id,
  customerId: o.customerId,
  state: o.state,
  linesJson: JSON.stringify(o.lines),
  currency: o.currency,
  totalMinor: o.totalMinor,
  shippingJson: JSON.stringify(o.shippingAddress),
  rejectionReason: o.rejectionReason,
  linesVersion: o.linesVersion,
  version: o.version,
  createdAt: o.createdAt,
  updatedAt: o.updatedAt,
});

export function createOrderStore(db: Database): OrderStore {
  const s = db.sqlite;
  const insert = s.prepare(
    `INSERT INTO orders (id, customer_id, state, lines_json, currency, total_minor, shipping_json, rejection_reason, lines_version, version, created_at, updated_at)
     VALUES (@id, @customerId, @state, @linesJson, @currency, @totalMinor, @shippingJson, @rejectionReason, @linesVersion, @version, @createdAt, @updatedAt)`,
  );
  const get = s.prepare<[string], Row>("SELECT * FROM orders WHERE id = ?");
  const replace = s.prepare(
    `UPDATE orders SET state = @state, lines_json = @linesJson, currency = @currency, total_minor = @totalMinor,
       shipping_json = @shippingJson, rejection_reason = @rejectionReason, lines_version = @linesVersion,
       version = @version, updated_at = @updatedAt
     WHERE id = @id AND version = @expectedVersion`,
  );
  const list = s.prepare<[string, string, number], Row>("SELECT * FROM orders WHERE customer_id = ? AND id > ? ORDER BY id LIMIT ?");
  return {
    insert: (o) => void insert.run(toParams(o)),
    get: (id) => {
      const row = get.get(id);
      return row && fromRow(row);
    },
    replace: (next, expectedVersion) => replace.run({ ...toParams(next), expectedVersion }).changes === 1,
    listByCustomer: (customerId, afterId, limit) => list.all(customerId, afterId, limit).map(fromRow),
  };
}
