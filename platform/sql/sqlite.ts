import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { runTransaction, type StatementRunner } from "./transaction-scope.js";
import type { Database, Dialect, SqlValue, Transaction } from "./types.js";

export const sqliteDialect: Dialect = {
  name: "sqlite",
  anyOf: (param) => `IN (SELECT value FROM json_each(${param}))`,
  forUpdate: "",
};

/** How a statement's `$n` parameters are bound: in order as `?`, or by number when they repeat or skip. */
interface Prepared {
  readonly statement: BetterSqlite3.Statement;
  readonly byNumber: boolean;
}

/** better-sqlite3's statements over one connection, prepared once per SQL text. */
class SqliteRunner implements StatementRunner {
  readonly dialect = sqliteDialect;
  private readonly prepared = new Map<string, Prepared>();

  constructor(readonly connection: BetterSqlite3.Database) {}

  private prepare(sql: string): Prepared {
    let p = this.prepared.get(sql);
    if (!p) {
      const numbers = [...sql.matchAll(/\$(\d+)/g)].map((m) => Number(m[1]));
      const inOrder = numbers.every((n, i) => n === i + 1);
      const text = inOrder ? sql.replace(/\$\d+/g, "?") : sql;
      p = { statement: this.connection.prepare(text), byNumber: !inOrder };
      this.prepared.set(sql, p);
    }
    return p;
  }

  private bind(p: Prepared, params: readonly SqlValue[] | undefined): unknown[] {
    const values = (params ?? []).map(toSqlite);
    if (!p.byNumber) return values;
    const named: Record<string, unknown> = {};
    values.forEach((v, i) => (named[String(i + 1)] = v));
    return [named];
  }

  querySync<R>(sql: string, params?: readonly SqlValue[]): R[] {
    const p = this.prepare(sql);
    const args = this.bind(p, params);
    if (p.statement.reader) return p.statement.all(...args) as R[];
    p.statement.run(...args);
    return [];
  }

  runSync(sql: string, params?: readonly SqlValue[]): number {
    const p = this.prepare(sql);
    return p.statement.run(...this.bind(p, params)).changes;
  }

  query<R>(sql: string, params?: readonly SqlValue[]): Promise<R[]> {
    try {
      return Promise.resolve(this.querySync<R>(sql, params));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  run(sql: string, params?: readonly SqlValue[]): Promise<number> {
    try {
      return Promise.resolve(this.runSync(sql, params));
    } catch (err) {
      return Promise.reject(err);
    }
  }
}

/** Lists go in as JSON arrays (read back with json_each); bytes as Buffers. */
function toSqlite(value: SqlValue): unknown {
  if (Array.isArray(value)) return JSON.stringify(value);
  if (value instanceof Uint8Array && !Buffer.isBuffer(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return value;
}

function open(path: string, readonly: boolean): BetterSqlite3.Database {
  const connection = new BetterSqlite3(path, { readonly });
  if (!readonly) {
    connection.pragma("journal_mode = WAL");
    connection.pragma("synchronous = NORMAL");
    connection.pragma("foreign_keys = ON");
  }
  connection.pragma("busy_timeout = 5000");
  return connection;
}

/**
 * A SQLite database in WAL mode (better-sqlite3 at major version 12): one
 * writing connection, whose transactions run one at a time (a queue, as
 * SQLite has one writer), and one reading connection for statements outside
 * transactions, which see what is committed. Statements run synchronously
 * underneath; the interface is asynchronous so stores work on Postgres too.
 */
export function openSqlite(path: string): Database & { readonly writer: BetterSqlite3.Database } {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  let writerConnection: BetterSqlite3.Database;
  let readerConnection: BetterSqlite3.Database | undefined;
  try {
    writerConnection = open(path, false);
    // An in-memory database has no file for a second connection to share.
    if (path !== ":memory:") readerConnection = open(path, true);
  } catch (err) {
    throw new Error(`opening the SQLite database at ${path} failed: ${(err as Error).message}`, { cause: err });
  }
  const writer = new SqliteRunner(writerConnection);
  const reader = readerConnection ? new SqliteRunner(readerConnection) : undefined;

  /** The transaction queue: each one starts when the one before has finished. */
  let queue: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(work, work);
    queue = run.catch(() => undefined);
    return run;
  };
  const transaction = <T>(work: (tx: Transaction) => Promise<T>): Promise<T> =>
    exclusive(() => {
      writer.runSync("BEGIN IMMEDIATE");
      return runTransaction(
        writer,
        work,
        async () => void writer.runSync("COMMIT"),
        async () => {
          if (writerConnection.inTransaction) writer.runSync("ROLLBACK");
        },
      );
    });

  let closed = false;
  return {
    dialect: sqliteDialect,
    location: path,
    writer: writerConnection,
    transaction,
    query: (sql, params) => (reader ? reader.query(sql, params) : exclusive(() => writer.query(sql, params))),
    run: (sql, params) => exclusive(() => writer.run(sql, params)),
    async ping() {
      (reader ?? writer).querySync("SELECT 1");
    },
    async close() {
      if (closed) return;
      closed = true;
      await queue;
      readerConnection?.close();
      writerConnection.close();
    },
  };
}
