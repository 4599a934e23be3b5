import { causeChain } from "../errors/index.js";
import type { Dialect, SqlValue, StagedWrites, Transaction } from "./types.js";

/** What a store's connection gives the shared transaction logic: statements and its dialect. */
export interface StatementRunner {
  readonly dialect: Dialect;
  query<R>(sql: string, params?: readonly SqlValue[]): Promise<R[]>;
  run(sql: string, params?: readonly SqlValue[]): Promise<number>;
  /**
   * Sends `sql` ahead of the next statement, in its round trip, where the
   * connection can: its result is not read (only its row count, against
   * `check`), and its failure is the next statement's. Without it, such
   * statements run at once. Returns a mark for `undefer`.
   */
  defer?(sql: string, params?: readonly SqlValue[], check?: AheadCheck): object;
  /** How many statements were deferred so far (see aheadMark). */
  deferredCount?(): number;
  /**
   * Sends now, in one round trip, what was deferred up to the last
   * statement deferred with a check, and fails as its check does: what ends
   * a scope (RELEASE, COMMIT) must not go before those counts are seen.
   */
  settleChecks?(): Promise<void>;
  /**
   * Drops, unsent, what was deferred from `mark` on; false when the statement
   * `mark` stands for was sent already (then everything deferred since, all
   * after it, is dropped).
   */
  undefer?(mark: object): boolean;
}

/** How many rows a statement sent ahead must change; `error` is its failure when the count differs. */
export interface AheadCheck {
  readonly rows: number;
  readonly error: (changed: number) => Error;
}

/**
 * Errors of statements sent ahead of the statement that reported them (see
 * isSentAheadFailure), with the failed statement's place in the order its
 * transaction deferred statements (see aheadMark) where it is known.
 */
const sentAheadFailures = new WeakMap<object, number | undefined>();

/**
 * Marks `err` as the failure of a statement sent ahead of the one that
 * reported it, the `serial`th its transaction deferred when known; returns
 * it. A mark already on `err` is kept.
 */
export function sentAheadFailure<E>(err: E, serial?: number): E {
  // A wrapper (a timeout's DEADLINE_EXCEEDED, say) of an error already marked keeps the mark its cause has.
  if (typeof err === "object" && err !== null && markedIn(err) === undefined) sentAheadFailures.set(err, serial);
  return err;
}

/** The first error of `err`'s cause chain that is marked as a failure sent ahead. */
function markedIn(err: unknown): object | undefined {
  for (const e of causeChain(err, 5)) if (sentAheadFailures.has(e)) return e;
  return undefined;
}

/**
 * Whether `err` (or an error it wraps) is the failure of a statement sent
 * ahead of the statement it surfaced at (`sendAhead`, `Transaction.lock`, a
 * savepoint's opening), or of such a statement's row count: the work that
 * sent it may have been an earlier unit of work in the same transaction.
 * With `since` (an `aheadMark` taken when a unit of work began), whether
 * it is such a failure of a statement deferred before then: a failure of
 * one the unit deferred itself is its own, and so is not counted here.
 */
export function isSentAheadFailure(err: unknown, since?: number): boolean {
  const marked = markedIn(err);
  if (marked === undefined) return false;
  const serial = sentAheadFailures.get(marked);
  return since === undefined || serial === undefined || serial <= since;
}

/**
 * How many statements `tx`'s transaction has deferred so far: taken when a
 * unit of work begins, it tells that unit's own statements sent ahead from
 * those of the work before it (isSentAheadFailure's `since`). Undefined
 * where nothing is deferred (SQLite runs every statement at once).
 */
export function aheadMark(tx: Transaction): number | undefined {
  return tx instanceof ScopedTransaction ? tx.aheadMark() : undefined;
}

interface Scope {
  staged: Map<StagedWrites<unknown>, unknown[]>;
  afterCommit: Array<() => void>;
  /** The error of the first statement that failed in this scope (not in a savepoint inside it that rolled back). */
  failed?: unknown;
  /** The scope a savepoint's is inside; undefined for a transaction's own. */
  readonly parent: Scope | undefined;
  /** Savepoints opened directly in it that have not ended: none may be left when its work returns. */
  running: number;
  /**
   * Set once its work is over (the unit of work returned or threw, the
   * savepoint was released or rolled back): a statement run through it
   * later, by work that did not await it, would run in whatever
   * transaction is open then (on SQLite, another caller's unit of work in
   * the same group; on PostgreSQL, the next user of the pooled connection),
   * and is refused instead.
   */
  ended: boolean;
}

/**
 * A statement that begins or ends a transaction or a savepoint, after any
 * comments before it. Run through a transaction it would end the transaction
 * its work runs in (on SQLite, the group's, which other callers' work
 * shares: they would be committed early, then answered with the group's
 * failed COMMIT); run through the database, it would leave the connection
 * inside a transaction for whoever uses it next.
 */
const transactionControl = /^(?:\s|--[^\n]*(?:\n|$)|\/\*(?:[^*]|\*(?!\/))*\*\/)*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE|ABORT|START\s+TRANSACTION|PREPARE\s+TRANSACTION)\b/i;

