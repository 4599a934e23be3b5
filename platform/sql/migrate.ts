import { setTimeout as sleep } from "node:timers/promises";
import { Code, StatusError } from "../errors/index.js";
import { positiveInteger } from "../options/index.js";
import { applyOutsideTransaction, indexBuildOf } from "./migrate-outside-transaction.js";
import { hasErrorCode } from "./storage-full.js";
import { userTablesSql } from "./sqlite.js";
import { isLockTimeout, limitLockWaits } from "./postgres.js";
import type { Database, Migration, Queryable, SessionLock, Transaction } from "./types.js";

/** The text of a migration for `db`'s store. */
export function migrationSql(migration: Migration, dialect: Database["dialect"]): string {
  if ("sql" in migration) return migration.sql;
  return dialect.name === "postgres" ? migration.postgres : migration.sqlite;
}

export interface MigrateOptions {
  /** The service the database belongs to: one that another service claimed is refused (see `migrate`). */
  readonly owner?: string;
  /** What that refusal tells the operator to change (which variable names the database, say); default "give it a database of its own". */
  readonly ownerAdvice?: string;
  /**
   * Postgres: the key of the session advisory lock under which instances
   * migrate one at a time (see `migrate`). None: nothing serialises them.
   */
  readonly lockKey?: number;
  /**
   * Postgres: how long a statement of a migration waits for a lock (`lock_timeout`) before the migration is
   * rolled back and tried again after a pause, ms. Default 2,000. Queries on a table queue behind an `ALTER
   * TABLE` waiting for it, so this is also about how long they are held up at a time.
   */
  readonly lockTimeoutMs?: number;
  /**
   * Postgres: how long a migration is tried again while another transaction holds a lock it needs, ms, from
   * its first attempt; then it fails. Default 180,000 (3 minutes).
   */
  readonly lockRetryLimitMs?: number;
  /** Postgres: told of each time a migration is rolled back because a lock it waited for was held elsewhere, before its next attempt. */
  readonly onLockRetry?: (retry: MigrationLockRetry) => void;
  /**
   * Postgres: how often, at most, an instance waiting for `lockKey` asks for it again without word from its holder
   * (which says when it gives the lock up), ms; this finds a holder that died. Default 500.
   */
  readonly lockPollMs?: number;
  /** Ends a pause between attempts, or the wait for another instance's migrations, early: migrate rejects (an AbortError). */
  readonly signal?: AbortSignal;
  /**
   * The id of a migration the database must have already (a tool's, which
   * must not make a service's tables in a database that is none): without it,
   * migrate fails with FAILED_PRECONDITION and changes nothing.
   */
  readonly requireApplied?: string;
  /**
   * `migrations` are every migration the database may hold (a service's own,
   * its outbox's, its inbox's): one it records that is not among them was
   * applied by a newer version of the code, whose tables and rows this one
   * would misread, so migrate fails with FAILED_PRECONDITION, naming them,
   * and changes nothing, unless each such migration was marked, by the code
   * that applied it, as one older code works with (`Migration.olderCodeWorks`):
   * then migrate goes on and tells `onNewerMigrations`. Not for a tool that
   * migrates a part of the database.
   */
  readonly refuseNewer?: boolean;
  /** With `refuseNewer`: told of the migrations of a newer version the database records, each marked `olderCodeWorks`, before migrating. */
  readonly onNewerMigrations?: (ids: readonly string[]) => void;
}

/** A migration rolled back after waiting for a lock (`MigrateOptions.onLockRetry`). */
export interface MigrationLockRetry {
  /** The migration's id. */
  readonly migration: string;
  /** Its attempts so far, each rolled back at its lock timeout. */
  readonly attempt: number;
  /** The pause before the next attempt. */
  readonly retryInMs: number;
  /** The statement that waited, abridged. */
  readonly statement: string;
  /** PostgreSQL's error (lock_not_available, 55P03). */
  readonly cause: unknown;
}

/** The longest pause between attempts of a migration whose locks are held elsewhere. */
const maxRetryPauseMs = 15_000;

/**
 * How often an instance asks for the lock under which instances migrate while another holds it, at most, unless
 * told otherwise (MigrateOptions.lockPollMs): it asks at once when the holder says it gave the lock up
 * (lockFreedChannel); this finds a holder that died.
 */
const defaultLockPollMs = 500;

/**
 * Postgres: the channel on which an instance that held the lock under which instances migrate says, once it has
 * given it up, that it is free; the instances waiting for it LISTEN on it and ask at once, not at their next ask.
 */
