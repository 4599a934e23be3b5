import { foreignTablesRefusal, isApplied, migrate, type MigrationLockRetry } from "./migrate.js";
import { statSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { isDatabaseUnavailable, openPostgres, type StartupTimeout } from "./postgres.js";
import { beginsAsSqlite, claimSqliteFile, openSqlite, rollbackModeTables, sqliteHeaderOf, sqliteMayHaveMigration, type SqliteDetached } from "./sqlite.js";
import { notRegularFile } from "../config/setting-file.js";
import { Code, StatusError } from "../errors/index.js";
import type { Database, Migration } from "./types.js";

export interface DatabaseOptions {
  /**
   * Where the database is: a `postgres://` (or `postgresql://`) URL, or a
   * SQLite file path (":memory:" for a throwaway one).
   */
  readonly path: string;
  /** Migrations of every module that keeps tables here (service, outbox, inbox). */
  readonly migrations: readonly Migration[];
  /**
   * Called each time a Postgres server that cannot be reached (not up yet,
   * restarting, its host name not resolving yet) is waited for; it is asked again every second. Without it,
   * opening fails at once with the UNAVAILABLE error.
   */
  readonly onWaiting?: (err: unknown) => void;
  /** Ends the waiting, and a Postgres connection being made meanwhile: opening rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /** The service the database belongs to: one that another service claimed is refused (see `migrate`). */
  readonly owner?: string;
  /** Postgres: how refusals that say what to change in the URL name it (see `PostgresOptions.urlName`). */
  readonly urlName?: string;
  /** What the refusal of a database another service owns tells the operator to change (see `MigrateOptions.ownerAdvice`). */
  readonly ownerAdvice?: string;
  /** Postgres connections this process opens at most (default 10). */
  readonly poolSize?: number;
  /** SQLite: its checkpoints failed (a flush to disk), and SQLite's own, inside commits, took over. */
  readonly onCheckpointFailure?: (err: Error) => void;
  /** SQLite: its file was deleted or replaced while open; writes are refused from then on (see `SqliteOptions.onDetached`). */
  readonly onDetached?: (detached: SqliteDetached) => void;
  /**
   * A callback a transaction asked for with `afterCommit` threw, or returned a promise that rejected: told once, with its
   * error. The transaction is committed, and its caller gets its result all the same. Default: a message on standard error.
   */
  readonly onAfterCommitFailure?: (err: unknown) => void;
  /** Postgres: how long a migration's statement waits for a lock before the migration is rolled back and tried again, ms (see `migrate`; default 2,000). */
  readonly migrationLockTimeoutMs?: number;
  /** Postgres: how long a migration is tried again while another transaction holds a lock it needs, ms (see `migrate`; default 180,000). */
  readonly migrationLockRetryLimitMs?: number;
  /** Postgres: told of each time a migration is rolled back because a lock it waited for was held elsewhere, before its next attempt. */
  readonly onMigrationLockRetry?: (retry: MigrationLockRetry) => void;
  /** Postgres: how often, at most, an instance waiting for another's migrations asks for their lock without word from its holder, ms (see `migrate`; default 500). */
  readonly migrationLockPollMs?: number;
  /**
   * Postgres: told once, at start, of the timeouts a pooler in front dropped from the connections' start-up
   * (PgBouncer's ignore_startup_parameters), which each connection then sets itself once connected.
   */
  readonly onStartupSettingsDropped?: (settings: readonly StartupTimeout[]) => void;
  /** Told once, before migrating, when the database has none of its migrations yet: it is new (made now, or empty). */
  readonly onNew?: () => void;
  /** A migration the database must have already, or opening fails with FAILED_PRECONDITION, nothing changed (see `migrate`). */
  readonly requireApplied?: string;
  /**
   * `migrations` are all the database may hold: one migrated by a newer version of the code is refused, nothing
   * changed, unless older code works with it (see `MigrateOptions.refuseNewer`).
   */
  readonly refuseNewer?: boolean;
  /** With `refuseNewer`: told, before migrating, of a newer version's migrations the database records that older code works with. */
  readonly onNewerMigrations?: (ids: readonly string[]) => void;
  /** Told, once the migrations are done, of those this opening applied, in order; not told when there were none to apply. */
  readonly onMigrated?: (applied: readonly string[]) => void;
}

/** `db`, its close made to give up `claim` too, once the database has closed. */
function releasingOnClose(db: Database, claim: { release(): void }): Database {
  const close = db.close.bind(db);
  Object.defineProperty(db, "close", {
    value: async () => {
      await close();
      claim.release();
    },
  });
  return db;
}

/** Pause between attempts to reach a Postgres server that is not there yet. */
const waitIntervalMs = 1_000;

/** Serialises migrations of instances that start together on one Postgres database. */
const migrationLockKey = 0x436f6e63; // "Conc"

/** Whether a database location is a Postgres URL (`postgres://` or `postgresql://`); anything else is a SQLite file. */
export function isPostgresUrl(location: string): boolean {
  return /^postgres(ql)?:\/\//i.test(location);
}

/** Whether the file at `path` begins as a SQLite database does (an empty file is one SQLite takes as new, and is not asked about). */
function hasSqliteHeader(path: string): boolean {
  try {
    return beginsAsSqlite(sqliteHeaderOf(path));
  } catch {
    // One this process may not read is left to SQLite to refuse, as before.
    return true;
  }
}

/**
 * Opens a service's database, Postgres or SQLite by its location, and
 * applies its pending migrations (on Postgres under an advisory lock, so
 * instances starting together migrate one after the other). A Postgres
 * database whose connections do not keep their server session (a pooler in
 * transaction mode) is refused first (`checkSessions`), and a SQLite path
 * that is a directory, a FIFO or a device, or (for a service's, `owner`
 * given) a file that is no SQLite database (FAILED_PRECONDITION), before
 * anything is opened.
 */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const postgres = isPostgresUrl(options.path);
  // SQLite said "unable to open database file" of a directory and "disk I/O error" of a device (a service exited 1 with a
  // stack), and the outbox tool, reading a FIFO's header, waited for ever for a writer.
  const found = postgres || options.path === ":memory:" ? undefined : statSync(options.path, { throwIfNoEntry: false });
  const kind = found && notRegularFile(found);
  if (kind) throw new StatusError(Code.FAILED_PRECONDITION, `${options.path} is ${kind}, not a SQLite database file; name the database's file (nothing was changed)`);
  // A service's file of something else (a backup's .json, a text file) failed with a stack trace once its claim file was
  // made; the tools, which claim none, name it from SQLite's refusal (isNotSqliteFile).
  if (options.owner !== undefined && found && found.size > 0 && !hasSqliteHeader(options.path)) {
    throw new StatusError(Code.FAILED_PRECONDITION, `${options.path} is not a SQLite database (it does not begin as one); name the database's file (nothing was changed)`);
  }
  // Another application's file is refused before a writing connection switches it to WAL, rewriting its header (migrate
  // refuses one already in WAL mode, which that connection leaves as it was).
  if (options.owner !== undefined && found && found.size > 0) {
    const foreign = foreignTablesRefusal(rollbackModeTables(options.path) ?? [], options.owner);
    if (foreign) throw foreign;
  }
  // Checked before a writing connection opens a SQLite file, which would make it, or switch it to WAL, before migrate looks.
  if (!postgres && options.requireApplied !== undefined && options.path !== ":memory:" && !sqliteMayHaveMigration(options.path, options.requireApplied)) {
    throw new StatusError(Code.FAILED_PRECONDITION, `the database has no migration ${options.requireApplied}; nothing was changed`);
  }
  // A service's SQLite file is its process's alone, claimed before anything is read or written (see claimSqliteFile).
  const claim = !postgres && options.owner !== undefined && options.path !== ":memory:" ? claimSqliteFile(options.path) : undefined;
  let opened: Database;
  try {
    const onAfterCommitFailure = options.onAfterCommitFailure && { onAfterCommitFailure: options.onAfterCommitFailure };
    const postgresOptions = {
      ...(options.poolSize !== undefined && { poolSize: options.poolSize }),
      ...(options.urlName !== undefined && { urlName: options.urlName }),
      ...onAfterCommitFailure,
    };
    opened = postgres ? openPostgres(options.path, postgresOptions) : openSqlite(options.path, {
          ...(options.onCheckpointFailure && { onCheckpointFailure: options.onCheckpointFailure }),
          ...(options.onDetached && { onDetached: options.onDetached }),
          ...onAfterCommitFailure,
        });
  } catch (err) {
    claim?.release();
    throw err;
  }
  const postgresDb = postgres ? (opened as ReturnType<typeof openPostgres>) : undefined;
  const db: Database = claim ? releasingOnClose(opened, claim) : opened;
  let sessionsChecked = false;
  let toldNew = false;
  const { onWaiting, signal } = options;
  // A stop asked for while a connection is being made ends it now, not at its connect timeout (close() ends those being made).
  const closeOnAbort = () => void db.close().catch(() => undefined);
  if (postgres) signal?.addEventListener("abort", closeOnAbort, { once: true });
  try {
    for (;;) {
      signal?.throwIfAborted();
      try {
        // Before anything is written: a database reached through a pooler that does not keep sessions is refused untouched.
        if (postgresDb && !sessionsChecked) {
          const dropped = await postgresDb.checkSessions();
          if (dropped.length > 0) options.onStartupSettingsDropped?.(dropped);
        }
        sessionsChecked = true;
        if (!toldNew && options.onNew && options.migrations.length > 0 && !(await isApplied(db, options.migrations[0]!.id))) {
          toldNew = true;
          options.onNew();
        }
        const applied = await migrate(db, options.migrations, {
          lockKey: postgres ? migrationLockKey : undefined,
          owner: options.owner,
          ownerAdvice: options.ownerAdvice,
          lockTimeoutMs: options.migrationLockTimeoutMs,
          lockRetryLimitMs: options.migrationLockRetryLimitMs,
          lockPollMs: options.migrationLockPollMs,
          onLockRetry: options.onMigrationLockRetry,
          requireApplied: options.requireApplied,
          refuseNewer: options.refuseNewer,
          onNewerMigrations: options.onNewerMigrations,
          signal,
        });
        if (applied.length > 0) options.onMigrated?.(applied);
        return db;
      } catch (err) {
        signal?.throwIfAborted();
        // Migrations already applied are skipped when they run again.
        const cause = err instanceof Error ? err.cause : undefined;
        if (!onWaiting || !(isDatabaseUnavailable(err) || isDatabaseUnavailable(cause))) throw err;
        onWaiting(err);
        await sleep(waitIntervalMs, undefined, signal ? { signal } : undefined);
      }
    }
  } catch (err) {
    await db.close();
    throw err;
  } finally {
    signal?.removeEventListener("abort", closeOnAbort);
  }
}