/**
 * The refusal of `sql` when it begins or ends a transaction or savepoint
 * (see transactionControl), else undefined: transactions are the
 * database's `transaction`, savepoints `tx.savepoint`.
 */
export function transactionControlRefusal(sql: string): Error | undefined {
  const control = transactionControl.exec(sql);
  if (control === null) return undefined;
  return new Error(
    `${control[1].replace(/\s+/g, " ").toUpperCase()} was refused, nothing run: a transaction is begun by the database's transaction() and ends with its work ` +
      "(committed when the work returns, rolled back when it throws); a part of it that may fail alone runs in tx.savepoint()",
  );
}

/** The failure of work (a transaction's, or a savepoint's) that returned while a savepoint of it still ran, not awaited. */
const savepointStillRunning = (whose: string) =>
  new Error(`a savepoint was still running when the ${whose} work returned (it was not awaited): nothing of that work is kept`);

/**
 * The refusal of a statement run, a write staged or a callback asked for
 * through a transaction, or a savepoint, whose work is over: `what` says
 * which, and what became of it.
 */
const endedError = (what = "a statement was run through it (a statement or savepoint not awaited): it was not run") =>
  new Error(`the transaction's work had ended when ${what}`);

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
export async function runTransaction<T>(
  runner: StatementRunner,
  work: (tx: Transaction) => Promise<T>,
  commit: () => Promise<void>,
  rollback: () => Promise<void>,
  onCallbackFailure?: AfterCommitFailure,
): Promise<T> {
  const done = await runUnit(runner, work, rollback);
  await commit();
  done.afterCommit(onCallbackFailure);
  return done.result;
}

/**
 * Told of an after-commit callback that threw (or returned a promise that
 * rejected), with its error: the transaction is committed all the same, and
 * its caller gets its result. Without one, the error goes to standard error.
 */
export type AfterCommitFailure = (err: unknown) => void;

