import { createRequire } from "node:module";
import { Socket } from "node:net";
import type pg from "pg";
import { urlWithoutSecrets } from "../config/index.js";
import { cancelRunningStatement } from "./postgres-cancel.js";
import { Code, StatusError } from "../errors/index.js";
import { nonNegativeInteger, positiveInteger } from "../options/index.js";
import { type AfterCommitFailure, type AheadCheck, runTransaction, sendAhead, sentAheadFailure, type StatementRunner, transactionControlRefusal } from "./transaction-scope.js";
import { type StorageRefusal, storageRefusalOf } from "./storage-full.js";
import { signalOf, type Database, type Dialect, type SqlValue, type Transaction } from "./types.js";

export const postgresDialect: Dialect = {
  name: "postgres",
  anyOf: (param) => `= ANY(${param})`,
  forUpdate: " FOR UPDATE",
};

/**
 * The Postgres driver, loaded by the first `openPostgres`: a service on
 * SQLite never loads it (about 1.3 MB of heap and 2 MiB of resident memory
 * per process). It is CommonJS, so loading it needs no await.
 */
let driver: typeof pg | undefined;
function loadDriver(): typeof pg {
  return (driver ??= createRequire(import.meta.url)("pg") as typeof pg);
}

/** int8 (bigint) comes back as a number: every value the stores keep fits in 2^53 (their contracts bound them). */
const types = {
  getTypeParser(oid: number, format?: string) {
    const { types: parsers } = loadDriver();
    if (oid === parsers.builtins.INT8) return (value: string) => Number(value);
    return parsers.getTypeParser(oid, format as never);
  },
};

/** The error code of `err` (a SQLSTATE, SQLite's SQLITE_*, a Node errno), or else of its cause. */
function codeOf(err: unknown): string | undefined {
  const own = (e: unknown) => (e as { code?: unknown } | undefined)?.code;
  const code = own(err) ?? own((err as { cause?: unknown } | undefined)?.cause);
  return typeof code === "string" ? code : undefined;
}

/** Postgres's SQLSTATEs for a transaction that lost to a concurrent one: tried again from the start. */
const conflictCodes = new Set(["40001", "40P01"]);
/**
 * Whether `err` is a deadlock or a serialization failure: the transaction (or
 * savepoint) lost to a concurrent one and succeeds when simply run again.
 */
export function isWriteConflict(err: unknown): boolean {
  const code = codeOf(err);
  return code !== undefined && conflictCodes.has(code);
}

/** Whether `err` says a lock was not granted within the transaction's limit (`limitLockWaits`). */
export function isLockTimeout(err: unknown): boolean {
  return codeOf(err) === "55P03";
}

/**
 * Error codes of a database that answers but takes no writes for now:
 * PostgreSQL's disk_full, read_only_sql_transaction (a standby) and io_error,
 * SQLite's full disk, I/O errors, read-only file and lock held elsewhere. Not
 * out of memory or a program limit, which one statement's values can cause.
 */
const refusingWritesCodes = /^(53100|25006|58030|SQLITE_(FULL|IOERR.*|READONLY.*|BUSY.*|CANTOPEN.*))$/;

/**
 * Whether `err` (or its cause) says the database cannot be reached
 * (isDatabaseUnavailable) or takes no writes for now: nothing the work
 * itself did, and worth trying again later. Either store.
 */
export function isDatabaseRefusingWrites(err: unknown): boolean {
  const cause = (err as { cause?: unknown } | undefined)?.cause;
  return isDatabaseUnavailable(err) || (cause !== undefined && isDatabaseUnavailable(cause)) || isDatabaseTakingNoWrites(err);
}

/**
 * Whether `err` (or its cause) says the database answers but takes no
 * writes for now (refusingWritesCodes): asking whether it answers proves
 * nothing then. Either store.
 */
export function isDatabaseTakingNoWrites(err: unknown): boolean {
  const cause = (err as { cause?: unknown } | undefined)?.cause;
  return [err, cause].some((e) => {
    const code = (e as { code?: unknown } | undefined)?.code;
    return typeof code === "string" && refusingWritesCodes.test(code);
  });
}

/**
 * From now until `tx` ends, a statement that waits longer than `ms` for a
 * lock fails (isLockTimeout); `undefined` puts back the limit the session
 * had (the server's or role's `lock_timeout`, none by default). Postgres
 * only: SQLite's one writer has no lock waits inside a transaction.
 */
export async function limitLockWaits(tx: Transaction, ms: number | undefined): Promise<void> {
  if (tx.dialect.name !== "postgres") return;
  if (ms !== undefined && !(Number.isInteger(ms) && ms > 0)) throw new Error(`limitLockWaits: ms must be a positive integer, got ${ms}`);
  await sendAhead(tx, `SET LOCAL lock_timeout = ${ms ?? "DEFAULT"}`);
}

/** Attempts of a transaction that keeps losing to concurrent ones. */
const maxAttempts = 4;

/**
 * Whether `err` says the database could not be reached or went away
 * (its host name not resolving, connection refused or broken, the server
 * shutting down or starting):
 * nothing the caller did, and worth trying again shortly.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (err instanceof StatusError) return err.code === Code.UNAVAILABLE;
  const raw = (err as { code?: unknown } | undefined)?.code;
  const code = typeof raw === "string" ? raw : "";
  const message = err instanceof Error ? err.message : "";
  if (poolerRefusal(err) !== undefined) return false;
  return (
    // 25P03: the server ended the session after it idled in a transaction past idle_in_transaction_session_timeout.
    // ENOTFOUND, EAI_AGAIN: the host name does not resolve (yet), as a compose service's or pod's does until it exists.
    ["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "57P01", "57P02", "57P03", "53300", "25P03"].includes(code) ||
    code.startsWith("08") ||
    // "timeout expired": no answer within the connect timeout (PostgresOptions.connectTimeoutMs).
    /Connection terminated|connection is closed|Client has encountered a connection error|^timeout expired$/i.test(message)
  );
}

/**
 * What a pooler's refusal of the connection means and how to fix it, when
 * `err` is one that waiting does not cure: PgBouncer answers most of its own
 * errors with SQLSTATE 08P01, a connection failure, both for what passes
 * (query_wait_timeout, max_client_conn, a server that cannot be reached) and
 * for its configuration (a startup parameter it does not take, a database or
 * user it does not know, a wrong password), which would otherwise be waited
 * on for ever as an outage.
 */
