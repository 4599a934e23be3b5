import type { Database } from "../../../platform/sql/index.js";
import type { ProductQuote } from "../domain/order.js";

/** One product as the order service's catalogue keeps it, with the product service's version of it. */
export interface CatalogEntry extends ProductQuote {
  readonly version: number;
}

/**
 * The order service's own copy of the product catalogue: the name and price
 * of each product it has heard of, so an order is priced without asking the
 * product service. Fed by ProductCreated and ProductUpdated, and by lookups
 * of products it did not know yet. Methods are synchronous and join the
 * caller's transaction.
 */
export interface CatalogStore {
  /**
   * Stores `entry` unless a version at least as new is already stored: an
   * older event arriving late, or one replayed, changes nothing.
   */
  upsert(entry: CatalogEntry): void;
  /** Quotes for the ids the catalogue knows; unknown ids are left out. */
  getMany(ids: readonly string[]): Map<string, ProductQuote>;
}

interface Row {
  product_id: string;
  name: string;
  currency: string;
  price_minor: number;
}

/** The catalogue over the order service's database (migration orders_0002_product_catalog); statements are prepared once. */
export function createCatalogStore(db: Database): CatalogStore {
  const s = db.sqlite;
  const upsert = s.prepare(
    `INSERT INTO product_catalog (product_id, name, currency, price_minor, version) VALUES (@id, @name, @currency, @priceMinor, @version)
     ON CONFLICT (product_id) DO UPDATE SET name = excluded.name, currency = excluded.currency, price_minor = excluded.price_minor, version = excluded.version
     WHERE excluded.version > product_catalog.version`,
  );
  // One statement for any number of ids: they travel as a JSON array.
  const getMany = s.prepare<[string], Row>(
    "SELECT product_id, name, currency, price_minor FROM product_catalog WHERE product_id IN (SELECT value FROM json_each(?))",
  );
  return {
    upsert: ({ id, name, currency, priceMinor, version }) => void upsert.run({ id, name, currency, priceMinor, version }),
    getMany(ids) {
      const quotes = new Map<string, ProductQuote>();
      if (ids.length === 0) return quotes;
      for (const r of getMany.all(JSON.stringify(ids))) quotes.set(r.product_id, { id: r.product_id, name: r.name, currency: r.currency, priceMinor: r.price_minor });
      return quotes;
    },
  };
}
