/*
 * The SQL layer every store and the event runtime work through, the same
 * for SQLite (the embedded default) and Postgres: asynchronous, with SQL
 * written once. Parameters are `$1`, `$2`, ... in the SQL text, as Postgres
 * writes them; the SQLite side binds them the same way.
 */

import type { StorageRefusal } from "./storage-full.js";

/** A parameter value: text, a number, bytes, null, or a list (for `dialect.anyOf`). */
export type SqlValue = string | number | Uint8Array | null | readonly (string | number)[];

/** Where SQL differs between the stores, the small pieces that do. */
export interface Dialect {
  readonly name: "sqlite" | "postgres";
  /**
   * `x ${anyOf("$1")}` matches x against every value of a list parameter:
   * `= ANY($1)` on Postgres, `IN ($1)` on SQLite with the list spread into one parameter an item.
   */
  anyOf(param: string): string;
  /**
   * Appended to a SELECT inside a transaction that will write the rows it
   * reads: " FOR UPDATE" on Postgres, so a concurrent writer waits; nothing
   * on SQLite, whose one writer already excludes the others.
   */
  readonly forUpdate: string;
}

/** Runs statements; rows come back as plain objects keyed by column name. */
export interface Queryable {
  readonly dialect: Dialect;
  /** The rows a statement returns (none for a statement that returns none). */
  query<R = Record<string, unknown>>(sql: string, params?: readonly SqlValue[]): Promise<R[]>;
  /** Runs a statement; resolves with how many rows it changed. */
  run(sql: string, params?: readonly SqlValue[]): Promise<number>;
}

/**
 * Writes gathered during a transaction and made just before it commits, in
 * one go (the outbox's events): what a savepoint staged goes with it when
 * it rolls back.
 */
export interface StagedWrites<T> {
  /** For error messages: "outbox". */
  readonly name: string;
  /** Writes the items staged in one transaction, in the order they were staged; runs inside it, before COMMIT. */
  flush(tx: Transaction, items: readonly T[]): Promise<void>;
}

/**
 * One transaction, or a savepoint inside one. Statements run in order; it sees its own writes. A statement (or
 * savepoint) run through it once its work is over, by work that did not await it, is refused: it would run in
 * whatever transaction holds the connection then. So are a write staged and a callback asked for then (they throw):
 * its staged writes and callbacks are already flushed, run or dropped, so they would be lost without a word.
 * Statements that begin or end a transaction or savepoint (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE...) are
 * refused, through a transaction and through the database alike: `savepoint` is the way to let a part fail alone.
 */
export interface Transaction extends Queryable {
  /**
   * Runs `work` in a savepoint: when it throws, only its own writes (and
   * what it staged and registered) are undone, and the error propagates.
   * To be awaited: work (of the transaction, or of a savepoint around this
   * one) that returns while it still runs fails, nothing of it kept.
   */
  savepoint<T>(work: (tx: Transaction) => Promise<T>): Promise<T>;
  /**
   * Runs `callback` once the whole transaction has committed; dropped when it (or this savepoint) rolls back. One that
   * throws fails neither the transaction, which is committed, nor the other callbacks: it is reported (the database's
   * `onAfterCommitFailure`), and the caller gets its result.
   */
  afterCommit(callback: () => void): void;
  /** Stages `item` to be written by `writes.flush` just before the commit. */
  stage<T>(writes: StagedWrites<T>, item: T): void;
  /**
   * Holds `key` ("reservation <order id>") until this transaction ends, from
   * its next statement on, which runs only once no other transaction holds
   * it: the way to serialise work on something that may have no row yet to
   * lock. A transaction-scoped advisory lock on Postgres (on a hash of the
   * key: two keys may share one, which only makes them wait for each other),
   * taken in the next statement's round trip, so that statement's failure is
   * also the lock's (a deadlock); nothing on SQLite, whose one writer already
   * excludes the others.
   */
  lock(key: string): Promise<void>;
}

/** A lock one process holds on a database for as long as it lives, or until released. */
export interface SessionLock {
  /** Resolves when the lock is gone without `release` (its connection broke): another may hold it now. */
  readonly lost: Promise<void>;
  /** Gives the lock up. Safe to call twice. */
  release(): Promise<void>;
}

