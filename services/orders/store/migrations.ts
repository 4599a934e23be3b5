import type { Migration } from "../../../platform/sql/index.js";

export const orderMigrations: Migration[] = [
  {
    id: "orders_0001_orders",
    sqlite: `
      CREATE TABLE orders (
        id                TEXT PRIMARY KEY,
        customer_id       TEXT NOT NULL,
        state             TEXT NOT NULL CHECK (state IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')),
        lines_json        TEXT NOT NULL,
        currency          TEXT NOT NULL,
        total_minor       INTEGER NOT NULL,
        shipping_json     TEXT NOT NULL,
        rejection_reason  TEXT NOT NULL,
        lines_version     INTEGER NOT NULL,
        version           INTEGER NOT NULL,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX orders_by_customer ON orders (customer_id, id);
    `,
    postgres: `
      CREATE TABLE orders (
        id                TEXT COLLATE "C" PRIMARY KEY,
        customer_id       TEXT NOT NULL,
        state             TEXT NOT NULL CHECK (state IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')),
        lines_json        TEXT NOT NULL,
        currency          TEXT NOT NULL,
        total_minor       BIGINT NOT NULL,
        shipping_json     TEXT NOT NULL,
        rejection_reason  TEXT NOT NULL,
        lines_version     BIGINT NOT NULL,
        version           BIGINT NOT NULL,
        created_at        BIGINT NOT NULL,
        updated_at        BIGINT NOT NULL
      );
      CREATE INDEX orders_by_customer ON orders (customer_id, id);
    `,
  },
  {
    // The order service's copy of the product catalogue: what pricing an order needs, fed by the product events.
    id: "orders_0002_product_catalog",
    sqlite: `
      CREATE TABLE product_catalog (
        product_id   TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        currency     TEXT NOT NULL,
        price_minor  INTEGER NOT NULL,
        version      INTEGER NOT NULL
      ) STRICT, WITHOUT ROWID;
    `,
    postgres: `
      CREATE TABLE product_catalog (
        product_id   TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        currency     TEXT NOT NULL,
        price_minor  BIGINT NOT NULL,
        version      BIGINT NOT NULL
      );
    `,
  },
  {
    // When each order last entered PENDING, and the PENDING orders by it: the saga's timeout finds those it left too long.
    // PENDING orders already stored count from their last change; for the others it is never read.
    id: "orders_0003_pending_since",
    sqlite: `
      ALTER TABLE orders ADD COLUMN pending_since INTEGER NOT NULL DEFAULT 0;
      UPDATE orders SET pending_since = updated_at WHERE state = 'PENDING';
      CREATE INDEX orders_pending ON orders (pending_since, id) WHERE state = 'PENDING';
    `,
    // The default is set after the column is filled (no table rewrite): during a rolling upgrade an instance
    // not yet upgraded places orders without the column, and these count from their insert, not from 1970.
    postgres: `
      ALTER TABLE orders ADD COLUMN pending_since BIGINT NOT NULL DEFAULT 0;
      UPDATE orders SET pending_since = updated_at WHERE state = 'PENDING';
      ALTER TABLE orders ALTER COLUMN pending_since SET DEFAULT (floor(extract(epoch FROM clock_timestamp()) * 1000))::bigint;
      CREATE INDEX orders_pending ON orders (pending_since, id) WHERE state = 'PENDING';
    `,
  },
  {
    // Why each order was cancelled, as its OrderCancelled says. Orders cancelled before have none on record.
    // A constant default: no table rewrite on PostgreSQL, and an instance not yet upgraded writes ''.
    id: "orders_0004_cancellation_reason",
    sql: "ALTER TABLE orders ADD COLUMN cancellation_reason TEXT NOT NULL DEFAULT ''",
  },
];