const lockFreedChannel = "concord_migration_lock";

/**
 * Applies the migrations `db` has not seen yet, in order of id (by UTF-16
 * code unit, the same in every locale), each in one transaction with its
 * row in schema_migrations. Throws, naming the migration, when one fails
 * (nothing of it is kept).
 *
 * Statements run without a statement timeout (a migration may rewrite a
 * large table), but on Postgres each waits for a lock at most
 * `lockTimeoutMs`: an `ALTER TABLE` waiting behind a long transaction (of an
 * instance not yet upgraded, say) would otherwise hold up every later query
 * on its table for as long as that transaction lasts. A migration whose
 * statement timed out so is rolled back and tried again after a pause (the
 * first as long as the timeout, then doubling, jittered, up to 15 s), for up
 * to `lockRetryLimitMs`; then it fails, saying another transaction holds a
 * lock on its table.
 *
 * A migration with `transaction: false` runs its one statement outside a
 * transaction on Postgres (see `applyOutsideTransaction`), and is recorded
 * once it succeeded: CREATE INDEX CONCURRENTLY, which builds an index
 * without holding up the table's writes meanwhile (its waits for the
 * transactions open when it starts are not limited). SQLite runs it in a
 * transaction as any other.
 *
 * With `lockKey`, an instance first takes that session advisory lock (on a
 * connection of its own) and holds it until its last migration is done,
 * then says so (NOTIFY); while another instance holds it, it LISTENs, asks
 * again as soon as the holder says it is free, and else every half second
 * or so (a holder that died says nothing).
 * Not a wait inside a transaction: a waiting statement holds a snapshot,
 * and CREATE INDEX CONCURRENTLY waits for every snapshot older than its own,
 * so the holder's index build and the waiter would wait for each other for
 * ever. A lock whose connection broke fails migrate as UNAVAILABLE before
 * its next migration.
 *
 * With `owner` (the service's name), the database is first claimed for that
 * service (schema_owner, one row), and one claimed by another service is
 * refused before anything is migrated: two services on one database would
 * share its outbox, and the relay of either would publish the other's events
 * (under its own NATS user, which may not publish them: they are parked).
 *
 * Resolves to the ids of the migrations this call applied, in the order it
 * applied them (none when the database had them all).
 */
export async function migrate(db: Database, migrations: readonly Migration[], options: MigrateOptions = {}): Promise<string[]> {
  const { owner, lockKey, onLockRetry, signal } = options;
  const limits = {
    lockTimeoutMs: positiveInteger("migrate", "lockTimeoutMs", options.lockTimeoutMs, 2_000),
    lockRetryLimitMs: positiveInteger("migrate", "lockRetryLimitMs", options.lockRetryLimitMs, 180_000),
    onLockRetry,
    signal,
  };
  const lockPollMs = positiveInteger("migrate", "lockPollMs", options.lockPollMs, defaultLockPollMs);
  const ids = migrations.map((m) => m.id);
  if (new Set(ids).size !== ids.length) throw new Error(`duplicate migration ids: ${ids.join(", ")}`);
  // Checked on either store: a migration written on SQLite runs on Postgres too.
  for (const m of migrations) if (m.transaction === false) indexBuildOf(m.id, splitStatements("sql" in m ? m.sql : m.postgres));
  if (options.requireApplied !== undefined && !(await isApplied(db, options.requireApplied))) {
    throw new StatusError(Code.FAILED_PRECONDITION, `the database has no migration ${options.requireApplied}; nothing was changed`);
  }
  const held = lockKey === undefined ? undefined : await takeLock(db, lockKey, signal, lockPollMs);
  let lost = false;
  void held?.lost.then(() => (lost = true));
  const applied: string[] = [];
  try {
    const newer = await db.transaction(async (tx) => {
      if (owner !== undefined) await refuseForeign(tx, owner);
      await tx.run(
        `CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at ${db.dialect.name === "postgres" ? "BIGINT" : "INTEGER"} NOT NULL, ${olderCodeWorksColumn} INTEGER NOT NULL DEFAULT 0)`,
      );
      await addOlderCodeWorksColumn(tx);
      if (owner !== undefined) await claimFor(tx, owner, options.ownerAdvice ?? "give it a database of its own");
      // After the owner's check (another service's migrations are not a newer version's); a refusal rolls the claim back.
      return options.refuseNewer ? await refuseNewer(tx, ids, owner) : [];
    }, unbounded);
    if (newer.length > 0) options.onNewerMigrations?.(newer);
    for (const migration of [...migrations].sort(byId)) {
      if (lost) throw StatusError.unavailable("the lock under which instances migrate was lost (its connection broke); migrating again will take it again");
      if (migration.transaction === false && db.dialect.name === "postgres") {
        const [statement] = splitStatements(migrationSql(migration, db.dialect));
        const ran = await applyOutsideTransaction(db, migration.id, statement).catch((err: unknown) => {
          throw new Error(`migration ${migration.id} failed: ${(err as Error).message}`, { cause: err });
        });
        if (ran) applied.push(migration.id);
      } else if (await applyInTransaction(db, migration, limits)) {
        applied.push(migration.id);
      }
    }
    await recordOlderCodeWorks(db, migrations);
  } finally {
    if (held) {
      await held.release();
      // Once the lock is free: an instance waiting for it asks now, not at its next ask.
      await db.query("SELECT pg_notify($1, '')", [lockFreedChannel]).catch(() => undefined);
    }
  }
  return applied;
}

