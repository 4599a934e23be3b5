import type { Database } from "../../../platform/sql/index.js";
import type { ProductRecord } from "../domain/product.js";

/**
 * Product queries. Methods are synchronous and join the caller's
 * transaction, so a change and the events it emits commit together.
 */
export interface ProductStore {
  insert(product: ProductRecord): void;
  get(id: string): ProductRecord | undefined;
  /** The products among `ids` that exist, in the order of `ids`. */
  getMany(ids: readonly string[]): ProductRecord[];
  /** Writes the catalogue fields of `next` if the stored version is still `expectedVersion`; false otherwise. Stock is left alone. */
  replace(next: ProductRecord, expectedVersion: number): boolean;
  /** Up to `limit` products with ids after `afterId`, in id order. */
  list(afterId: string, limit: number): ProductRecord[];
  /** Sets stock and its version, recording why. */
  setStock(id: string, stock: number, stockVersion: number, updatedAt: number, delta: number, reason: string): void;
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

const fromRow = (r: Row): ProductRecord => ({
  id: r.id,
  name: r.name,
  description: r.description,
  priceMinor: r.price_minor,
  currency: r.currency,
  stock: r.stock,
  reserved: r.reserved,
  version: r.version,
  stockVersion: r.stock_version,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export function createProductStore(db: Database): ProductStore {
  const s = db.sqlite;
  const insert = s.prepare(
    `INSERT INTO products (id, name, description, price_minor, currency, stock, reserved, version, stock_version, created_at, updated_at)
     VALUES (@id, @name, @description, @priceMinor, @currency, @stock, @reserved, @version, @stockVersion, @createdAt, @updatedAt)`,
  );
  const get = s.prepare<[string], Row>("SELECT * FROM products WHERE id = ?");
  // One statement for any number of ids: they travel as a JSON array.
  const getMany = s.prepare<[string], Row>("SELECT p.* FROM json_each(?) AS wanted JOIN products AS p ON p.id = wanted.value ORDER BY wanted.key");
  const replace = s.prepare(
    `UPDATE products SET name = @name, description = @description, price_minor = @priceMinor, currency = @currency,
       version = @version, updated_at = @updatedAt
     WHERE id = @id AND version = @expectedVersion`,
  );
  const list = s.prepare<[string, number], Row>("SELECT * FROM products WHERE id > ? ORDER BY id LIMIT ?");
  const setStock = s.prepare("UPDATE products SET stock = ?, stock_version = ?, updated_at = ? WHERE id = ?");
  const logAdjustment = s.prepare("INSERT INTO stock_adjustments (product_id, delta, reason, stock_after, created_at) VALUES (?, ?, ?, ?, ?)");
  return {
    insert: (p) => void insert.run(p),
    get: (id) => {
      const row = get.get(id);
      return row && fromRow(row);
    },
    getMany: (ids) => getMany.all(JSON.stringify(ids)).map(fromRow),
    replace: (next, expectedVersion) => replace.run({ ...next, expectedVersion }).changes === 1,
    list: (afterId, limit) => list.all(afterId, limit).map(fromRow),
    setStock: (id, stock, stockVersion, updatedAt, delta, reason) => {
      setStock.run(stock, stockVersion, updatedAt, id);
      logAdjustment.run(id, delta, reason, stock, updatedAt);
    },
  };
}
