import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import BetterSqlite3 from "better-sqlite3";

/** One schema change, applied once, in order of `id`. */
export interface Migration {
  /** Unique and increasing, for example "0001_products". */
  readonly id: string;
  /** SQL run in one transaction with the bookkeeping row. */
  readonly sql: string;
}

export interface DatabaseOptions {
  /** File path of the SQLite database; parent directories are created. */
  readonly path: string;
  /** Migrations of every module that keeps tables here (service, outbox, inbox). */
  readonly migrations: readonly Migration[];
}

/**
 * A service's own SQLite database. Writes happen in `transaction`, which is
 * synchronous: better-sqlite3 runs each statement to completion, so a
 * transaction never interleaves with another in this process.
 */
export interface Database {
  /** The underlying connection, for stores that prepare their statements. */
  readonly sqlite: BetterSqlite3.Database;
  /**
   * Runs `work` in one transaction (BEGIN IMMEDIATE) and commits, or rolls
   * back and rethrows when it throws. A nested call runs in a savepoint of
   * the outer transaction: when it throws, only its own writes roll back.
   */
  transaction<T>(work: () => T): T;
  /**
   * Registers `callback` to run once the current transaction commits (at once
   * when there is none). Dropped on rollback. Used to wake the outbox relay.
   */
  afterCommit(callback: () => void): void;
  /** Throws when the database cannot be read; used by health checks. */
  ping(): void;
  /** Closes the connection; later calls throw. Safe to call twice. */
  close(): void;
}

/** Opens (creating when needed) a SQLite database in WAL mode and runs pending migrations. */
export function openDatabase(options: DatabaseOptions): Database {
  const { path, migrations } = options;
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  let sqlite: BetterSqlite3.Database;
  try {
    sqlite = new BetterSqlite3(path);
    sqlite.pragma("journal_mode = WAL");
    sqlite.pragma("synchronous = NORMAL");
    sqlite.pragma("foreign_keys = ON");
    sqlite.pragma("busy_timeout = 5000");
  } catch (err) {
    throw new Error(`opening the database at ${path} failed: ${(err as Error).message}`, { cause: err });
  }
  migrate(sqlite, migrations);

  let pending: Array<() => void> = [];
  const run = <T>(work: () => T): T => work();
  const outer = sqlite.transaction(run);
  const immediate = outer.immediate as <T>(work: () => T) => T;
  // better-sqlite3 runs a transaction function called inside another as a savepoint.
  const nested = outer as <T>(work: () => T) => T;
  const ping = sqlite.prepare("SELECT 1");

  return {
    sqlite,
    transaction<T>(work: () => T): T {
      if (sqlite.inTransaction) return nested(work);
      let result: T;
      try {
        result = immediate(work);
      } catch (err) {
        pending = [];
        throw err;
      }
      const callbacks = pending;
      pending = [];
      for (const callback of callbacks) callback();
      return result;
    },
    afterCommit(callback) {
      if (sqlite.inTransaction) pending.push(callback);
      else callback();
    },
    ping() {
      ping.get();
    },
    close() {
      if (sqlite.open) sqlite.close();
    },
  };
}

function migrate(sqlite: BetterSqlite3.Database, migrations: readonly Migration[]): void {
  const ids = migrations.map((m) => m.id);
  if (new Set(ids).size !== ids.length) throw new Error(`duplicate migration ids: ${ids.join(", ")}`);
  sqlite.exec("CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)");
  const applied = new Set(sqlite.prepare("SELECT id FROM schema_migrations").pluck().all() as string[]);
  const record = sqlite.prepare("INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)");
  for (const migration of [...migrations].sort((a, b) => a.id.localeCompare(b.id))) {
    if (applied.has(migration.id)) continue;
    try {
      sqlite.transaction(() => {
        sqlite.exec(migration.sql);
        record.run(migration.id, Date.now());
      }).immediate();
    } catch (err) {
      throw new Error(`migration ${migration.id} failed: ${(err as Error).message}`, { cause: err });
    }
  }
}
