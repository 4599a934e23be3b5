import { migrate } from "./migrate.js";
import { openPostgres } from "./postgres.js";
import { openSqlite } from "./sqlite.js";
import type { Database, Migration, Transaction } from "./types.js";

export interface DatabaseOptions {
  /**
   * Where the database is: a `postgres://` (or `postgresql://`) URL, or a
   * SQLite file path (":memory:" for a throwaway one).
   */
  readonly path: string;
  /** Migrations of every module that keeps tables here (service, outbox, inbox). */
  readonly migrations: readonly Migration[];
}

/** Serialises migrations of instances that start together on one Postgres database. */
const migrationLockKey = 0x436f6e63; // "Conc"

/**
 * Opens a service's database, Postgres or SQLite by its location, and
 * applies its pending migrations (on Postgres under an advisory lock, so
 * instances starting together migrate one after the other).
 */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const postgres = /^postgres(ql)?:\/\//i.test(options.path);
  const db = postgres ? openPostgres(options.path) : openSqlite(options.path);
  try {
    await migrate(db, options.migrations, postgres ? (tx: Transaction) => tx.run("SELECT pg_advisory_xact_lock($1)", [migrationLockKey]).then(() => undefined) : undefined);
  } catch (err) {
    await db.close();
    throw err;
  }
  return db;
}
