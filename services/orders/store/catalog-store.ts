import type { Queryable, Transaction } from "../../../platform/sql/index.js";
import type { ProductQuote } from "../domain/order.js";

/** One product as the order service's catalogue keeps it, with the product service's version of it. */
export interface CatalogEntry extends ProductQuote {
  readonly version: number;
}

/**
 * The order service's own copy of the product catalogue: the name and price
 * of each product it has heard of, so an order is priced without asking the
 * product service. Fed by ProductCreated and ProductUpdated, and by lookups
 * of products it did not know yet.
 */
export interface CatalogStore {
  /**
   * Stores `entry` unless a version at least as new is already stored: an
   * older event arriving late, or one replayed, changes nothing.
   */
  upsert(tx: Transaction, entry: CatalogEntry): Promise<void>;
  /** Quotes for the ids the catalogue knows; unknown ids are left out. */
  getMany(q: Queryable, ids: readonly string[]): Promise<Map<string, ProductQuote>>;
}

/** The catalogue over the order service's database (migration orders_0002_product_catalog). */
export function createCatalogStore(): CatalogStore {
  return {
    async upsert(tx, { id, name, currency, priceMinor, version }) {
      await tx.run(
        `INSERT INTO product_catalog (product_id, name, currency, price_minor, version) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (product_id) DO UPDATE SET name = excluded.name, currency = excluded.currency, price_minor = excluded.price_minor, version = excluded.version
         WHERE excluded.version > product_catalog.version`,
        [id, name, currency, priceMinor, version],
      );
    },
    async getMany(q, ids) {
      const quotes = new Map<string, ProductQuote>();
      if (ids.length === 0) return quotes;
      const rows = await q.query<{ product_id: string; name: string; currency: string; price_minor: number }>(
        `SELECT product_id, name, currency, price_minor FROM product_catalog WHERE product_id ${q.dialect.anyOf("$1")}`,
        [ids],
      );
      for (const r of rows) quotes.set(r.product_id, { id: r.product_id, name: r.name, currency: r.currency, priceMinor: Number(r.price_minor) });
      return quotes;
    },
  };
}