/** schema_migrations' column saying, 1 or 0, whether code that lacks the migration works on the database (`Migration.olderCodeWorks`). */
const olderCodeWorksColumn = "older_code_works";

/** Adds olderCodeWorksColumn to a schema_migrations made before it (0 in each row: until said otherwise, older code is refused). */
async function addOlderCodeWorksColumn(tx: Transaction): Promise<void> {
  const postgres = tx.dialect.name === "postgres";
  const has = postgres
    ? await tx.query("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'schema_migrations' AND column_name = $1", [olderCodeWorksColumn])
    : await tx.query("SELECT 1 FROM pragma_table_info('schema_migrations') WHERE name = $1", [olderCodeWorksColumn]);
  if (has.length > 0) return;
  // Looked for first: the ALTER takes the table's strongest lock even when IF NOT EXISTS finds the column.
  await tx.run(`ALTER TABLE schema_migrations ADD COLUMN ${postgres ? "IF NOT EXISTS " : ""}${olderCodeWorksColumn} INTEGER NOT NULL DEFAULT 0`);
}

/**
 * Writes each of `migrations`' `olderCodeWorks` into its row, where the row says otherwise: the rows this call
 * added, and those an earlier version added before the flag was set (or set otherwise).
 */
async function recordOlderCodeWorks(db: Database, migrations: readonly Migration[]): Promise<void> {
  for (const flag of [1, 0]) {
    const ids = migrations.filter((m) => (m.olderCodeWorks === true ? 1 : 0) === flag).map((m) => m.id);
    if (ids.length === 0) continue;
    const list = ids.map((_, i) => `$${i + 2}`).join(", ");
    await db.run(`UPDATE schema_migrations SET ${olderCodeWorksColumn} = $1 WHERE ${olderCodeWorksColumn} <> $1 AND id IN (${list})`, [flag, ...ids]);
  }
}

/**
 * Throws FAILED_PRECONDITION when the database records a migration not in
 * `known` that older code does not work with: a newer version of the code
 * migrated it (see `MigrateOptions.refuseNewer`). Resolves to those not in
 * `known` that older code works with.
 */
async function refuseNewer(tx: Transaction, known: readonly string[], owner: string | undefined): Promise<string[]> {
  const knownIds = new Set(known);
  const recorded = await tx.query<{ id: string; works: number | string }>(`SELECT id, ${olderCodeWorksColumn} AS works FROM schema_migrations`);
  const newer = recorded.filter((r) => !knownIds.has(r.id)).sort(byId);
  const unknown = newer.filter((r) => Number(r.works) !== 1).map((r) => r.id);
  if (unknown.length === 0) return newer.map((r) => r.id);
  const whose = owner === undefined ? "the database" : `the ${owner} service's database`;
  throw new StatusError(
    Code.FAILED_PRECONDITION,
    `${whose} was migrated by a newer version of the code: it records migration${unknown.length === 1 ? "" : "s"} ${unknown.join(", ")}, ` +
      `which this version does not have and whose changes it would misread. Start the newer version again, or restore ` +
      `the backup taken before the upgrade (README "Upgrades"); nothing was changed`,
  );
}

/** Whether `db` records migration `id` as applied; false when it has no schema_migrations table yet. */
export async function isApplied(db: Database, id: string): Promise<boolean> {
  const table =
    db.dialect.name === "postgres"
      ? await db.query("SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_migrations'")
      : await db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'");
  return table.length > 0 && (await db.query("SELECT 1 FROM schema_migrations WHERE id = $1", [id])).length > 0;
}

