import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readlinkSync, readSync, realpathSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { Code, StatusError } from "../errors/index.js";
import { type StorageRefusal, storageRefusalOf } from "./storage-full.js";
import { startCheckpointer, type Checkpointer, type CheckpointerOptions } from "./sqlite-checkpointer.js";
import { type AfterCommitFailure, runUnit, type StatementRunner, transactionControlRefusal } from "./transaction-scope.js";
import { signalOf, type Database, type Dialect, type SqlValue, type Transaction, type TransactionOptions } from "./types.js";

export const sqliteDialect: Dialect = {
  name: "sqlite",
  // A list parameter is spread into one `?` per item (see SqliteRunner): the fastest IN there is.
  anyOf: (param) => `IN (${param})`,
  forUpdate: "",
};

/**
 * A statement prepared for one shape of its parameters: the SQL's `$n`
 * turned into `?` in order of appearance (a parameter used twice is bound
 * twice), a list parameter spread into one `?` per item.
 */
interface Prepared {
  readonly statement: BetterSqlite3.Statement;
  /** The parameter (0-based) behind each `$n` occurrence, in order. */
  readonly occurrences: readonly number[];
  readonly spreads: boolean;
  /** A query's column names, when its rows come back as arrays (see rowsOf); undefined where better-sqlite3 makes the rows, or there are none. */
  readonly columns: readonly string[] | undefined;
}

/**
 * A query's rows as objects keyed by column name, built here from the
 * arrays better-sqlite3 returns in raw mode: each object made by its
 * native code costs a call into V8's API per column, and a row of eleven
 * columns came back in 4.9 µs that way against 4.2 µs so, 51 rows in 110
 * against 65 µs (`node` on better-sqlite3 12, one connection, rows in the
 * page cache). Every row of a statement gets its keys in the same order,
 * so its objects share one shape, as before.
 */
function rowsOf(raws: unknown[][], columns: readonly string[]): Record<string, unknown>[] {
  const rows = new Array<Record<string, unknown>>(raws.length);
  for (let i = 0; i < raws.length; i++) {
    const raw = raws[i];
    const row: Record<string, unknown> = {};
    for (let c = 0; c < columns.length; c++) row[columns[c]] = raw[c];
    rows[i] = row;
  }
  return rows;
}

/** better-sqlite3's statements over one connection, prepared once per SQL text and list lengths. */
class SqliteRunner implements StatementRunner {
  readonly dialect = sqliteDialect;
  private readonly prepared = new Map<string, Prepared>();
  /** Set while a transaction's work runs on this connection (see ended). */
  inWork = false;
  /**
   * The error of a statement SQLite answered by rolling back the whole
   * transaction (a full disk, say) while its work ran, undefined otherwise.
   * A transaction is begun again at once, so that what the work runs after
   * catching it is rolled back with it, not committed statement by statement.
   */
  ended: unknown;

  constructor(readonly connection: BetterSqlite3.Database) {}

  /** A failed statement's error, after noting whether it ended the transaction its work runs in. */
  private failed(err: unknown): Promise<never> {
    if (this.inWork && this.ended === undefined && !this.connection.inTransaction) {
      this.ended = err;
      try {
        this.connection.exec("BEGIN");
      } catch {
        // A connection that takes no BEGIN takes no statement either: nothing the work runs can be committed.
      }
    }
    return Promise.reject(err);
  }