const printAfterCommitFailure: AfterCommitFailure = (err) =>
  console.error(`a callback run after its transaction committed failed (the transaction's writes are kept): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);

/** Tells `told` of `err`; a teller that throws in turn is not let turn the committed transaction into a failed one. */
function tell(told: AfterCommitFailure, err: unknown): void {
  try {
    told(err);
  } catch {
    // Nothing more to do: the writes are kept and the caller is answered.
  }
}

/** A unit of work done, its writes flushed, not yet committed. */
export interface UnitDone<T> {
  readonly result: T;
  /**
   * Runs the callbacks the work asked for after its commit: call once that
   * commit is done. A callback that fails is told to `failed` and the others
   * run: the commit happened, so the caller is to be answered with its result
   * (a caller answered with an error would try again a write that was made).
   */
  afterCommit(failed?: AfterCommitFailure): void;
}

/**
 * Runs `work` as runTransaction does, up to its commit, which is the
 * caller's: a unit of work that shares its transaction with others (SQLite's
 * group commit). On a throw, `rollback` runs with the error, which propagates.
 */
export async function runUnit<T>(runner: StatementRunner, work: (tx: Transaction) => Promise<T>, rollback: (err: unknown) => Promise<void>): Promise<UnitDone<T>> {
  // Every field set here, as in a savepoint's: one shape for all scopes.
  const root: Scope = { staged: new Map(), afterCommit: [], parent: undefined, running: 0, ended: false };
  let result: T;
  try {
    result = await work(new ScopedTransaction(runner, root, 0));
    if (root.running > 0) throw savepointStillRunning("transaction's");
    if (root.failed !== undefined) throw new CaughtStatementError(root.failed);
    for (const [writes, items] of root.staged) await writes.flush(new ScopedTransaction(runner, root, 0), items);
  } catch (err) {
    root.ended = true;
    await rollback(err).catch(() => undefined);
    throw err;
  }
  root.ended = true;
  return {
    result,
    afterCommit: (failed = printAfterCommitFailure) => {
      for (const callback of root.afterCommit) {
        try {
          // Typed as returning nothing, which an async function passes for: its rejection would otherwise go unheard.
          const returned: unknown = callback();
          if (returned instanceof Promise) returned.catch((err: unknown) => tell(failed, err));
        } catch (err) {
          tell(failed, err);
        }
      }
    },
  };
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
  /** Whether this scope's work, or that of one it is inside, is over (see Scope.ended). */
  private ended(): boolean {
    for (let scope: Scope | undefined = this.scope; scope; scope = scope.parent) if (scope.ended) return true;
    return false;
  }
  query<R = Record<string, unknown>>(sql: string, params?: readonly SqlValue[]): Promise<R[]> {
    const refused = this.refusal(sql);
    if (refused) return Promise.reject(refused);
    return this.runner.query<R>(sql, params).catch(this.failed);
  }
  run(sql: string, params?: readonly SqlValue[]): Promise<number> {
    const refused = this.refusal(sql);
    if (refused) return Promise.reject(refused);
    return this.runner.run(sql, params).catch(this.failed);
  }
  /** Why `sql` may not run through this transaction now, if it may not: its work is over, or it is transaction control. */
  private refusal(sql: string): Error | undefined {
    return this.ended() ? endedError() : transactionControlRefusal(sql);
  }
  /** Records the first failed statement of the scope, then rethrows. */
  private readonly failed = (err: unknown): never => {
    this.scope.failed ??= err;
    throw err;
  };
  afterCommit(callback: () => void): void {
    // Its scope's callbacks were run (or dropped) already: this one would be lost without a word.
    if (this.ended()) throw endedError("an after-commit callback was asked for through it (by work not awaited): it will not run");
    this.scope.afterCommit.push(callback);
  }
  stage<T>(writes: StagedWrites<T>, item: T): void {
    // Its scope's staged writes are flushed (or dropped) already: the write would be lost without a word.
    if (this.ended()) throw endedError("a write was staged through it (by work not awaited): it will not be written");
    let items = this.scope.staged.get(writes as StagedWrites<unknown>);
    if (!items) this.scope.staged.set(writes as StagedWrites<unknown>, (items = []));
    items.push(item);
  }
  /** See aheadMark. */
  aheadMark(): number | undefined {
    return this.runner.deferredCount?.();
  }
  /** See sendAhead. */
  async ahead(sql: string, params?: readonly SqlValue[], check?: AheadCheck): Promise<void> {
    const refused = this.refusal(sql);
    if (refused) throw refused;
    if (this.runner.defer) {
      this.runner.defer(sql, params, check);
      return;
    }
    const changed = await this.run(sql, params);
    if (check && changed !== check.rows) this.failed(check.error(changed));
  }
  async lock(key: string): Promise<void> {
    if (this.dialect.name === "postgres") await this.ahead("SELECT pg_advisory_xact_lock($1, hashtext($2))", [keyedLockClass, key]);
  }
  async savepoint<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    if (this.ended()) throw endedError();
    this.scope.running++;
    try {
      return await this.inSavepoint(work);
    } finally {
      this.scope.running--;
    }
  }
  private async inSavepoint<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    const name = `sp_${this.depth + 1}`;
    const inner: Scope = { staged: new Map(), afterCommit: [], parent: this.scope, running: 0, ended: false };
    // Row counts this scope sent ahead to be checked are its own, not the savepoint's: checked before it opens.
    await this.runner.settleChecks?.().catch(this.failed);
    // Called by work that did not await it, it may open only once that work is over.
    if (this.ended()) throw endedError();
    // Sent with the savepoint's first statement, and what it defers last with its RELEASE: a failure of that is its own.
    const before = this.aheadMark();
    const opened = this.runner.defer ? this.runner.defer(`SAVEPOINT ${name}`) : await this.runner.run(`SAVEPOINT ${name}`);
    let result: T;
    try {
      result = await work(new ScopedTransaction(this.runner, inner, this.depth + 1));
      if (inner.running > 0) throw savepointStillRunning("savepoint's");
      if (inner.failed !== undefined) throw new CaughtStatementError(inner.failed);
      // What it sent ahead with a row count to check is its own: checked before the savepoint ends.
      await this.runner.settleChecks?.();
      inner.ended = true;
      if (this.ended()) throw endedError();
      await this.runner.run(`RELEASE SAVEPOINT ${name}`);
    } catch (err) {
      inner.ended = true;
      // The work around it is over (it did not await this savepoint): a savepoint of this name now is another's.
      if (this.ended()) throw err;
      // What it deferred is not sent; nothing is undone when nothing of it was (its SAVEPOINT had not gone yet).
      const reached = typeof opened !== "object" || !this.runner.undefer?.(opened);
      if (reached) {
        try {
          await this.runner.run(`ROLLBACK TO SAVEPOINT ${name}`);
          await this.runner.run(`RELEASE SAVEPOINT ${name}`);
        } catch (undoing) {
          // A statement deferred before the SAVEPOINT failed in the same message, so the server never opened it:
          // nothing to undo, the transaction is lost, and the failure is that statement's, not this one's.
          // So too when the work caught that failure and then failed otherwise (a statement of an aborted transaction).
          const first = inner.failed ?? err;
          if (isSentAheadFailure(first, before)) this.failed(first);
          throw undoing;
        }
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
 * simply succeed, an UPDATE of rows this transaction has locked), ahead of
 * `tx`'s next statement or its COMMIT, in the same round trip (PostgreSQL),
 * or runs it now (SQLite). Its failure is that next statement's, or the
 * COMMIT's, and so is `check`'s: when the statement changed another number
 * of rows than `check.rows`, `check.error` fails the transaction (a COMMIT
 * or a savepoint's RELEASE waits for the count).
 */
export async function sendAhead(tx: Transaction, sql: string, params?: readonly SqlValue[], check?: AheadCheck): Promise<void> {
  if (tx instanceof ScopedTransaction) {
    await tx.ahead(sql, params, check);
    return;
  }
  const changed = await tx.run(sql, params);
  if (check && changed !== check.rows) throw check.error(changed);
}