/** Without a statement timeout: a migration may rewrite a large table. */
const unbounded = { statementTimeoutMs: 0 };

/**
 * The session lock `key`, once no other instance holds it: asked for again as soon as its holder says it gave it up
 * (lockFreedChannel), else at most every `pollMs`. Rejects (an AbortError) when `signal` aborts meanwhile.
 */
async function takeLock(db: Database, key: number, signal: AbortSignal | undefined, pollMs: number): Promise<SessionLock> {
  const first = await db.tryLock(key);
  if (first) return first;
  let freed = false;
  let pause: AbortController | undefined;
  // Listening before asking again: a holder that gives the lock up after this ask is heard. Without LISTEN (it failed), asked every pollMs.
  const unlisten = await db
    .listen(lockFreedChannel, () => {
      freed = true;
      pause?.abort();
    })
    .catch(() => undefined);
  try {
    for (;;) {
      freed = false;
      const held = await db.tryLock(key);
      if (held) return held;
      if (freed) continue;
      pause = new AbortController();
      await sleep(pollMs * (0.5 + Math.random() / 2), undefined, { signal: signal ? AbortSignal.any([signal, pause.signal]) : pause.signal }).catch(() => {
        // Ended early: by the holder's word (ask now), or by `signal` (give up).
        signal?.throwIfAborted();
      });
    }
  } finally {
    await unlisten?.();
  }
}

/**
 * Applies `migration` in one transaction with its row in schema_migrations, tried again while its locks are held
 * elsewhere (see `migrate`). Resolves to false when it was recorded already (nothing ran), else true.
 */
async function applyInTransaction(
  db: Database,
  migration: Migration,
  limits: Pick<MigrateOptions, "onLockRetry" | "signal"> & { readonly lockTimeoutMs: number; readonly lockRetryLimitMs: number },
): Promise<boolean> {
  const { lockTimeoutMs, lockRetryLimitMs, onLockRetry, signal } = limits;
  const started = performance.now();
  for (let attempt = 1; ; attempt++) {
    let statement = "";
    try {
      return await db.transaction(async (tx) => {
        await limitLockWaits(tx, lockTimeoutMs);
        const [applied] = await tx.query("SELECT 1 AS applied FROM schema_migrations WHERE id = $1", [migration.id]);
        if (applied) return false;
        for (statement of splitStatements(migrationSql(migration, tx.dialect))) await tx.run(statement);
        await tx.run("INSERT INTO schema_migrations (id, applied_at) VALUES ($1, $2)", [migration.id, Date.now()]);
        return true;
      }, unbounded);
    } catch (err) {
      if (!isLockTimeout(err)) throw migrationFailure(migration, db.dialect, statement, err);
      const retryInMs = Math.round(Math.min(maxRetryPauseMs, lockTimeoutMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2));
      const waitedMs = performance.now() - started;
      if (waitedMs + retryInMs > lockRetryLimitMs) {
        throw new Error(
          `migration ${migration.id} failed: another transaction holds a lock on a table it changes. Its statement ` +
            `${JSON.stringify(abridged(statement))} waited ${lockTimeoutMs} ms for it ${attempt} times over ${Math.round(waitedMs / 1_000)} s, ` +
            `and the migration was rolled back each time (nothing of it is applied). Find the session holding it ` +
            `(pg_locks, pg_stat_activity: a long or forgotten transaction), end it, and start again`,
          { cause: err },
        );
      }
      onLockRetry?.({ migration: migration.id, attempt, retryInMs, statement: abridged(statement), cause: err });
      await sleep(retryInMs, undefined, signal ? { signal } : undefined);
    }
  }
}

/**
 * Why `migration` failed. A statement the database refused for what it says (SQLite's SQLITE_ERROR: a syntax
 * error, a table or column it does not know; PostgreSQL's classes 42, syntax and names, 22, data, and 23,
 * constraints; either's constraint failures) fails the same way at every start until the migration, or the rows
 * it meets, is corrected: a refusal (FAILED_PRECONDITION, which a service's start says on one line and exits 2
 * on), naming the statement. Anything else (a connection lost, a disk full) keeps its cause as it was.
 */
