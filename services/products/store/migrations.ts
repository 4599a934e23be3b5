import type { Migration } from "../../../platform/sql/index.js";

export const productMigrations: Migration[] = [
  {
    id: "products_0001_products",
    sqlite: `
      CREATE TABLE products (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        description   TEXT NOT NULL,
        price_minor   INTEGER NOT NULL,
        currency      TEXT NOT NULL,
        stock         INTEGER NOT NULL CHECK (stock >= 0),
        version       INTEGER NOT NULL,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
      ) STRICT;
      CREATE TABLE stock_adjustments (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        product_id    TEXT NOT NULL REFERENCES products (id),
        delta         INTEGER NOT NULL,
        reason        TEXT NOT NULL,
        stock_after   INTEGER NOT NULL,
        created_at    INTEGER NOT NULL
      ) STRICT;
    `,
    postgres: `
      CREATE TABLE products (
        id            TEXT COLLATE "C" PRIMARY KEY,
        name          TEXT NOT NULL,
        description   TEXT NOT NULL,
        price_minor   BIGINT NOT NULL,
        currency      TEXT NOT NULL,
        stock         INTEGER NOT NULL CHECK (stock >= 0),
        version       BIGINT NOT NULL,
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL
      );
      CREATE TABLE stock_adjustments (
        id            BIGSERIAL PRIMARY KEY,
        product_id    TEXT NOT NULL REFERENCES products (id),
        delta         INTEGER NOT NULL,
        reason        TEXT NOT NULL,
        stock_after   INTEGER NOT NULL,
        created_at    BIGINT NOT NULL
      );
    `,
  },
  {
    // Per-order stock reservations: the saga's memory on the product side.
    id: "products_0002_reservations",
    sqlite: `
    CREATE TABLE reservations (
      order_id       TEXT PRIMARY KEY,
      lines_version  INTEGER NOT NULL,
      status         TEXT NOT NULL CHECK (status IN ('reserved', 'failed', 'released')),
      lines_json     TEXT NOT NULL,
      updated_at     INTEGER NOT NULL
    ) STRICT;
  `,
    postgres: `
      CREATE TABLE reservations (
        order_id       TEXT PRIMARY KEY,
        lines_version  BIGINT NOT NULL,
        status         TEXT NOT NULL CHECK (status IN ('reserved', 'failed', 'released')),
        lines_json     TEXT NOT NULL,
        updated_at     BIGINT NOT NULL
      );
    `,
  },
  {
    // Stock moves get a version of their own, so that orders reserving stock never make a catalogue
    // edit stale; units held for orders are counted per product, so stock plus held units has a ceiling.
    id: "products_0003_stock_version",
    sqlite: `
      ALTER TABLE products ADD COLUMN stock_version INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE products ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0);
      UPDATE products SET reserved = coalesce((
        SELECT sum(json_extract(line.value, '$.quantity'))
        FROM reservations AS r, json_each(r.lines_json) AS line
        WHERE r.status = 'reserved' AND json_extract(line.value, '$.productId') = products.id
      ), 0);
    `,
    postgres: `
      ALTER TABLE products ADD COLUMN stock_version BIGINT NOT NULL DEFAULT 0;
      ALTER TABLE products ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0);
      UPDATE products SET reserved = coalesce((
        SELECT sum((line ->> 'quantity')::integer)
        FROM reservations AS r, jsonb_array_elements(r.lines_json::jsonb) AS line
        WHERE r.status = 'reserved' AND line ->> 'productId' = products.id
      ), 0);
    `,
  },
];