  private prepare(sql: string, params: readonly SqlValue[] | undefined): Prepared {
    let key = sql;
    if (params) for (let i = 0; i < params.length; i++) if (Array.isArray(params[i])) key += `|${i}:${(params[i] as unknown[]).length}`;
    let p = this.prepared.get(key);
    if (!p) {
      const occurrences: number[] = [];
      let spreads = false;
      const text = sql.replace(/\$(\d+)/g, (_, n: string) => {
        const index = Number(n) - 1;
        occurrences.push(index);
        const value = params?.[index];
        if (!Array.isArray(value)) return "?";
        spreads = true;
        return value.length === 0 ? "" : Array.from({ length: value.length }, () => "?").join(", ");
      });
      const statement = this.connection.prepare(text);
      // Rows as arrays only where the statement names its columns: a `*` can take in a column added to a table
      // after the statement was prepared (SQLite prepares it again, and the names here would be stale), and a
      // column named __proto__ would set the row's prototype here. Such a query keeps better-sqlite3's own objects.
      const columns = statement.reader && !text.includes("*") ? statement.columns().map((c) => c.name) : undefined;
      const raw = columns !== undefined && !columns.includes("__proto__");
      if (raw) statement.raw(true);
      p = { statement, occurrences, spreads, columns: raw ? columns : undefined };
      this.prepared.set(key, p);
    }
    return p;
  }

  private bind(p: Prepared, params: readonly SqlValue[] | undefined): unknown[] {
    const args: unknown[] = [];
    for (const index of p.occurrences) {
      const value = params?.[index];
      if (p.spreads && Array.isArray(value)) args.push(...value);
      else args.push(toSqlite(value === undefined ? null : value));
    }
    return args;
  }

  querySync<R>(sql: string, params?: readonly SqlValue[]): R[] {
    const p = this.prepare(sql, params);
    const args = this.bind(p, params);
    if (p.columns) return rowsOf(p.statement.all(...args) as unknown[][], p.columns) as R[];
    if (p.statement.reader) return p.statement.all(...args) as R[];
    p.statement.run(...args);
    return [];
  }

  runSync(sql: string, params?: readonly SqlValue[]): number {
    const p = this.prepare(sql, params);
    return p.statement.run(...this.bind(p, params)).changes;
  }

  query<R>(sql: string, params?: readonly SqlValue[]): Promise<R[]> {
    try {
      return Promise.resolve(this.querySync<R>(sql, params));
    } catch (err) {
      return this.failed(err);
    }
  }

  run(sql: string, params?: readonly SqlValue[]): Promise<number> {
    try {
      return Promise.resolve(this.runSync(sql, params));
    } catch (err) {
      return this.failed(err);
    }
  }
}