function migrationFailure(migration: Migration, dialect: Database["dialect"], statement: string, err: unknown): Error {
  const message = `migration ${migration.id} failed: ${(err as Error).message}`;
  if (!refusesItsStatement(err)) return new Error(message, { cause: err });
  const store = dialect.name === "postgres" ? "PostgreSQL" : "SQLite";
  const sql = "sql" in migration ? "SQL" : `${dialect.name} SQL`;
  const at = statement === "" ? "" : ` (statement ${JSON.stringify(abridged(statement))})`;
  return new StatusError(
    Code.FAILED_PRECONDITION,
    `${message}${at}, on ${store}; it was rolled back, nothing of it is applied. Correct its ${sql} (or the rows it trips on) and start again`,
    { cause: err },
  );
}

/** Whether the database refused a statement for its own text or the rows it met (see migrationFailure), by the code of `err` or of its causes. */
function refusesItsStatement(err: unknown): boolean {
  return hasErrorCode(err, (code) => code === "SQLITE_ERROR" || code.startsWith("SQLITE_CONSTRAINT") || /^(42|22|23)[0-9A-Z]{3}$/.test(code));
}

/** A statement on one line, cut short, for messages. */
function abridged(statement: string): string {
  const line = statement.replace(/\s+/g, " ").trim();
  return line.length <= 100 ? line : `${line.slice(0, 99)}…`;
}

/**
 * Refuses, before anything is written, a database that holds tables but no
 * schema_migrations: another application's, named by mistake, into which the
 * service made its tables and called it new. On PostgreSQL the tables are
 * those of the connection's schema (current_schema), less those an extension
 * made (PostGIS's spatial_ref_sys, say).
 */
async function refuseForeign(tx: Transaction, owner: string): Promise<void> {
  const tables = tx.dialect.name === "postgres" ? await tx.query<{ name: string }>(postgresUserTablesSql) : await tx.query<{ name: string }>(userTablesSql);
  const refusal = foreignTablesRefusal(tables.map((t) => t.name), owner, tx.dialect.name);
  if (refusal) throw refusal;
}

/** The tables (plain and partitioned) of the connection's schema that no extension made, by name. */
const postgresUserTablesSql =
  "SELECT c.relname AS name FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) AND c.relkind IN ('r', 'p') " +
  "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') ORDER BY c.relname COLLATE \"C\"";

/**
 * FAILED_PRECONDITION for service `owner`'s database holding `tables` (its
 * own names, in order) of which none is schema_migrations: another
 * application's; undefined for a new database or one migrations made.
 */
export function foreignTablesRefusal(tables: readonly string[], owner: string, store: "sqlite" | "postgres" = "sqlite"): StatusError | undefined {
  if (tables.length === 0 || tables.includes("schema_migrations")) return undefined;
  const shown = tables.length > 5 ? `${tables.slice(0, 5).join(", ")} and ${tables.length - 5} more` : tables.join(", ");
  return new StatusError(
    Code.FAILED_PRECONDITION,
    `the database holds tables of something else (${shown}) and none of a service's migrations: ${store === "postgres" ? `name a new or empty database for ${owner}` : `name a new or empty file for ${owner}, or its own database`}; its tables were left as they were`,
  );
}

/** The services a database's schema_owner names (one, claimed by the first to migrate it); throws where it has no such table. */
export async function databaseOwners(db: Queryable): Promise<string[]> {
  return (await db.query<{ service: string }>("SELECT service FROM schema_owner")).map((r) => r.service);
}

/** Claims the database for service `owner`, or throws FAILED_PRECONDITION, saying `advice`, when another service claimed it (see `migrate`). */
async function claimFor(tx: Transaction, owner: string, advice: string): Promise<void> {
  await tx.run("CREATE TABLE IF NOT EXISTS schema_owner (service TEXT PRIMARY KEY)");
  await tx.run("INSERT INTO schema_owner (service) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM schema_owner)", [owner]);
  const claimed = await databaseOwners(tx);
  if (!claimed.includes(owner)) {
    // FAILED_PRECONDITION: the database to change is the operator's to give, and the refusal says which.
    throw new StatusError(
      Code.FAILED_PRECONDITION,
      `the database belongs to the ${claimed.join(", ")} service, not to ${owner}: each service needs a database of its own (${advice})`,
    );
  }
}

/**
 * Migrations by id, code unit by code unit. Not `localeCompare`: its order
 * follows the locale's collation (where "_" sorts before digits and case
 * comes second), so one set of migrations could run in different orders on
 * different machines, and it loads ICU's collation data into every service.
 */
const byId = (a: { readonly id: string }, b: { readonly id: string }): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** A migration's statements, split at their semicolons (migrations hold none inside a statement). */
function splitStatements(sql: string): string[] {
  return sql
    .split(";")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}
