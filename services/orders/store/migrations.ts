import type { Migration } from "../../../platform/sql/index.js";

export const orderMigrations: Migration[] = [
  {
    id: "orders_0001_orders",
    sql: `
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
  },
];
