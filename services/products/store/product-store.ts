import type { Queryable, Transaction } from "../../../platform/sql/index.js";
import type { ProductRecord } from "../domain/product.js";

/**
 * Product queries. Writes take the transaction of the change they belong
 * to, so a change and the events it emits commit together; reads take the
 * database, or a transaction to see its own writes.
 */
export interface ProductStore {
  insert(tx: Transaction, product: ProductRecord): Promise<void>;
  get(q: Queryable, id: string): Promise<ProductRecord | undefined>;
  /** The product, its row locked until `tx` ends (Postgres): for a change that reads it first. */
  getForUpdate(tx: Transaction, id: string): Promise<ProductRecord | undefined>;
  /** The products among `ids` that exist, in the order of `ids`. */
  getMany(q: Queryable, ids: readonly string[]): Promise<ProductRecord[]>;
  /** Writes the catalogue fields of `next` if the stored version is still `expectedVersion`; false otherwise. Stock is left alone. */
  replace(tx: Transaction, next: ProductRecord, expectedVersion: number): Promise<boolean>;
  /** Up to `limit` products with ids after `afterId`, in id order. */
  list(q: Queryable, afterId: string, limit: number): Promise<ProductRecord[]>;
  /** Sets stock and its version, recording why. */
  setStock(tx: Transaction, product: ProductRecord, delta: number, reason: string): Promise<void>;
}

interface Row {
  id: string;
  name: string;
  description: string;
  price_minor: number;
  currency: string;
  stock: number;
  reserved: number;
  version: number;
  stock_version: number;
  created_at: number;
  updated_at: number;
}

const columns = "id, name, description, price_minor, currency, stock, reserved, version, stock_version, created_at, updated_at";

const fromRow = (r: Row): ProductRecord => ({
  id: r.id,
  name: r.name,
  description: r.description,
  priceMinor: Number(r.price_minor),
  currency: r.currency,
  stock: Number(r.stock),
  reserved: Number(r.reserved),
  version: Number(r.version),
  stockVersion: Number(r.stock_version),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

export function createProductStore(): ProductStore {
  return {
    async insert(tx, p) {
      await tx.run(`INSERT INTO products (${columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`, [
        p.id,
        p.name,
        p.description,
        p.priceMinor,
        p.currency,
        p.stock,
        p.reserved,
        p.version,
        p.stockVersion,
        p.createdAt,
        p.updatedAt,
      ]);
    },
    async get(q, id) {
      const [row] = await q.query<Row>(`SELECT ${columns} FROM products WHERE id = $1`, [id]);
      return row && fromRow(row);
    },
    async getForUpdate(tx, id) {
      const [row] = await tx.query<Row>(`SELECT ${columns} FROM products WHERE id = $1${tx.dialect.forUpdate}`, [id]);
      return row && fromRow(row);
    },
    async getMany(q, ids) {
      if (ids.length === 0) return [];
      const rows = await q.query<Row>(`SELECT ${columns} FROM products WHERE id ${q.dialect.anyOf("$1")}`, [ids]);
      const byId = new Map(rows.map((r) => [r.id, fromRow(r)]));
      return ids.flatMap((id) => byId.get(id) ?? []);
    },
    async replace(tx, next, expectedVersion) {
      const changed = await tx.run(
        "UPDATE products SET name = $1, description = $2, price_minor = $3, currency = $4, version = $5, updated_at = $6 WHERE id = $7 AND version = $8",
        [next.name, next.description, next.priceMinor, next.currency, next.version, next.updatedAt, next.id, expectedVersion],
      );
      return changed === 1;
    },
    async list(q, afterId, limit) {
      return (await q.query<Row>(`SELECT ${columns} FROM products WHERE id > $1 ORDER BY id LIMIT $2`, [afterId, limit])).map(fromRow);
    },
    async setStock(tx, p, delta, reason) {
      await tx.run("UPDATE products SET stock = $1, stock_version = $2, updated_at = $3 WHERE id = $4", [p.stock, p.stockVersion, p.updatedAt, p.id]);
      await tx.run("INSERT INTO stock_adjustments (product_id, delta, reason, stock_after, created_at) VALUES ($1, $2, $3, $4, $5)", [p.id, delta, reason, p.stock, p.updatedAt]);
    },
  };
}