/** Bytes go in as Buffers. */
function toSqlite(value: SqlValue): unknown {
  if (value instanceof Uint8Array && !Buffer.isBuffer(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return value;
}

/**
 * Each connection's page cache, KiB: SQLite's own default. better-sqlite3
 * raises it to 16 MB, which a service fills with the pages it writes (new
 * orders, inbox rows) and then keeps: under saga load the services' resident
 * memory grew with the length of the run (orders 111 MiB after 6 s, 127 MiB
 * after 30 s, and on towards 16 MB more for each of its two connections),
 * while with 2 MiB it stayed where it was after 6 s (109 MiB after 30 s).
 * Pages read again come from the operating system's cache.
 */
const pageCacheKiB = 2_000;

function open(path: string, readonly: boolean): BetterSqlite3.Database {
  const connection = new BetterSqlite3(path, { readonly });
  if (!readonly) {
    connection.pragma("journal_mode = WAL");
    connection.pragma("synchronous = NORMAL");
    connection.pragma("foreign_keys = ON");
  }
  connection.pragma("busy_timeout = 5000");
  connection.pragma(`cache_size = -${pageCacheKiB}`);
  return connection;
}

/** The first 100 bytes of the file at `path`, a SQLite database's header (fewer where the file is shorter); throws what reading throws. */
export function sqliteHeaderOf(path: string): Buffer {
  const fd = openSync(path, "r");
  try {
    const header = Buffer.alloc(100);
    return header.subarray(0, readSync(fd, header, 0, 100, 0));
  } finally {
    closeSync(fd);
  }
}

/** Whether `header` begins with what every SQLite database file begins with (its magic string). */
export const beginsAsSqlite = (header: Buffer): boolean => header.length >= 16 && header.subarray(0, 16).toString("latin1") === "SQLite format 3\0";

/**
 * Whether the SQLite file at `path` may have applied migration `id`, read
 * without changing it: false for a file that is not there or is empty, or
 * one in a rollback journal mode (SQLite's default, another program's
 * database, say) whose schema_migrations lacks it, read on a read-only
 * connection, as a writing one would switch it to WAL, rewriting its
 * header. A file in WAL mode, or one this cannot read, is left to
 * `migrate`'s own check: a writing connection changes nothing of the one
 * and names what is wrong with the other.
 */
export function sqliteMayHaveMigration(path: string, id: string): boolean {
  let header: Buffer;
  try {
    header = sqliteHeaderOf(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    return true;
  }
  if (header.length === 0) return false; // SQLite takes an empty file as a new database
  // The header's file format versions (bytes 18 and 19) are 2 in WAL mode.
  if (header.length < 100 || !beginsAsSqlite(header) || header[18] === 2) return true;
  try {
    const connection = new BetterSqlite3(path, { readonly: true, fileMustExist: true });
    try {
      if (connection.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").get() === undefined) return false;
      return connection.prepare("SELECT 1 FROM schema_migrations WHERE id = ?").get(id) !== undefined;
    } finally {
      connection.close();
    }
  } catch {
    return true;
  }
}

/**
 * The tables (other than SQLite's own) of the SQLite file at `path`, read on a
 * read-only connection, when the file is in a rollback journal mode (SQLite's
 * default, another program's database, say): a writing connection would
 * switch it to WAL, rewriting its header, before anything could look.
 * Undefined for a file in WAL mode, an empty or missing one, or one this
 * cannot read: opening those for writing changes nothing a look here could
 * spare, and `migrate` looks then.
 */
export function rollbackModeTables(path: string): string[] | undefined {
  let header: Buffer;
  try {
    header = sqliteHeaderOf(path);
  } catch {
    return undefined;
  }
  // The header's file format versions (bytes 18 and 19) are 2 in WAL mode.
  if (header.length < 100 || !beginsAsSqlite(header) || header[18] === 2) return undefined;
  try {
    const connection = new BetterSqlite3(path, { readonly: true, fileMustExist: true });
    try {
      return (connection.prepare(userTablesSql).all() as Array<{ name: string }>).map((t) => t.name);
    } finally {
      connection.close();
    }
  } catch {
    return undefined;
  }
}

/** The names of a SQLite database's tables, SQLite's own (sqlite_*) left out, in order. */
export const userTablesSql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name";

export interface SqliteOptions {
  /** Checkpointing failed and SQLite's own checkpoints, in commits, took over (see sqlite-checkpointer.ts). */
  readonly onCheckpointFailure?: (err: Error) => void;
  /** The file was deleted or replaced while open: writes are refused from then on (see watchDetachment). */
  readonly onDetached?: (detached: SqliteDetached) => void;
  /** An after-commit callback failed; its transaction is committed and answered all the same (see UnitDone.afterCommit). */
  readonly onAfterCommitFailure?: AfterCommitFailure;
  /** How the checkpoints flush a file (`CheckpointerOptions.flush`): tests hold a flush with it. */
  readonly checkpointFlush?: CheckpointerOptions["flush"];
}

/**
 * What became of a SQLite database whose file was deleted or replaced while
 * open: where its data, as it was when writes stopped, was saved, or why it
 * could not be, and then, for a deleted file, where this process can still
 * read it (Linux's /proc) until it stops.
 */
export type SqliteDetached =
  | { readonly how: "deleted" | "replaced"; readonly savedTo: string }
  | { readonly how: "deleted" | "replaced"; readonly saveError: Error; readonly heldAt?: { readonly database: string; readonly log: string } };

/**
 * Holds `path` for this process as a service's database, until `release`:
 * SQLite lets any number of processes open one file, and two instances of
 * a service on one file would each relay its outbox and take its events.
 * The hold is an exclusive lock SQLite keeps on a file beside it
 * (`<path>-lock`, locking_mode EXCLUSIVE, written once): the system drops
 * it with the process, however that ends, so no stale claim is left.
 * Throws FAILED_PRECONDITION when another process (or connection) holds it:
 * the other is to stop, or this one to get a file of its own. Tools that
 * read or repair a service's database while it runs do not claim it.
 */
export function claimSqliteFile(path: string): { release(): void } {
  const file = `${path}-lock`;
  mkdirSync(dirname(file), { recursive: true });
  if (!existsSync(file)) closeSync(openSync(file, "a", 0o600));
  let connection: BetterSqlite3.Database;
  try {
    connection = new BetterSqlite3(file, { timeout: 0 });
  } catch (err) {
    // SQLite's own words ("unable to open database file") name no file: another user's claim file, say.
    throw new Error(`claiming the SQLite database ${path} (${file}) failed: ${(err as Error).message}`, { cause: err });
  }
  try {
    connection.pragma("locking_mode = EXCLUSIVE");
    connection.exec(`CREATE TABLE IF NOT EXISTS held_by (pid INTEGER NOT NULL); DELETE FROM held_by; INSERT INTO held_by VALUES (${process.pid})`);
  } catch (err) {
    connection.close();
    if ((err as { code?: string }).code?.startsWith("SQLITE_BUSY")) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `the SQLite database ${path} is in use by another process (an instance of this service already running on it, say): ` +
          "one process at a time runs a service on a SQLite file; stop the other first, or give this one a database of its own " +
          '(several instances of a service share PostgreSQL: see README "On PostgreSQL, several instances of each service")',
        { cause: err },
      );
    }
    throw new Error(`claiming the SQLite database ${path} (${file}) failed: ${(err as Error).message}`, { cause: err });
  }
  return {
    release: () => {
      if (connection.open) connection.close();
    },
  };
}

/** Whether `err`, from opening a database, says its file is no SQLite database at all (a JSON or text file named by mistake). */
export function isNotSqliteFile(err: unknown): boolean {
  return err instanceof Error && (err.cause as { code?: unknown } | undefined)?.code === "SQLITE_NOTADB";
}

/**
 * A SQLite database in WAL mode (better-sqlite3 at major version 12): one
 * writing connection, whose transactions run one at a time (a queue, as
 * SQLite has one writer), and one reading connection. A statement outside
 * a transaction runs on the writing connection when no transaction is open
 * there (its page cache is the warm one), and on the reading connection
 * while one is, so it never sees uncommitted writes nor waits for them.
 * Statements run synchronously underneath; the interface is asynchronous so
 * stores work on Postgres too. A file database is checkpointed after
 * commits, its flushes to disk off the event loop (see sqlite-checkpointer.ts).
 */
export function openSqlite(path: string, options: SqliteOptions = {}): Database & { readonly writer: BetterSqlite3.Database } {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  // A database this opening makes is its owner's alone (customers' addresses, say); SQLite gives its log and shared
  // memory files the database file's mode. One that exists keeps the mode it has.
  let writerConnection: BetterSqlite3.Database;
  let readerConnection: BetterSqlite3.Database | undefined;
  try {
    // An empty file is a database SQLite takes as new.
    if (path !== ":memory:" && !existsSync(path)) closeSync(openSync(path, "a", 0o600));
    writerConnection = open(path, false);
    // An in-memory database has no file for a second connection to share.
    if (path !== ":memory:") readerConnection = open(path, true);
  } catch (err) {
    throw new Error(`opening the SQLite database at ${path} failed: ${(err as Error).message}`, { cause: err });
  }
  const writer = new SqliteRunner(writerConnection);
  const reader = readerConnection ? new SqliteRunner(readerConnection) : undefined;
  const detachment = path === ":memory:" ? undefined : watchDetachment(path, (how) => void saveDetached(how));
  // The name /proc gives the open file, its folder's links resolved, taken while the folder is there.
  const realPath = path === ":memory:" ? path : join(realpathSync(dirname(path)), basename(path));
  /** The data of a file deleted or replaced under it, copied from the connection (its log included) to a file beside it. */
  const saveDetached = async (how: "deleted" | "replaced"): Promise<void> => {
    const savedTo = `${path}.saved-${new Date().toISOString().replace(/[:.]/g, "-")}`;
    const heldAt = heldDescriptors(realPath);
    try {
      // Its owner's alone, as the database it copies (see below). In the transaction queue, so that a close waits
      // for it; writes are refused from now on. No group is open when its turn comes (alone's commit of one is run's):
      // a transaction asked for from now on is refused before it counts as waiting, and those that counted are ahead
      // of it in the queue, so the last of them, with none waiting, commits the group.
      closeSync(openSync(savedTo, "wx", 0o600));
      await alone(() => writerConnection.backup(savedTo));
      options.onDetached?.({ how, savedTo });
    } catch (err) {
      options.onDetached?.({ how, saveError: err as Error, ...(heldAt && { heldAt }) });
    }
  };
  /** Undefined once it has failed: SQLite's own checkpoints in the committing connection then take over. */
  let checkpointer: Checkpointer | undefined;
  let checkpointerToClose: Checkpointer | undefined;
  const checkpointOnCommit = (err: Error) => {
    checkpointer = undefined;
    if (writerConnection.open) writerConnection.pragma("wal_autocheckpoint = 1000");
    options.onCheckpointFailure?.(err);
  };
  if (path !== ":memory:") {
    writerConnection.pragma("wal_autocheckpoint = 0");
    try {
      checkpointer = checkpointerToClose = startCheckpointer({ path, onFailure: checkpointOnCommit, ...(options.checkpointFlush && { flush: options.checkpointFlush }) });
    } catch (err) {
      checkpointOnCommit(err as Error);
    }
  }

  /** The transaction queue: each one starts when the one before has finished. */
  let queue: Promise<unknown> = Promise.resolve();
  let queued = 0;
  const dequeued = () => {
    queued--;
  };
  /**
   * Group commit. A transaction that ends while others wait in the queue
   * leaves its BEGIN open for them: each runs in a savepoint of it, and one
   * COMMIT ends them all, after which each caller is answered. A COMMIT
   * costs SQLite its log writes and file locks whatever it holds, so under
   * load that is most of a small transaction's cost; with nothing waiting,
   * a transaction commits as soon as its work is done, as alone. A unit of
   * work that fails rolls back its savepoint only; a COMMIT that fails, or
   * a failure SQLite answers by rolling back the whole transaction (a full
   * disk, say), fails every transaction of the group with that error: none
   * of them was answered yet, and none is kept.
   */
  let group: CommitGroup | undefined;
  /** Transactions queued that have not started: while some are, one that ends leaves the group open for them. */
  let transactionsWaiting = 0;
  /** A ROLLBACK that ended a failed group failed too: its transaction is still open (see endLeftOpen). */
  let leftOpen = false;
  const commitGroup = (): void => {
    const ending = group;
    if (!ending) return;
    group = undefined;
    try {
      writer.runSync("COMMIT");
    } catch (err) {
      // A COMMIT that fails (a deferred constraint, a full disk) leaves the transaction open: ended here, or every later BEGIN
      // would fail. Its transactions fail whatever the ROLLBACK does: none of them may wait for good.
      try {
        if (writerConnection.inTransaction) writer.runSync("ROLLBACK");
      } finally {
        leftOpen = writerConnection.inTransaction;
        ending.failed(err);
      }
      return;
    }
    ending.done();
    checkpointed(ending.units);
  };
  /**
   * Ends a transaction a failed COMMIT left open, its ROLLBACK failing too
   * (see commitGroup), once it can be: its transactions have failed, and
   * what ran in it since (a statement run alone) would be answered and
   * never committed.
   */
  const endLeftOpen = (): void => {
    if (!group && writerConnection.inTransaction) writer.runSync("ROLLBACK");
    leftOpen = false;
  };
  /** Ends the open group when no transaction waits to join it. */
  const commitUnlessJoined = (): void => {
    if (transactionsWaiting === 0 || (group && group.units >= maxGroupUnits)) commitGroup();
  };
  /** While set, a write task waits for it before it starts (a rewind of the log); the write task under way. */
  let held: Promise<void> | undefined;
  let underWay: Promise<unknown> | undefined;
  const gated = async <T>(work: () => Promise<T>): Promise<T> => {
    while (held) await held;
    const task = work();
    underWay = task;
    try {
      return await task;
    } finally {
      if (underWay === task) underWay = undefined;
    }
  };
  /** No write task starts until the returned release is called; resolves once the one under way, if any, has ended. */
  const holdWrites = async (): Promise<() => void> => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    held = gate;
    await underWay?.catch(() => undefined);
    // No write transaction may be open while the log is rewound: a group left open for transactions now held back ends here.
    try {
      commitGroup();
    } catch {
      // Its COMMIT and ROLLBACK both failed: its transactions have failed with the COMMIT's error, and the next BEGIN
      // ends what is left open (see transaction). Writes are not to be held back for good for it.
    }
    return () => {
      if (held === gate) held = undefined;
      release();
    };
  };
  const exclusive = <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(
      () => gated(work),
      () => gated(work),
    );
    queued++;
    queue = run.then(dequeued, dequeued);
    return run;
  };
  /** A write task that is no transaction's: the group left open before it ends first. */
  const alone = <T>(work: () => Promise<T>): Promise<T> =>
    exclusive(() => {
      commitGroup();
      if (leftOpen) endLeftOpen();
      return work();
    });
  /** After each commit (of `transactions` transactions); a rewind of the log holds write transactions back while it copies the log (holdWrites). */
  const checkpointed = (transactions = 1) => {
    const active = checkpointer;
    if (active?.committed(transactions) === "rewind") void active.rewind(holdWrites);
  };
  const { onAfterCommitFailure } = options;
  /** Set by a transaction or statement that failed for the storage (SQLITE_FULL, an I/O error), until a write commits. */
  let refusal: StorageRefusal | undefined;
  /** The writing connection's total_changes() when the refusal was last seen: a commit with more since wrote. */
  let changesAtRefusal = 0;
  const noteRefusal = (err: unknown): void => {
    const seen = storageRefusalOf(err);
    if (seen === undefined || !writerConnection.open) return;
    refusal = seen;
    changesAtRefusal = totalChanges();
  };
  const totalChanges = () => (writerConnection.prepare("SELECT total_changes() AS n").get() as { n: number }).n;
  /** Ends the refusal once a commit wrote (a read's commit succeeds on a full disk): asked only while there is one. */
  const endRefusalIfWritten = (): void => {
    if (writerConnection.open && totalChanges() > changesAtRefusal) refusal = undefined;
  };
  const transaction = async <T>(work: (tx: Transaction) => Promise<T>, options?: TransactionOptions): Promise<T> => {
    try {
      // A lazy signal is asked for only when the transaction waits: with nothing ahead of it,
      // it starts before any I/O could cancel its caller. A signal given as it is is always checked.
      const signal = queued > 0 || typeof options?.signal !== "function" ? signalOf(options) : undefined;
      const refused = detachment?.refusal();
      if (refused) throw refused;
      // Refused before it is counted as waiting: the group of one asked for before the close would be left open for it,
      // and end without a COMMIT when the connections close.
      if (closed) throw new StatusError(Code.UNAVAILABLE, "the database is closed: no transaction starts on it");
      transactionsWaiting++;
      const { done, joined } = await exclusive(async () => {
        transactionsWaiting--;
        let joined: CommitGroup;
        // The first unit of a group needs no savepoint: while it runs, it is the transaction's only one.
        let first = false;
        try {
          signal?.throwIfAborted();
          const refused = detachment?.refusal();
          if (refused) throw refused;
          if (group) writer.runSync("SAVEPOINT concord_unit");
          else {
            try {
              writer.runSync("BEGIN IMMEDIATE");
            } catch (err) {
              if (!writerConnection.inTransaction) throw err;
              endLeftOpen();
              writer.runSync("BEGIN IMMEDIATE");
            }
            group = new CommitGroup();
            first = true;
          }
          joined = group;
          joined.units++;
          writer.inWork = true;
        } catch (err) {
          commitUnlessJoined();
          throw err;
        }
        /** The whole transaction rolled back (by SQLite, a full disk say, or as its first unit's): its other units with it. */
        const lost = (err: unknown): void => {
          try {
            if (writerConnection.inTransaction) writer.runSync("ROLLBACK");
          } finally {
            leftOpen = writerConnection.inTransaction;
            if (group === joined) group = undefined;
            joined.failed(err);
          }
        };
        try {
          const done = await runUnit(writer, work, async (err) => {
            writer.inWork = false;
            try {
              if (first || writer.ended !== undefined || !writerConnection.inTransaction) return lost(writer.ended ?? err);
              writer.runSync("ROLLBACK TO concord_unit");
              writer.runSync("RELEASE concord_unit");
            } catch (undoing) {
              lost(undoing);
            }
          });
          writer.inWork = false;
          try {
            // Its work caught the failure that ended the transaction, and that of the savepoint it was in.
            if (writer.ended !== undefined) throw writer.ended;
            if (!first) writer.runSync("RELEASE concord_unit");
          } catch (err) {
            lost(err);
            throw err;
          }
          return { done, joined };
        } finally {
          writer.inWork = false;
          writer.ended = undefined;
          if (group === joined) commitUnlessJoined();
        }
      });
      const committed = joined.committed();
      if (committed) await committed;
      done.afterCommit(onAfterCommitFailure);
      if (refusal !== undefined) endRefusalIfWritten();
      return done.result;
    } catch (err) {
      noteRefusal(err);
      throw err;
    }
  };

  const run = (sql: string, params?: readonly SqlValue[]): Promise<number> =>
    alone(async () => {
      const refused = transactionControlRefusal(sql) ?? detachment?.refusal();
      if (refused) throw refused;
      let changes: number;
      try {
        changes = await writer.run(sql, params);
      } catch (err) {
        noteRefusal(err);
        throw err;
      }
      // A statement alone commits as it runs.
      if (refusal !== undefined && changes > 0) refusal = undefined;
      checkpointed();
      return changes;
    });
  let closed = false;
  let closing: Promise<void> | undefined;
  return {
    dialect: sqliteDialect,
    location: path,
    writer: writerConnection,
    transaction,
    query(sql, params) {
      const refused = transactionControlRefusal(sql);
      if (refused) return Promise.reject(refused);
      return !writerConnection.inTransaction ? writer.query(sql, params) : reader ? reader.query(sql, params) : alone(() => writer.query(sql, params));
    },
    run,
    storageRefusal: () => refusal,
    // Its statements wait on no server: no timeout to set.
    runAlone: (sql) => run(sql),
    async ping() {
      const refused = detachment?.check();
      if (refused) throw refused;
      (reader ?? writer).querySync("SELECT 1");
    },
    async tryLock() {
      return { lost: new Promise<void>(() => {}), release: async () => {} };
    },
    async listen() {
      return async () => {};
    },
    close() {
      closed = true;
      // A second close, while the first waits for the transactions queued, is done when that one is.
      closing ??= closeAll().catch((err: unknown) => {
        // A connection refused to close (a statement of its still open): a later close tries again.
        closed = false;
        closing = undefined;
        throw err;
      });
      return closing;
    },
  };

  async function closeAll(): Promise<void> {
    await queue;
    const closeConnections = () => {
      readerConnection?.close();
      writerConnection.close();
    };
    if (checkpointerToClose) await checkpointerToClose.close(closeConnections);
    else closeConnections();
  }
}

