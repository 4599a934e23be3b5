import type { Dialect, Queryable, SqlValue, StagedWrites, Transaction } from "./types.js";

/** What a store's connection gives the shared transaction logic: statements and its dialect. */
export interface StatementRunner {
  readonly dialect: Dialect;
  query<R>(sql: string, params?: readonly SqlValue[]): Promise<R[]>;
  run(sql: string, params?: readonly SqlValue[]): Promise<number>;
  /**
   * Sends `sql` ahead of the next statement, in its round trip, where the
   * connection can: its result is not read, and its failure is the next
   * statement's. Without it, such statements run at once. Returns a mark for
   * `undefer`.
   */
  defer?(sql: string, params?: readonly SqlValue[]): object;
  /**
   * Drops, unsent, what was deferred from `mark` on; false when the statement
   * `mark` stands for was sent already (then everything deferred since, all
   * after it, is dropped).
   */
  undefer?(mark: object): boolean;
}

interface Scope {
  staged: Map<StagedWrites<unknown>, unknown[]>;
  afterCommit: Array<() => void>;
  /** The error of the first statement that failed in this scope (not in a savepoint inside it that rolled back). */
  failed?: unknown;
}

/**
 * A statement failed inside a transaction (or savepoint) whose work caught
 * its error and went on: PostgreSQL has aborted it, so its COMMIT would only
 * roll it back, and its work must not count as done. The same holds on
 * SQLite, which would commit the rest, so that code behaves alike on both.
 * The statement's own error is the cause.
 */
export class CaughtStatementError extends Error {
  override readonly name = "CaughtStatementError";
  constructor(cause: unknown) {
    super(`a statement failed and its error was caught without being rethrown, so the transaction cannot commit: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/**
 * The error of a statement that failed in `tx`'s own scope and was caught
 * (see CaughtStatementError), or undefined: lets a caller that runs several
 * units of work in one transaction tell which one did it.
 */
export function caughtStatementFailure(tx: Transaction): unknown {
  return tx instanceof ScopedTransaction ? tx.failure : undefined;
}

/**
 * Runs `work` as one transaction over `runner`, which has begun it: staged
 * writes are flushed, then `commit` runs, then the after-commit callbacks;
 * on a throw, `rollback` runs and the error propagates, and so it does when
 * a statement failed and `work` caught its error (CaughtStatementError). Savepoints nest
 * inside, each with its own staged writes and callbacks, merged into its
 * parent when it is released and dropped when it rolls back.
 */
export async function runTransaction<T>(runner: StatementRunner, work: (tx: Transaction) => Promise<T>, commit: () => Promise<void>, rollback: () => Promise<void>): Promise<T> {
  const root: Scope = { staged: new Map(), afterCommit: [] };
  let result: T;
  try {
    result = await work(new ScopedTransaction(runner, root, 0));
    if (root.failed !== undefined) throw new CaughtStatementError(root.failed);
    for (const [writes, items] of root.staged) await writes.flush(new ScopedTransaction(runner, root, 0), items);
  } catch (err) {
    await rollback().catch(() => undefined);
    throw err;
  }
  await commit();
  for (const callback of root.afterCommit) callback();
  return result;
}

/** The first half of every keyed advisory lock (`Transaction.lock`); the second is a hash of the key. */
const keyedLockClass = 0x436f6e66; // "Conf"

class ScopedTransaction implements Transaction {
  constructor(
    private readonly runner: StatementRunner,
    private readonly scope: Scope,
    private readonly depth: number,
  ) {}

  get dialect(): Dialect {
    return this.runner.dialect;
  }
  get failure(): unknown {
    return this.scope.failed;
  }
  query<R = Record<string, unknown>>(sql: string, params?: readonly SqlValue[]): Promise<R[]> {
    return this.runner.query<R>(sql, params).catch(this.failed);
  }
  run(sql: string, params?: readonly SqlValue[]): Promise<number> {
    return this.runner.run(sql, params).catch(this.failed);
  }
  /** Records the first failed statement of the scope, then rethrows. */
  private readonly failed = (err: unknown): never => {
    this.scope.failed ??= err;
    throw err;
  };
  afterCommit(callback: () => void): void {
    this.scope.afterCommit.push(callback);
  }
  stage<T>(writes: StagedWrites<T>, item: T): void {
    let items = this.scope.staged.get(writes as StagedWrites<unknown>);
    if (!items) this.scope.staged.set(writes as StagedWrites<unknown>, (items = []));
    items.push(item);
  }
  /** See sendAhead. */
  async ahead(sql: string, params?: readonly SqlValue[]): Promise<void> {
    if (this.runner.defer) this.runner.defer(sql, params);
    else await this.run(sql, params);
  }
  async lock(key: string): Promise<void> {
    if (this.dialect.name === "postgres") await this.ahead("SELECT pg_advisory_xact_lock($1, hashtext($2))", [keyedLockClass, key]);
  }
  async savepoint<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    const name = `sp_${this.depth + 1}`;
    const inner: Scope = { staged: new Map(), afterCommit: [] };
    // Sent with the savepoint's first statement, and what it defers last with its RELEASE: a failure of that is its own.
    const opened = this.runner.defer ? this.runner.defer(`SAVEPOINT ${name}`) : await this.runner.run(`SAVEPOINT ${name}`);
    let result: T;
    try {
      result = await work(new ScopedTransaction(this.runner, inner, this.depth + 1));
      if (inner.failed !== undefined) throw new CaughtStatementError(inner.failed);
      await this.runner.run(`RELEASE SAVEPOINT ${name}`);
    } catch (err) {
      // What it deferred is not sent; nothing is undone when nothing of it was (its SAVEPOINT had not gone yet).
      const reached = typeof opened !== "object" || !this.runner.undefer?.(opened);
      if (reached) {
        await this.runner.run(`ROLLBACK TO SAVEPOINT ${name}`);
        await this.runner.run(`RELEASE SAVEPOINT ${name}`);
      }
      throw err;
    }
    for (const [writes, items] of inner.staged) {
      const outer = this.scope.staged.get(writes);
      if (outer) outer.push(...items);
      else this.scope.staged.set(writes, items);
    }
    this.scope.afterCommit.push(...inner.afterCommit);
    return result;
  }
}

/**
 * Sends `sql`, whose result nobody reads (a SET LOCAL, an INSERT that must
 * simply succeed), ahead of `tx`'s next statement or its COMMIT, in the same
 * round trip (PostgreSQL), or runs it now. Its failure is that next
 * statement's, or the COMMIT's.
 */
export async function sendAhead(tx: Transaction, sql: string, params?: readonly SqlValue[]): Promise<void> {
  if (tx instanceof ScopedTransaction) await tx.ahead(sql, params);
  else await tx.run(sql, params);
}

/** A queryable that is only a runner: reads and single statements outside any transaction. */
export function asQueryable(runner: StatementRunner): Queryable {
  return { dialect: runner.dialect, query: (sql, params) => runner.query(sql, params), run: (sql, params) => runner.run(sql, params) };
}