export interface TransactionOptions {
  /**
   * The transaction is given up, with nothing run, when this aborts before
   * its turn comes (a pooled connection on Postgres, the one writer on
   * SQLite): a gRPC call's `context.signal`, so work whose caller has gone
   * does not queue up in front of live calls when the database is slow.
   * Rejects with the signal's reason. Given as a function, it is asked for
   * only when the transaction has to wait (a gRPC call's signal costs an
   * AbortController and a listener, which most calls never need): one that
   * starts at once on SQLite runs, as nothing could have cancelled its caller
   * since the caller's last I/O. On Postgres, one that aborts while the
   * transaction runs also cancels the statement it runs (the transaction
   * fails and its connection is replaced), unless `finishOnceStarted`.
   */
  readonly signal?: AbortSignal | (() => AbortSignal);
  /**
   * Postgres: a transaction that has started runs to its end whatever its
   * `signal` does (a consumer's batch in flight when the service stops).
   * Without it, a gRPC call's transaction stops when its caller goes.
   */
  readonly finishOnceStarted?: boolean;
  /**
   * Postgres: how long each statement of this transaction may run, ms (0: no
   * limit), instead of the database's (`PostgresOptions.statementTimeoutMs`,
   * 30 s by default). Migrations run without one. SQLite: not used (its
   * statements wait on no server).
   */
  readonly statementTimeoutMs?: number;
  /**
   * Postgres: how long this transaction may wait for a lock another session
   * holds, ms; past it the transaction fails ABORTED, nothing changed. It
   * waits in slices of 200 ms at most, giving its pooled connection back and
   * running again from the start after each, so that callers that came
   * meanwhile are served between them. A gRPC call's
   * transactions have one (`callTransaction`): a row held for long (an open
   * `psql` transaction, a migration) kept each call that needed it, with a
   * pooled connection, until the statement timeout, and with ten such the
   * instance's other calls waited for a connection. Without it, the
   * session's own (`lock_timeout`, none by default). SQLite: not used (its
   * one writer takes no row locks).
   */
  readonly lockWaitMs?: number;
}

/** The signal of a transaction's options, asked for now. */
export const signalOf = (options: TransactionOptions | undefined): AbortSignal | undefined =>
  typeof options?.signal === "function" ? options.signal() : options?.signal;

/** A service's database: its tables, its transactions, its reads. */
export interface Database extends Queryable {
  /**
   * Runs `work` in one transaction and commits (staged writes first, then
   * COMMIT, then the after-commit callbacks), or rolls back and rethrows
   * when it throws. `work` must not wait on anything outside the database
   * (a remote call): SQLite has one writer, so others wait meanwhile. Nor
   * on another transaction's answer: on SQLite, one queued ahead of it is
   * answered only once the group it left open for this one commits (see
   * openSqlite), so the two would wait for each other for good.
   */
  transaction<T>(work: (tx: Transaction) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /**
   * Runs one statement outside any transaction, as `run` does, but on Postgres
   * on a connection of its own with `statementTimeoutMs` as its limit (0:
   * none) instead of the database's: for a statement that refuses to run
   * inside a transaction and may run long (CREATE INDEX CONCURRENTLY). SQLite:
   * as `run`.
   */
  runAlone(sql: string, options: { readonly statementTimeoutMs: number }): Promise<number>;
  /** Throws when the database cannot be reached; used by health checks. */
  ping(): Promise<void>;
  /**
   * Takes the lock `key` for this process unless another holds it (then
   * undefined): who does work that one process at a time must do (the
   * outbox relay). Postgres: a session advisory lock on a connection of its
   * own, so the lock goes when the process dies. SQLite: always granted, as
   * one process at a time uses a database file.
   */
  tryLock(key: number): Promise<SessionLock | undefined>;
  /**
   * Calls `listener` on every notification on `channel` (Postgres's LISTEN,
   * sent with pg_notify in a transaction, delivered at its commit), and once
   * each time a broken listening connection is made again, as what was sent
   * meanwhile is lost; resolves with the unsubscribe. SQLite: nothing is
   * ever sent across processes.
   */
  listen(channel: string, listener: () => void): Promise<() => Promise<void>>;
  /** Closes every connection; later calls fail. Safe to call twice. */
  close(): Promise<void>;
  /** Where it is, for logs and messages, without credentials. */
  readonly location: string;
  /** How long a statement may run, ms, where the database limits it (Postgres's statement_timeout; 0: no limit). */
  readonly statementTimeoutMs?: number;
  /**
   * Why the database refuses writes now: "full" or "failing" from a transaction or statement that failed for its storage
   * (storageRefusalOf) until a write commits again; undefined while writes commit. Reads may work meanwhile.
   */
  storageRefusal(): StorageRefusal | undefined;
}

/**
 * One schema change, applied once, in order of `id`, in one transaction
 * with its bookkeeping row. `sql` when both stores take the same text, or
 * `sqlite` and `postgres` each.
 */
export type Migration = {
  readonly id: string;
  /**
   * false: on Postgres, its one statement runs outside a transaction and the
   * migration is recorded once it succeeded, for a statement that refuses to
   * run inside one: `CREATE INDEX CONCURRENTLY IF NOT EXISTS <name> ON ...`,
   * whose leftover from a failed build is dropped before it runs again (see
   * `migrate`). SQLite runs it in a transaction as any other. Default true.
   */
  readonly transaction?: boolean;
  /**
   * true: code written before this migration still works on the database
   * after it, reading and writing as it did: an expand step (a new table, a
   * column older inserts may leave out, an index), never a column renamed,
   * dropped or given another meaning. A version of the code that lacks this
   * migration (a rollback, or an instance not yet upgraded) runs on such a
   * database, with a warning, where it refuses one holding any other migration
   * it lacks (see `MigrateOptions.refuseNewer`); the database records the flag
   * with the migration, as the newest code to start on it says. Default false.
   */
  readonly olderCodeWorks?: boolean;
} & ({ readonly sql: string } | { readonly sqlite: string; readonly postgres: string });
