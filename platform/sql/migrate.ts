import type { Database, Migration, Transaction } from "./types.js";

/** The text of a migration for `db`'s store. */
export function migrationSql(migration: Migration, dialect: Database["dialect"]): string {
  if ("sql" in migration) return migration.sql;
  return dialect.name === "postgres" ? migration.postgres : migration.sqlite;
}

/**
 * Applies the migrations `db` has not seen yet, in order of id (by UTF-16
 * code unit, the same in every locale), each in one transaction with its
 * row in schema_migrations. Throws, naming the
 * migration, when one fails (nothing of it is kept).
 *
 * With `owner` (the service's name), the database is first claimed for that
 * service (schema_owner, one row), and one claimed by another service is
 * refused before anything is migrated: two services on one database would
 * share its outbox, and the relay of either would publish the other's events
 * (under its own NATS user, which may not publish them: they are parked).
 */
export async function migrate(db: Database, migrations: readonly Migration[], lock?: (tx: Transaction) => Promise<void>, owner?: string): Promise<void> {
  const ids = migrations.map((m) => m.id);
  if (new Set(ids).size !== ids.length) throw new Error(`duplicate migration ids: ${ids.join(", ")}`);
  // Without a statement timeout: a migration may rewrite a large table, and an instance waits on the lock for another's migrations.
  const unbounded = { statementTimeoutMs: 0 };
  await db.transaction(async (tx) => {
    await lock?.(tx);
    await tx.run(`CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at ${db.dialect.name === "postgres" ? "BIGINT" : "INTEGER"} NOT NULL)`);
    if (owner !== undefined) await claimFor(tx, owner);
  }, unbounded);
  for (const migration of [...migrations].sort(byId)) {
    try {
      await db.transaction(async (tx) => {
        await lock?.(tx);
        const [applied] = await tx.query("SELECT 1 AS applied FROM schema_migrations WHERE id = $1", [migration.id]);
        if (applied) return;
        for (const statement of splitStatements(migrationSql(migration, tx.dialect))) await tx.run(statement);
        await tx.run("INSERT INTO schema_migrations (id, applied_at) VALUES ($1, $2)", [migration.id, Date.now()]);
      }, unbounded);
    } catch (err) {
      throw new Error(`migration ${migration.id} failed: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** Claims the database for service `owner`, or throws when another service claimed it (see `migrate`). */
async function claimFor(tx: Transaction, owner: string): Promise<void> {
  await tx.run("CREATE TABLE IF NOT EXISTS schema_owner (service TEXT PRIMARY KEY)");
  await tx.run("INSERT INTO schema_owner (service) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM schema_owner)", [owner]);
  const claimed = (await tx.query<{ service: string }>("SELECT service FROM schema_owner")).map((r) => r.service);
  if (!claimed.includes(owner)) {
    throw new Error(
      `the database belongs to the ${claimed.join(", ")} service, not to ${owner}: each service needs a database of its own (set PRODUCTS_DATABASE_URL and ORDERS_DATABASE_URL rather than one DATABASE_URL for both)`,
    );
  }
}

/**
 * Migrations by id, code unit by code unit. Not `localeCompare`: its order
 * follows the locale's collation (where "_" sorts before digits and case
 * comes second), so one set of migrations could run in different orders on
 * different machines, and it loads ICU's collation data into every service.
 */
const byId = (a: Migration, b: Migration): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** A migration's statements, split at their semicolons (migrations hold none inside a statement). */
function splitStatements(sql: string): string[] {
  return sql
    .split(";")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}