function poolerRefusal(err: unknown): string | undefined {
  if ((err as { code?: unknown } | undefined)?.code !== "08P01" || !(err instanceof Error)) return undefined;
  const parameter = /^unsupported startup parameter: ([^=\s]+)/.exec(err.message)?.[1];
  if (parameter !== undefined) {
    return (
      `the pooler in front of PostgreSQL refuses the startup parameter ${parameter} ("${err.message}"). The platform sends ` +
      `options, statement_timeout and idle_in_transaction_session_timeout: PgBouncer must list them in ` +
      `ignore_startup_parameters (ignore_startup_parameters = options,statement_timeout,idle_in_transaction_session_timeout)`
    );
  }
  if (/^(no such database|no such user|password authentication failed)/.test(err.message)) return `the pooler in front of PostgreSQL refuses the connection: ${err.message}`;
  return undefined;
}

/**
 * What PostgreSQL's refusal of a connection means and what to change, when
 * `err` is one that waiting does not cure: a wrong password, a user or
 * database the server does not know (each a mistake in the database URL,
 * which would otherwise end the service's start with the driver's bare
 * error). A host name that does not resolve is waited for
 * (isDatabaseUnavailable): it may be a server not up yet.
 */
function serverRefusal(err: unknown, urlName: string): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const code = (err as { code?: unknown }).code;
  if (code === "28P01" || code === "28000") {
    return `PostgreSQL refuses the connection: ${err.message}. Correct the user or password in ${urlName}, or let the server admit them (pg_hba.conf)`;
  }
  if (code === "3D000") return `PostgreSQL refuses the connection: ${err.message}. Create it (createdb), or correct the database name in ${urlName}`;
  return undefined;
}

/**
 * A database that cannot be reached is UNAVAILABLE to callers (a StatusError),
 * with the driver's error as its cause; a statement the server cancelled at
 * its statement_timeout is DEADLINE_EXCEEDED: the database answers, so a
 * consumer counts it as a failed attempt rather than waiting for the
 * database, and the connection is kept. A refusal names the URL `urlName`.
 */
function unavailable(err: unknown, urlName = defaultUrlName): unknown {
  if (err instanceof StatusError) return err;
  const refused = poolerRefusal(err) ?? serverRefusal(err, urlName);
  if (refused !== undefined) return new StatusError(Code.FAILED_PRECONDITION, refused, { cause: err });
  if (codeOf(err) === "57014") return new StatusError(Code.DEADLINE_EXCEEDED, `the database cancelled a statement: ${(err as Error).message}`, { cause: err });
  if (!isDatabaseUnavailable(err)) return err;
  if (codeOf(err) === "08P01" && (err as Error).message === "query_wait_timeout") {
    // It passes once other clients give connections back, but it comes again under load unless the pool is made larger.
    return StatusError.unavailable(
      "the pooler in front of PostgreSQL had no server connection free for a statement within its query_wait_timeout; try again " +
        "shortly. In session pooling each client connection holds a server connection while it lasts: the pool for this " +
        "database (PgBouncer's default_pool_size, or pool_size in [databases]) must hold every instance's connections, up to " +
        "the pool's 10 and 3 more each",
      err,
    );
  }
  return StatusError.unavailable("the database is unavailable; try again shortly", err);
}

/**
 * How long one try of a transaction given `lockWaitMs` waits for a lock
 * before its connection goes back to the pool and it queues for another. A
 * statement waiting on a row lock holds its pooled connection: with ten of
 * them waiting on one held row, the whole pool waited, and so did every
 * other caller of the instance, for as long as each of them would wait. In
 * slices, the callers that came meanwhile get connections between them.
 */
const lockWaitSliceMs = 200;

/**
 * A transaction given `lockWaitMs` whose statement waited that long for a lock:
 * ABORTED, which a caller may try again (gRPC's meaning: a concurrency
 * conflict), naming what likely holds it. The driver's error is its cause.
 */
function heldTooLong(err: unknown, lockWaitMs: number): StatusError {
  return new StatusError(
    Code.ABORTED,
    `a row or lock this change needs was held by another session for more than ${lockWaitMs} ms (a long transaction, a migration); nothing was changed, try again`,
    { cause: err },
  );
}