/**
 * Watches that `path` still names the file the connections opened. A file
 * deleted (or replaced, by a copy put in its place) while the service runs
 * goes on taking its writes, through the descriptors it holds, and they are
 * gone when the process ends: the next start made an empty database there,
 * and every order of the old one answered NOT_FOUND. `check` (the readiness
 * check's ping, every 2 s) looks at the path; once it names another file or
 * none, `refusal` is the UNAVAILABLE error every write is refused with, and
 * `detached` is told once, with how. A write looks too, at most every
 * `writeCheckMs`, so that at most that long of writes (not the readiness
 * check's 2 s) go to the lost file.
 */
function watchDetachment(path: string, detached: (how: "deleted" | "replaced") => void): { check(): StatusError | undefined; refusal(): StatusError | undefined } {
  const identityOf = (): { dev: number; ino: number } | undefined => statSync(path, { throwIfNoEntry: false });
  const opened = identityOf();
  let refused = false;
  // Made for each refusal, so that its stack is the refused write's.
  // Callers are told what to do, not where the server keeps its files: the log says that (`detached`).
  const refusal = () => new StatusError(Code.UNAVAILABLE, "the service's database file was deleted or replaced while it ran: it takes no writes until it is put back and the service started again");
  let checkedAt = performance.now();
  const watch = {
    refusal(): StatusError | undefined {
      if (refused) return refusal();
      if (performance.now() - checkedAt < writeCheckMs) return undefined;
      return watch.check();
    },
    check(): StatusError | undefined {
      checkedAt = performance.now();
      if (refused) return refusal();
      if (!opened) return undefined;
      let now: { dev: number; ino: number } | undefined;
      try {
        now = identityOf();
      } catch {
        // A path that cannot be looked at (a directory made unreadable) says nothing of the file: left to SQLite.
        return undefined;
      }
      if (now && now.dev === opened.dev && now.ino === opened.ino) return undefined;
      refused = true;
      detached(now ? "replaced" : "deleted");
      return refusal();
    },
  };
  return watch;
}