function toPostgres(value: SqlValue): unknown {
  if (value instanceof Uint8Array && !Buffer.isBuffer(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return value;
}

/**
 * Ends a connection at once, without the goodbye `end()` sends and waits on:
 * for a server that stopped answering, whose socket would never close.
 */
function drop(client: pg.Client): void {
  const stream = (client as unknown as { connection?: { stream?: { destroy(err?: Error): void } } }).connection?.stream;
  // Destroyed without an error: the client fails the statement under way and emits 'error' once, as for any broken connection.
  if (stream) stream.destroy();
  else void client.end().catch(() => undefined);
}

/** No answer to a statement within the limit: the connection was dropped under it. */
class NoAnswerError extends Error {
  constructor(readonly ms: number) {
    super(`the database gave no answer within ${ms} ms; the connection was dropped`);
  }
}

/** A statement sent ahead of another in the same round trip: its result is not read, only its row count checked when it has a check. */
interface AheadStatement {
  readonly text: string;
  readonly values: readonly SqlValue[];
  readonly check?: AheadCheck;
  /** Its place in the order the transaction deferred statements (see aheadMark); none for what opens it. */
  readonly serial?: number;
}

/** The parts of node-postgres's connection a statement is written to. */
interface WireConnection {
  parse(message: { text: string }): void;
  bind(message: { values: unknown[] }): void;
  describe(message: { type: "P" }): void;
  execute(message: object): void;
}

type AheadQueryConfig = pg.QueryConfig & { queryMode: "extended" };
type AheadQuery = new (config: AheadQueryConfig, ahead: ReadonlyArray<{ readonly text: string; readonly values: unknown[] }>) => pg.Query & {
  callback?: (err: Error | null, results?: pg.QueryResult | pg.QueryResult[]) => void;
  /** Statements of the message the server has completed. */
  readonly completed: number;
};
let aheadQuery: AheadQuery | undefined;
let prepareValue: ((value: unknown) => unknown) | undefined;

/**
 * node-postgres's query (extended protocol), with statements written before
 * its own in the same message: all are answered after one Sync, so they cost
 * one round trip. The server runs them in order and skips the rest once one
 * fails (that error is the query's). Each gets its own result; the query's
 * is the last. The ahead statements' values come already written as text or
 * bytes (`wireValues`), so nothing can fail halfway through the message.
 */
function aheadQueryClass(): AheadQuery {
  if (aheadQuery) return aheadQuery;
  const base = loadDriver().Query as unknown as new (config: AheadQueryConfig) => pg.Query & { prepare(connection: WireConnection): void };
  aheadQuery = class extends base {
    constructor(
      config: AheadQueryConfig,
      private readonly ahead: ReadonlyArray<{ readonly text: string; readonly values: unknown[] }>,
    ) {
      super(config);
    }
    completed = 0;
    handleCommandComplete(...args: unknown[]): void {
      this.completed++;
      (base.prototype as unknown as { handleCommandComplete(...a: unknown[]): void }).handleCommandComplete.apply(this, args);
    }
    override prepare(connection: WireConnection): void {
      for (const { text, values } of this.ahead) {
        connection.parse({ text });
        connection.bind({ values });
        connection.describe({ type: "P" });
        connection.execute({});
      }
      super.prepare(connection);
    }
  } as unknown as AheadQuery;
  return aheadQuery;
}

/** `values` as node-postgres writes a query's parameters (text, bytes or null); throws for one it cannot write. */
function wireValues(values: readonly SqlValue[]): unknown[] {
  prepareValue ??= (createRequire(import.meta.url)("pg/lib/utils.js") as { prepareValue: (value: unknown) => unknown }).prepareValue;
  return values.map((value) => prepareValue!(toPostgres(value)));
}

/** A message's results, one per statement. */
function allResults(results: pg.QueryResult | pg.QueryResult[]): pg.QueryResult[] {
  return Array.isArray(results) ? results : [results];
}

/** Fails as the first statement whose row count is not its check's. */
function checkRows(statements: ReadonlyArray<{ readonly check?: AheadCheck; readonly serial?: number }>, results: readonly pg.QueryResult[]): void {
  statements.forEach(({ check, serial }, i) => {
    const changed = results[i]?.rowCount ?? 0;
    if (check && changed !== check.rows) throw sentAheadFailure(check.error(changed), serial);
  });
}

/**
 * Statements on one connection (a pooled one inside a transaction), each
 * given `answerWithinMs` to be answered before the connection is dropped
 * (NoAnswerError, UNAVAILABLE): a server gone quiet mid-statement (a
 * failover to another host, a network that drops packets) otherwise holds
 * the connection until the kernel gives up on it, a quarter of an hour.
 *
 * Statements whose results nobody reads (BEGIN, SET LOCAL, SAVEPOINT, an
 * advisory lock) wait and go with the next statement, in its round trip
 * (`defer`): each round trip costs both processes a wake-up, more than most
 * statements cost to run. A transaction that sends nothing else sends
 * nothing at all (`finish`).
 */
class ClientRunner implements StatementRunner {
  readonly dialect = postgresDialect;
  constructor(
    private readonly client: pg.PoolClient,
    private readonly answerWithinMs: number | undefined,
  ) {}
  async query<R>(sql: string, params?: readonly SqlValue[]): Promise<R[]> {
    return (await this.send(sql, params)).rows as R[];
  }
  async run(sql: string, params?: readonly SqlValue[]): Promise<number> {
    return (await this.send(sql, params)).rowCount ?? 0;
  }
  /** What opens the transaction (BEGIN, its SET LOCALs): sent ahead of its first statement. */
  private opening: AheadStatement[] = [];
  /** Statements waiting to go ahead of the next one. */
  private deferred: AheadStatement[] = [];
  /** Whether anything was sent yet. */
  private sentAny = false;
  open(statements: readonly string[]): void {
    this.opening = statements.map((text) => ({ text, values: [] }));
  }
  /** How many statements were deferred. */
  private serials = 0;
  defer(sql: string, params: readonly SqlValue[] = [], check?: AheadCheck): object {
    const statement = { text: sql, values: params, check, serial: ++this.serials };
    this.deferred.push(statement);
    return statement;
  }
  deferredCount(): number {
    return this.serials;
  }
  async settleChecks(): Promise<void> {
    const last = this.deferred.findLastIndex((s) => s.check !== undefined);
    if (last < 0) return;
    const { text, values, check, serial } = this.deferred[last];
    const after = this.deferred.slice(last + 1);
    this.deferred = this.deferred.slice(0, last);
    const sent = this.send(text, values, check, serial);
    // What was deferred after it stays for the next statement.
    this.deferred = after;
    await sent.catch((err: unknown) => {
      throw sentAheadFailure(err, serial);
    });
  }
  undefer(mark: object): boolean {
    const at = this.deferred.indexOf(mark as AheadStatement);
    this.deferred = at < 0 ? [] : this.deferred.slice(0, at);
    return at >= 0;
  }
  /**
   * COMMIT, with what was deferred; or ROLLBACK, without it. Nothing is sent,
   * and undefined returned, for a transaction that had nothing to send: its
   * BEGIN never went.
   */
  async finish(sql: "COMMIT" | "ROLLBACK"): Promise<pg.QueryResult | undefined> {
    if (sql === "ROLLBACK") this.deferred = [];
    // The COMMIT goes only once the row counts to check were seen.
    else await this.settleChecks();
    if (!this.sentAny && this.deferred.length === 0) return undefined;
    return await this.send(sql, undefined);
  }
  /** The statement before, settled: each waits for it, so its time to be answered starts when it is sent, not when queued. */
  private previous: Promise<unknown> = Promise.resolve();
  private send(sql: string, params: readonly SqlValue[] | undefined, check?: AheadCheck, serial?: number): Promise<pg.QueryResult> {
    // What was deferred until now goes with this statement; what is deferred after it, with the next.
    const ahead = this.sentAny ? this.deferred : [...this.opening, ...this.deferred];
    this.deferred = [];
    this.sentAny = true;
    const values = params?.map(toPostgres) as unknown[] | undefined;
    const request = async (): Promise<pg.QueryResult> => {
      const results = ahead.length === 0 ? allResults((await this.client.query({ text: sql, values })) as pg.QueryResult | pg.QueryResult[]) : await this.sendWithAhead(ahead, sql, values);
      checkRows([...ahead, { check, serial }], results);
      return results[results.length - 1];
    };
    // The server's statement timeout counts for each statement of the message.
    const sent = () => answered(this.client, this.answerWithinMs === undefined ? undefined : this.answerWithinMs * (ahead.length + 1), request);
    const result = this.previous.then(sent, sent);
    this.previous = result.catch(() => undefined);
    return result;
  }
  /**
   * The results of `ahead` and then of `text`, sent in one message. A failure
   * of a statement ahead is marked so (sentAheadFailure): the work that sent
   * it may not be the work that sent `text`.
   */
  private async sendWithAhead(ahead: readonly AheadStatement[], text: string, values: unknown[] | undefined): Promise<pg.QueryResult[]> {
    if ((values === undefined || values.length === 0) && text.includes(";")) {
      // Maybe several commands, which node-postgres sends by the simple protocol when they have no parameters and
      // the extended protocol refuses: the statements ahead go in the same text when they too have none, or else in
      // a message of their own first. Whose failure it was is not told apart here: it counts as one ahead.
      if (ahead.every((s) => s.values.length === 0)) {
        const results = await this.client.query([...ahead.map((s) => s.text), text].join(";\n")).catch((err: unknown) => {
          throw sentAheadFailure(err);
        });
        return allResults(results as pg.QueryResult | pg.QueryResult[]);
      }
      const last = ahead[ahead.length - 1];
      const first = await this.sendWithAhead(ahead.slice(0, -1), last.text, last.values.map(toPostgres)).catch((err: unknown) => {
        throw sentAheadFailure(err, last.serial);
      });
      return [...first, ...allResults((await this.client.query(text)) as pg.QueryResult | pg.QueryResult[])];
    }
    const written = ahead.map((s) => {
      try {
        return { text: s.text, values: wireValues(s.values) };
      } catch (err) {
        // A value it cannot write is the failure of the statement that deferred it.
        throw sentAheadFailure(err, s.serial);
      }
    });
    return await new Promise((resolve, reject) => {
      const query = new (aheadQueryClass())({ text, values, queryMode: "extended" }, written);
      query.callback = (err, results) => (err ? reject(query.completed < ahead.length ? sentAheadFailure(err, ahead[query.completed].serial) : err) : resolve(allResults(results!)));
      this.client.query(query);
    });
  }
}

/**
 * `request`'s result; its failure as UNAVAILABLE when the database is
 * unreachable, or gave no answer within `ms` (the connection is then dropped).
 */
async function answered<T>(client: pg.Client, ms: number | undefined, request: () => Promise<T>): Promise<T> {
  let quiet: NoAnswerError | undefined;
  const timer = ms === undefined ? undefined : setTimeout(() => {
    quiet = new NoAnswerError(ms);
    drop(client);
  }, ms);
  try {
    return await request();
  } catch (err) {
    throw quiet ? StatusError.unavailable(`${quiet.message}; try again shortly`, err) : unavailable(err);
  } finally {
    clearTimeout(timer);
  }
}

export interface PostgresOptions {
  /** Connections in the pool. Default 10. */
  readonly poolSize?: number;
  /**
   * How long making a connection may take (TCP and PostgreSQL's start-up),
   * ms. Default 5,000. A server that accepts and never answers (a hung
   * proxy, an address that drops packets) fails it as UNAVAILABLE instead
   * of holding a pooled connection, the relay's lock or LISTEN forever.
   * Waiting for a free pooled connection is not bounded by it: a caller's
   * deadline bounds that.
   */
  readonly connectTimeoutMs?: number;
  /**
   * How long a statement may run, ms (the server's `statement_timeout`; also
   * how long a transaction may sit idle between its statements, after which
   * the server ends it and its locks go). Default 30,000. A transaction may
   * ask for another (`TransactionOptions.statementTimeoutMs`: migrations run
   * without one). A statement the server has not answered 5 s after this
   * (the server or the network gone quiet) has its connection dropped, as
   * UNAVAILABLE. 0: no limit, and no dropping.
   */
  readonly statementTimeoutMs?: number;
  /**
   * How often the connections that hold a session lock (the outbox relay's)
   * or a LISTEN are asked whether the server still answers, ms; one with no
   * answer within twice this is dropped: the lock counts as lost, LISTEN is
   * made again. Default 5,000. The server ends a session lock's connection
   * after three times this without a statement (`idle_session_timeout`,
   * PostgreSQL 14 and later): a process that stopped (SIGSTOP) or hung
   * gives the lock up, as one that died does.
   */
  readonly sessionCheckMs?: number;
  /**
   * How long `close` waits for statements under way and for the server to
   * take each connection's goodbye, ms; then it cuts the connections left
   * (their statements fail UNAVAILABLE). Default 2,000. A server that hangs
   * answers neither: a service's stop waited for its last readiness check's
   * statement timeout, 35 s.
   */
  readonly closeGraceMs?: number;
  /**
   * How refusals that say what to change in the URL (a wrong password, an
   * unknown host, a statement_timeout with a unit) name it: the variable it
   * was read from (`ORDERS_DATABASE_URL`). Default "the database URL".
   */
  readonly urlName?: string;
  /**
   * An after-commit callback failed; its transaction is committed and
   * answered all the same, never tried again (see UnitDone.afterCommit).
   */
  readonly onAfterCommitFailure?: AfterCommitFailure;
}

const defaultUrlName = "the database URL";

/**
 * Runs `use` on a pooled connection, then gives it back: as broken (closed,
 * not handed to anyone else) when it broke meanwhile (its 'error' event,
 * which would otherwise end the process unheard) or `use` says so.
 */
async function lend<T>(client: pg.PoolClient, use: (broke: (err: unknown) => void) => Promise<T>): Promise<T> {
  let broken: unknown;
  const broke = (err: unknown) => void (broken ??= err);
  client.on("error", broke);
  try {
    return await use(broke);
  } finally {
    client.off("error", broke);
    client.release(broken === undefined ? undefined : broken instanceof Error ? broken : new Error(String(broken)));
  }
}

/** How much longer than its statement timeout (at most twice it) a statement waits for any answer before its connection is dropped. */
const answerGraceMs = 5_000;

/** Lets an unknown setting pass (PostgreSQL before 14 has no `idle_session_timeout`); anything else fails. */
function olderThan14(err: unknown): undefined {
  if ((err as { code?: string }).code === "42704") return undefined;
  throw err;
}

/**
 * Asks `client` every `everyMs` whether it still answers, and drops it when
 * an answer takes longer than twice that (its 'end' then tells its owner).
 * Returns the function that stops asking.
 */
function watchSession(client: pg.Client, everyMs: number): () => void {
  let asking = false;
  const timer = setInterval(() => {
    if (asking) return;
    asking = true;
    answered(client, 2 * everyMs, () => client.query("SELECT 1"))
      .catch(() => drop(client))
      .finally(() => (asking = false));
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}

/** Rounds of the session check's statements (see `checkSessions`). */
const sessionCheckRounds = 3;

/** The settings a connection sends at start-up that bound its statements and its transactions' idle time. */
export type StartupTimeout = "idle_in_transaction_session_timeout" | "statement_timeout";

/** A server session: its backend's pid, and when its server started, since a pooler may lead to several servers. */
interface ServerSession {
  readonly pid: number;
  readonly started: string;
}

/** A Postgres database (`openPostgres`). */
export type PostgresDatabase = Database & {
  readonly pool: pg.Pool;
  /**
   * Fails when the server session behind a connection does not stay with it
   * (a pooler that hands sessions out per transaction or statement, such as
   * PgBouncer's pool_mode = transaction): the relay's lock and LISTEN need a
   * session of their own. Resolves when each connection kept its session, with
   * the timeouts sent at start-up that did not take (a pooler dropped them,
   * PgBouncer's ignore_startup_parameters): each new connection sets those itself from then on.
   */
  checkSessions(): Promise<readonly StartupTimeout[]>;
};

/**
 * A Postgres database through node-postgres's pool: each transaction on a
 * connection of its own (READ COMMITTED; rows a change reads first are
 * locked with `dialect.forUpdate`), a transaction that loses a deadlock or
 * a serialization conflict tried again from the start (up to 4 times),
 * statements outside transactions on any pooled connection.
 */
export function openPostgres(url: string, options: PostgresOptions = {}): PostgresDatabase {
  // The process shows in pg_stat_activity by its pid: which instance holds what lock.
  const applicationName = `concord pid ${process.pid}`;
  const pg = loadDriver();
  const urlName = options.urlName ?? defaultUrlName;
  const settings = sessionSettings(url, urlName);
  const statementTimeoutMs = nonNegativeInteger("openPostgres", "statementTimeoutMs", options.statementTimeoutMs ?? settings.statementTimeoutMs, 30_000);
  const answerWithin = (ms: number): number | undefined => (ms === 0 ? undefined : ms + Math.min(answerGraceMs, ms));
  const sessionCheckMs = positiveInteger("openPostgres", "sessionCheckMs", options.sessionCheckMs, 5_000);
  const closeGraceMs = nonNegativeInteger("openPostgres", "closeGraceMs", options.closeGraceMs, 2_000);
  const clientConfig = {
    connectionString: settings.url,
    types,
    application_name: applicationName,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
    // The kernel probes an idle connection after 10 s without traffic, so one whose server vanished is found in the end.
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    // And the server probes ours: a session whose process vanished (its host gone, a network cut) ends within about 25 s,
    // its locks with it (the relay's lock above all), instead of after the system's default two hours. Options of the
    // URL's `options` or PGOPTIONS come after these, so theirs win.
    options: ["-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3", settings.options].filter(Boolean).join(" "),
    ...(statementTimeoutMs > 0 && { statement_timeout: statementTimeoutMs, idle_in_transaction_session_timeout: statementTimeoutMs }),
  };
  // The sockets of connections still being made (TCP, TLS, the start-up exchange), which close() destroys: a server that
  // does not answer would otherwise hold the process until connectionTimeoutMillis, though a stop was asked for.
  const connecting = new Set<Socket>();
  /** Every connection's socket until it closes: those close() cuts once its grace is over. */
  const open = new Set<Socket>();
  /** clientConfig with a socket of its own, in `connecting` until `client` has connected or the socket has closed. */
  const configFor = (socket: Socket) => ({ ...clientConfig, stream: () => socket });
  const heldWhileConnecting = (client: pg.Client, socket: Socket): void => {
    open.add(socket);
    socket.once("close", () => open.delete(socket));
    connecting.add(socket);
    const done = () => connecting.delete(socket);
    client.once("connect", done);
    socket.once("close", done);
  };
  const newClient = (): pg.Client => {
    const socket = new Socket();
    const client = new pg.Client(configFor(socket));
    heldWhileConnecting(client, socket);
    return client;
  };
  // The timeout goes to each connection the pool makes, not to the pool: there it would also fail callers queued for a busy one.
  class Connection extends pg.Client {
    constructor() {
      const socket = new Socket();
      super(configFor(socket));
      heldWhileConnecting(this, socket);
    }
  }
  /** Set by checkSessions when the start-up timeouts did not take: statements each new pooled connection runs first. */
  let setOnConnect: string | undefined;
  const pool = new pg.Pool({
    max: options.poolSize ?? 10,
    Client: Connection,
    onConnect: (client) => (setOnConnect === undefined ? undefined : answered(client as pg.Client, answerWithin(statementTimeoutMs), () => client.query(setOnConnect!))),
  });
  // An idle connection that breaks (the server restarted) is dropped; its next user gets a new one.
  pool.on("error", () => undefined);
  /** Set by a transaction or statement that failed for the storage (disk_full, io_error), until a write commits. */
  let refusal: StorageRefusal | undefined;
  /** A statement outside any transaction, on a pooled connection of its own. */
  /** Runs `go` unless `sql` begins or ends a transaction: on a pooled connection that would outlast this statement. */
  const unlessControl = <T>(sql: string, go: () => Promise<T>): Promise<T> => {
    const refused = transactionControlRefusal(sql);
    return refused ? Promise.reject(refused) : go();
  };
  const pooled = async <T>(use: (runner: ClientRunner) => Promise<T>): Promise<T> => {
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      throw unavailable(err, urlName);
    }
    return await lend(client, async (broke) => {
      try {
        return await use(new ClientRunner(client, answerWithin(statementTimeoutMs)));
      } catch (err) {
        // A connection that failed under a statement is not given to anyone else.
        if (isDatabaseUnavailable(err)) broke(err);
        refusal = storageRefusalOf(err) ?? refusal;
        throw err;
      }
    });
  };

  /** A pooled connection, or the signal's reason when it aborts first (the connection, once there, goes back). */
  const connection = async (signal: AbortSignal | undefined): Promise<pg.PoolClient> => {
    signal?.throwIfAborted();
    const connecting = pool.connect();
    if (!signal) return connecting;
    let onAbort!: () => void;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        reject(signal.reason);
        connecting.then((c) => c.release(), () => undefined);
      };
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([connecting, aborted]);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  };

  /** One try of a transaction: `signal` gives up its wait for a connection, `cancelling` the transaction once it runs. */
  const attempt = async <T>(work: (tx: Transaction) => Promise<T>, signal: AbortSignal | undefined, cancelling: AbortSignal | undefined, timeoutMs: number, lockWaitMs: number | undefined): Promise<T> => {
    let client: pg.PoolClient;
    try {
      client = await connection(signal);
    } catch (err) {
      if (signal?.aborted && err === signal.reason) throw err;
      throw unavailable(err, urlName);
    }
    const tx = new ClientRunner(client, answerWithin(timeoutMs));
    return await lend(client, async (broke) => {
      // A caller gone mid-transaction (its deadline passed, it cancelled) has the statement it waits on cancelled, so
      // the transaction rolls back and its connection is free: a statement waiting on a row lock another session holds
      // kept its pooled connection until the statement timeout, and ten such calls held the whole pool for 30 s,
      // every other call of the instance failing meanwhile. The cancel may arrive late, so the connection is dropped.
      const onAbort = () => {
        broke(cancelling!.reason);
        cancelRunningStatement(client);
      };
      cancelling?.addEventListener("abort", onAbort, { once: true });
      try {
        return await inTransaction(tx, work, broke, timeoutMs, lockWaitMs);
      } finally {
        cancelling?.removeEventListener("abort", onAbort);
      }
    });
  };

  /** Runs `work` in a transaction on `tx`'s connection, committing it when `work` resolves and rolling it back when it throws. */
  const inTransaction = async <T>(tx: ClientRunner, work: (tx: Transaction) => Promise<T>, broke: (err: unknown) => void, timeoutMs: number, lockWaitMs: number | undefined): Promise<T> => {
    // BEGIN and the transaction's own limits go with its first statement.
    const opening = timeoutMs === statementTimeoutMs ? ["BEGIN"] : ["BEGIN", `SET LOCAL statement_timeout = ${timeoutMs}`, `SET LOCAL idle_in_transaction_session_timeout = ${timeoutMs}`];
    tx.open(lockWaitMs === undefined ? opening : [...opening, `SET LOCAL lock_timeout = ${lockWaitMs}`]);
    return await runTransaction(
      tx,
      work,
      async () => {
        let ended: pg.QueryResult | undefined;
        // While writes are refused, whether this one wrote (a read's commit succeeds on a full disk): an xid is
        // assigned to a transaction only once it writes.
        const wrote = refusal !== undefined && (await tx.query<{ wrote: boolean }>("SELECT txid_current_if_assigned() IS NOT NULL AS wrote"))[0]?.wrote === true;
        try {
          ended = await tx.finish("COMMIT");
        } catch (err) {
          // The COMMIT failed, or a statement sent ahead of it did: a ROLLBACK ends what is left of the transaction
          // (a warning only if the server ended it), and the connection serves again.
          if (isDatabaseUnavailable(err)) broke(err);
          else await tx.finish("ROLLBACK").catch(broke);
          throw err;
        }
        // COMMIT of a transaction a failed statement aborted succeeds as a ROLLBACK; runTransaction refuses to get here then.
        if (ended?.command === "ROLLBACK") throw new Error("PostgreSQL rolled the transaction back at its COMMIT: a statement in it had failed");
        if (wrote) refusal = undefined;
      },
      async () => void (await tx.finish("ROLLBACK").catch(broke)),
      options.onAfterCommitFailure,
    );
  };

  let closed: Promise<void> | undefined;
  return {
    dialect: postgresDialect,
    location: redact(url),
    statementTimeoutMs,
    pool,
    async transaction(work, options) {
      const signal = signalOf(options);
      const timeoutMs = nonNegativeInteger("transaction", "statementTimeoutMs", options?.statementTimeoutMs, statementTimeoutMs);
      const cancelling = options?.finishOnceStarted === true ? undefined : signal;
      const lockWaitMs = options?.lockWaitMs === undefined ? undefined : positiveInteger("transaction", "lockWaitMs", options.lockWaitMs, options.lockWaitMs);
      const slice = lockWaitMs === undefined ? undefined : Math.min(lockWaitSliceMs, lockWaitMs);
      const started = lockWaitMs === undefined ? 0 : performance.now();
      for (let n = 1; ; n++) {
        try {
          return await attempt(work, signal, cancelling, timeoutMs, slice);
        } catch (err) {
          refusal = storageRefusalOf(err) ?? refusal;
          if (lockWaitMs !== undefined && isLockTimeout(err)) {
            if (performance.now() - started >= lockWaitMs) throw heldTooLong(err, lockWaitMs);
            // Its slice of the wait is over: the connection goes back, and the transaction queues for one again,
            // behind the callers that came meanwhile. Not a lost conflict: it does not count as an attempt.
            n--;
            continue;
          }
          if (!isWriteConflict(err)) throw unavailable(err, urlName);
          // Lost every time: ABORTED, which gRPC's clients may try again (a caller's INTERNAL said it was the server's fault).
          if (n >= maxAttempts) throw new StatusError(Code.ABORTED, `the change lost to concurrent ones ${n} times in a row; nothing was changed, try again`, { cause: err });
        }
      }
    },
    query: (sql, params) => unlessControl(sql, () => pooled((runner) => runner.query(sql, params))),
    run: (sql, params) =>
      unlessControl(sql, () =>
        pooled(async (runner) => {
          const changes = await runner.run(sql, params);
          // A statement alone commits as it runs.
          if (refusal !== undefined && changes > 0) refusal = undefined;
          return changes;
        }),
      ),
    storageRefusal: () => refusal,
    async runAlone(sql, options) {
      const refused = transactionControlRefusal(sql);
      if (refused) throw refused;
      const timeoutMs = nonNegativeInteger("runAlone", "statementTimeoutMs", options.statementTimeoutMs, statementTimeoutMs);
      // Not a pooled connection: its session's statement timeout would stay changed for whoever has it next.
      const client = newClient();
      client.on("error", () => undefined);
      await client.connect().catch((err: unknown) => {
        throw unavailable(err, urlName);
      });
      try {
        await answered(client, answerWithin(statementTimeoutMs), () => client.query(`SET statement_timeout = ${timeoutMs}`));
        return (await answered(client, answerWithin(timeoutMs), () => client.query(sql))).rowCount ?? 0;
      } finally {
        await client.end().catch(() => undefined);
      }
    },
    async ping() {
      await pooled((runner) => runner.query("SELECT 1"));
    },
    async checkSessions() {
      // A server session belongs to one connection for as long as the connection lasts, when the URL goes to
      // PostgreSQL itself or to a pooler in session mode: one connection's statements all report one session, and two
      // connections open at once never report the same one. A pooler that pools per transaction (or statement) gives
      // each statement outside a transaction whichever server connection is idle: PgBouncer takes the one given back
      // last, so B's statement right after A's gets A's session; with server_round_robin it takes the one idle longest,
      // so A's second statement in a row gets another session when two are idle, and A's again when only one is, which
      // B's then gets. So each round (A, A, B) shows one or the other unless other clients, in the instants between
      // the check's statements, take exactly the sessions that would have shown it, which three rounds in a row would need every time.
      // Pids alone could match on two servers behind one pooler: a session is its pid and its server's start time.
      const connections = [newClient(), newClient()];
      for (const c of connections) c.on("error", () => undefined);
      try {
        await Promise.all(connections.map((c) => c.connect())).catch((err: unknown) => {
          throw unavailable(err, urlName);
        });
        const seen: ServerSession[][] = [[], []];
        const session = async (i: number): Promise<void> => {
          const c = connections[i];
          const asked = () => c.query<ServerSession>("SELECT pg_backend_pid() AS pid, pg_postmaster_start_time()::text AS started");
          const now = (await answered(c, answerWithin(statementTimeoutMs), asked)).rows[0];
          const same = (s: ServerSession) => s.pid === now.pid && s.started === now.started;
          const before = seen[i].find((s) => !same(s));
          const shared = seen[1 - i].some(same);
          seen[i].push(now);
          if (before || shared) {
            const found = before
              ? `one connection's statements ran in two server sessions (backend pids ${before.pid} and ${now.pid})`
              : `two connections open at once ran their statements in one server session (backend pid ${now.pid})`;
            throw new StatusError(
              Code.FAILED_PRECONDITION,
              `${redact(url)}${options.urlName === undefined ? "" : ` (${options.urlName})`} does not keep a server session for each connection: ${found}. A pooler in front hands sessions ` +
                `from one client to another between transactions (PgBouncer's pool_mode = transaction or statement). The outbox ` +
                `relay's lock and LISTEN need a session of their own: through such a pooler two instances can both hold the ` +
                `relay's lock and publish an aggregate's events out of order, and LISTEN wakes no relay. Use session pooling ` +
                `(PgBouncer: pool_mode = session) or a URL that goes to PostgreSQL directly.`,
            );
          }
        };
        for (let round = 0; round < sessionCheckRounds; round++) {
          await session(0);
          await session(0);
          await session(1);
        }
        if (statementTimeoutMs === 0) return [];
        // The server marks what a connection's start-up set as the client's; a pooler that drops the parameters leaves the
        // server's or the role's value (none by default), and statements and idle transactions would go unbounded.
        const asked = () =>
          connections[0].query<{ name: StartupTimeout }>(
            "SELECT name FROM pg_settings WHERE name IN ('statement_timeout', 'idle_in_transaction_session_timeout') AND source <> 'client' ORDER BY name",
          );
        const dropped = (await answered(connections[0], answerWithin(statementTimeoutMs), asked)).rows.map((r) => r.name);
        if (dropped.length > 0) setOnConnect = dropped.map((name) => `SET ${name} = ${statementTimeoutMs}`).join("; ");
        return dropped;
      } finally {
        await Promise.all(connections.map((c) => c.end().catch(() => undefined)));
      }
    },
    async tryLock(key) {
      const client = newClient();
      let lost!: () => void;
      const gone = new Promise<void>((resolve) => (lost = resolve));
      client.on("error", () => lost());
      client.on("end", () => lost());
      await client.connect().catch((err: unknown) => {
        throw unavailable(err, urlName);
      });
      let granted = false;
      try {
        // The session's checks below keep it busy; one that idles three times as long belongs to a process that stopped or
        // hung (the kernel still answers the server's probes for it): the server ends it, and the lock goes to another.
        const bounded = () => client.query(`SET idle_session_timeout = ${3 * sessionCheckMs}`).catch(olderThan14);
        await answered(client, answerWithin(statementTimeoutMs), bounded);
        const asked = () => client.query<{ granted: boolean }>("SELECT pg_try_advisory_lock($1) AS granted", [key]);
        granted = (await answered(client, answerWithin(statementTimeoutMs), asked)).rows[0]?.granted === true;
      } finally {
        if (!granted) await client.end().catch(() => undefined);
      }
      if (!granted) return undefined;
      // A server gone quiet would leave this process believing it holds the lock while the server, once it notices, gives it to another.
      const unwatch = watchSession(client, sessionCheckMs);
      void gone.then(unwatch);
      let released: Promise<void> | undefined;
      return {
        lost: gone,
        release() {
          unwatch();
          // Ending the session gives its advisory locks up.
          released ??= client.end().catch(() => undefined);
          return released;
        },
      };
    },
    async listen(channel, listener) {
      if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`listen: ${JSON.stringify(channel)} is not a plain channel name`);
      let client: pg.Client | undefined;
      let stopped = false;
      let timer: NodeJS.Timeout | undefined;
      // A connection that cannot be made again yet (the server still down) is tried once a second until it can.
      const retryLater = (): void => {
        if (timer !== undefined || stopped) return;
        timer = setTimeout(() => {
          timer = undefined;
          connect().catch(() => retryLater());
        }, 1_000);
      };
      const connect = async (): Promise<void> => {
        const c = newClient();
        c.on("notification", (n) => n.channel === channel && listener());
        // A broken connection is made again; notifications sent meanwhile are lost, and the listener is called once it is back.
        c.on("error", () => undefined);
        let unwatch = (): void => undefined;
        c.on("end", () => {
          unwatch();
          retryLater();
        });
        try {
          await c.connect();
          await answered(c, answerWithin(statementTimeoutMs), () => c.query(`LISTEN ${channel}`));
        } catch (err) {
          await c.end().catch(() => undefined);
          throw err;
        }
        // Notifications from a server gone quiet would stop unnoticed; the connection is made again instead.
        unwatch = watchSession(c, sessionCheckMs);
        const again = client !== undefined;
        client = c;
        if (stopped) await c.end();
        // What was notified while no connection listened is lost: the listener hears once that it may have missed some.
        else if (again) listener();
      };
      try {
        await connect();
      } catch (err) {
        // The caller hears of it; nothing goes on listening in the background.
        stopped = true;
        clearTimeout(timer);
        throw unavailable(err, urlName);
      }
      return async () => {
        stopped = true;
        clearTimeout(timer);
        await client?.end().catch(() => undefined);
      };
    },
    close() {
      if (closed === undefined) {
        const ending = pool.end();
        // Connections already made end once their work is over; those still being made end now, failing whoever waits for them.
        for (const socket of connecting) socket.destroy();
        // A server that hangs answers neither a statement under way nor a connection's goodbye: past the grace, they are cut.
        const cut = setTimeout(() => {
          for (const socket of open) socket.destroy();
        }, closeGraceMs);
        closed = ending.finally(() => clearTimeout(cut));
      }
      return closed;
    },
  };
}

/**
 * What a connection URL says of the session besides where it goes: its
 * `options` (or else PGOPTIONS, which node-postgres reads only when no
 * options are given), to be sent after the platform's own, and its
 * `statement_timeout`, which then is the statement timeout (the one the
 * connection is dropped after too). The URL is returned without them.
 */
function sessionSettings(url: string, urlName: string): { url: string; options?: string; statementTimeoutMs?: number } {
  const query = url.indexOf("?");
  if (query < 0) return { url, ...(process.env.PGOPTIONS && { options: process.env.PGOPTIONS }) };
  const params = new URLSearchParams(url.slice(query + 1));
  const options = params.get("options") ?? process.env.PGOPTIONS ?? undefined;
  const timeout = params.get("statement_timeout");
  // PostgreSQL's own setting takes units ("30s"); node-postgres sends this one's number as milliseconds.
  if (timeout !== null && !/^\d+$/.test(timeout)) {
    throw new StatusError(Code.FAILED_PRECONDITION, `statement_timeout=${timeout} in ${urlName}: it takes a whole number of milliseconds (30000 for 30 s; 0: none)`);
  }
  const statementTimeoutMs = timeout === null ? undefined : Number(timeout);
  params.delete("options");
  params.delete("statement_timeout");
  const rest = params.toString();
  return { url: url.slice(0, query) + (rest ? `?${rest}` : ""), ...(options && { options }), ...(statementTimeoutMs !== undefined && { statementTimeoutMs }) };
}

/** A connection URL without its passwords, for logs (see `urlWithoutSecrets`). */
export function redact(url: string): string {
  return urlWithoutSecrets(url);
}