/** How often, at most, a write looks whether its database file is still there (one stat of the path). */
const writeCheckMs = 100;

/**
 * Where this process's descriptors of the deleted file it opened as
 * `realPath` (its folder's links resolved), and of its log
 * (`<realPath>-wal`), deleted or not, can be read (Linux's /proc), when
 * both are found: the two copied back under their names make the database
 * as it was, the log's commits applied at its next opening.
 */
function heldDescriptors(realPath: string): { database: string; log: string } | undefined {
  try {
    let database: string | undefined;
    let log: string | undefined;
    for (const fd of readdirSync("/proc/self/fd")) {
      let target: string;
      try {
        target = readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        continue; // closed meanwhile
      }
      const at = `/proc/${process.pid}/fd/${fd}`;
      if (target === `${realPath} (deleted)`) database ??= at;
      else if (target === `${realPath}-wal` || target === `${realPath}-wal (deleted)`) log ??= at;
    }
    return database && log ? { database, log } : undefined;
  } catch {
    // No /proc: nothing to point at.
    return undefined;
  }
}

/** Transactions a group commits at most: the first of them waits for the others' work before it is answered. */
const maxGroupUnits = 64;

/** The transactions that share one SQLite transaction (see openSqlite's group commit) and its COMMIT. */
class CommitGroup {
  units = 0;
  private outcome: { readonly ok: true } | { readonly ok: false; readonly err: unknown } | undefined;
  private waiting: { readonly promise: Promise<void>; resolve(): void; reject(err: unknown): void } | undefined;
  /**
   * Undefined once committed; otherwise a promise of the COMMIT, rejected
   * when the group ends without one. Made only when asked for while the
   * group is open: a transaction alone is committed before it asks.
   */
  committed(): Promise<void> | undefined {
    if (this.outcome?.ok) return undefined;
    if (this.outcome) return Promise.reject(this.outcome.err);
    if (!this.waiting) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.waiting = { promise, resolve, reject };
    }
    return this.waiting.promise;
  }
  /** Committed: its transactions are answered. */
  done(): void {
    if (this.outcome) return;
    this.outcome = { ok: true };
    this.waiting?.resolve();
  }
  /** Ended without committing: its transactions fail with `err`. */
  failed(err: unknown): void {
    if (this.outcome) return;
    this.outcome = { ok: false, err };
    this.waiting?.reject(err);
  }
}
