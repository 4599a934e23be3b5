import type { Logger } from "../log/index.js";
import { checkOptions } from "../options/index.js";
import { placeholderRows, sqlByRowCount, startRetention, type Database, type Migration, type Queryable, type Retention, type StagedWrites, type Transaction } from "../sql/index.js";
import { eventHeaders } from "./cloud-events.js";
import { headerValue, repeatedAttribute, repeatedAttributeProblem, UnprocessableEventError, type Delivery, type DeliveryMiddleware } from "./delivery.js";

/**
 * The failed attempts at each message a consumer has not yet settled, kept
 * beside the inbox. JetStream's delivery count cannot say how many attempts
 * failed: it grows too when nothing was tried, as when a stopping consumer
 * hands back what it pulled ahead, and an event handed back at a few
 * restarts in a row would be dead-lettered at its first failure. A first
 * delivery's attempt is counted when it fails, a redelivery's before it runs
 * (consumer.ts), so an attempt whose process died counts too. A row is
 * one message (its stream sequence; a consumer reads one stream) and its
 * event id (a stream made again numbers from 1 again): an event replayed
 * from the dead letter stream, or published again, is a new message and
 * starts from none. Rows are not deleted when their message is settled
 * (that would cost every redelivery a statement); the inbox's retention
 * removes them after as long as it keeps inbox rows.
 */
export const failedAttemptsMigrations: Migration[] = [
  {
    id: "events_0005_failed_attempts",
    sqlite: `
      CREATE TABLE event_failures (
        consumer        TEXT    NOT NULL,
        stream_sequence INTEGER NOT NULL,
        event_id        TEXT    NOT NULL,
        failures        INTEGER NOT NULL,
        failed_at       INTEGER NOT NULL,
        PRIMARY KEY (consumer, stream_sequence, event_id)
      ) WITHOUT ROWID;
      CREATE INDEX event_failures_failed_at ON event_failures (failed_at);
    `,
    postgres: `
      CREATE TABLE event_failures (
        consumer        TEXT    NOT NULL,
        stream_sequence BIGINT  NOT NULL,
        event_id        TEXT    NOT NULL,
        failures        INTEGER NOT NULL,
        failed_at       BIGINT  NOT NULL,
        PRIMARY KEY (consumer, stream_sequence, event_id)
      );
      CREATE INDEX event_failures_failed_at ON event_failures (failed_at);
    `,
  },
  {
    // The reason a message was decided a dead letter for, kept until it is filed (see noteDeadLetter).
    id: "events_0006_failure_reason",
    sqlite: "ALTER TABLE event_failures ADD COLUMN reason TEXT;",
    postgres: "ALTER TABLE event_failures ADD COLUMN reason TEXT;",
  },
];

/**
 * The event id a message's attempts are kept under: its ce-id, or "" when the
 * database might not store it (a NUL, say). Such an event never runs (the
 * inbox step refuses it), and its stream sequence tells it apart.
 */
function attemptsKey(delivery: Delivery): string {
  const id = eventIdOf(delivery);
  return id !== undefined && eventIdProblem(id) === undefined ? id : "";
}

/** A message's row of event_failures: consumer, stream sequence, event id. */
function rowKey(delivery: Delivery): [string, number, string] {
  return [delivery.consumer, delivery.streamSequence, attemptsKey(delivery)];
}

/**
 * Counts a failed attempt at `delivery` (in `q`, the transaction that
 * settles it, or one of its own) and resolves with the number of its
 * attempts that have failed, this one included.
 */
export async function countFailure(q: Queryable, delivery: Delivery): Promise<number> {
  return (await countAttempt(q, delivery)).attempt;
}

/**
 * Counts the attempt `delivery` is about to make (a redelivery's, in a
 * transaction of its own that commits before it runs) and resolves with its
 * number, and with the reason an earlier delivery was decided a dead letter
 * for when that was recorded (its filing did not complete).
 */
export async function countAttempt(q: Queryable, delivery: Delivery): Promise<{ readonly attempt: number; readonly deadLetterReason: string | undefined }> {
  const [row] = await q.query<{ failures: number; reason: string | null }>(
    `INSERT INTO event_failures (consumer, stream_sequence, event_id, failures, failed_at) VALUES ($1, $2, $3, 1, $4)
     ON CONFLICT (consumer, stream_sequence, event_id) DO UPDATE SET failures = event_failures.failures + 1, failed_at = $4
     RETURNING failures, reason`,
    [...rowKey(delivery), Date.now()],
  );
  return { attempt: Number(row.failures), deadLetterReason: row.reason ?? undefined };
}

/** Takes back attempt `attempt` of `delivery`, counted ahead but not made (see countAttempt), unless another was counted since. */
export async function uncountAttempt(q: Queryable, delivery: Delivery, attempt: number): Promise<void> {
  await q.run("UPDATE event_failures SET failures = failures - 1 WHERE consumer = $1 AND stream_sequence = $2 AND event_id = $3 AND failures = $4", [
    ...rowKey(delivery),
    attempt,
  ]);
}

/**
 * Records why `delivery` was decided a dead letter, with the decision: when
 * filing it does not complete (NATS away, the process gone), its next
 * delivery is filed with this reason rather than run again.
 */
export async function noteDeadLetter(q: Queryable, delivery: Delivery, reason: string): Promise<void> {
  await q.run(
    `INSERT INTO event_failures (consumer, stream_sequence, event_id, failures, failed_at, reason) VALUES ($1, $2, $3, 0, $4, $5)
     ON CONFLICT (consumer, stream_sequence, event_id) DO UPDATE SET reason = $5, failed_at = $4`,
    // A reason is one line of text; PostgreSQL's text holds no NUL.
    [...rowKey(delivery), Date.now(), reason.replaceAll("\u0000", "\ufffd")],
  );
}

/** The inbox table: one row per event a consumer has processed, committed with the handler's effects; and the failures table. */
export const inboxMigrations: Migration[] = [
  {
    id: "events_0002_inbox",
    sqlite: `
      CREATE TABLE event_inbox (
        consumer     TEXT    NOT NULL,
        event_id     TEXT    NOT NULL,
        processed_at INTEGER NOT NULL,
        PRIMARY KEY (consumer, event_id)
      ) WITHOUT ROWID;
    `,
    postgres: `
      CREATE TABLE event_inbox (
        consumer     TEXT   NOT NULL,
        event_id     TEXT   NOT NULL,
        processed_at BIGINT NOT NULL,
        PRIMARY KEY (consumer, event_id)
      );
    `,
  },
  {
    // Old rows are found by age (inboxRetention).
    id: "events_0003_inbox_processed_at",
    sqlite: "CREATE INDEX event_inbox_processed_at ON event_inbox (processed_at);",
    postgres: "CREATE INDEX event_inbox_processed_at ON event_inbox (processed_at);",
  },
  ...failedAttemptsMigrations,
];

/** Seven days: see inboxRetention. */
export const defaultInboxRetentionMs = 7 * 24 * 3_600_000;

export interface InboxRetentionOptions {
  /** The service's database, opened with `inboxMigrations`. */
  readonly db: Database;
  /** How long a processed event is remembered. Default 7 days. */
  readonly retentionMs?: number;
  readonly logger: Logger;
  /** How often old rows are deleted. Default 1 h. */
  readonly intervalMs?: number;
}

/**
 * Forgets processed events (and counts of failed attempts) once they are
 * older than `retentionMs`, so the inbox does not grow for ever. An event delivered again after its row is
 * gone is processed again, so the retention must outlast every way an event
 * comes twice: redeliveries and retries take minutes at most, but an event
 * that an outbox relay published just before its process died is published
 * again when that process restarts, which may be days later.
 */
export function inboxRetention(options: InboxRetentionOptions): Retention {
  checkOptions("inboxRetention", options, ["db", "retentionMs", "logger", "intervalMs"]);
  const { db, logger, intervalMs } = options;
  const common = { db, retentionMs: options.retentionMs ?? defaultInboxRetentionMs, logger, ...(intervalMs !== undefined && { intervalMs }) };
  const processed = startRetention({ ...common, name: "inbox", table: "event_inbox", timeColumn: "processed_at" });
  // Counts of failed attempts go with them: their messages were settled long before.
  const failures = startRetention({ ...common, name: "failed attempts", table: "event_failures", timeColumn: "failed_at" });
  return {
    prune: async () => (await processed.prune()) + (await failures.prune()),
    stop: async () => void (await Promise.all([processed.stop(), failures.stop()])),
  };
}

/**
 * Exactly-once effects on top of at-least-once delivery: JetStream may deliver
 * an event again (lost ack, crash, re-publish beyond the duplicate window), and
 * the inbox makes the second delivery a no-op.
 */
export interface Inbox {
  /**
   * Records that `consumer` processes `eventId`, in `tx`; false when that was
   * recorded before (the event was processed already). Another transaction
   * recording the same event at the same time waits for this one, then sees
   * it (Postgres) or runs after it (SQLite).
   */
  claim(tx: Transaction, consumer: string, eventId: string): Promise<boolean>;
  /** Which of `eventIds` `consumer` has recorded as processed (committed, or earlier in `q`'s own transaction). */
  processed(q: Queryable, consumer: string, eventIds: readonly string[]): Promise<Set<string>>;
  /**
   * Records that `consumer` processes `eventId`, which `processed` did not
   * list: staged, and written with every other event recorded in `tx` by one
   * statement just before it commits. Should a concurrent transaction have
   * recorded one of them meanwhile, the commit fails as a write conflict
   * (InboxRaceError): the database runs the transaction again, which then
   * finds that event processed.
   */
  record(tx: Transaction, consumer: string, eventId: string): void;
}

/**
 * Another transaction recorded an event this one had staged (another
 * instance was given it too, say after an ack_wait ran out): this one's
 * effects must not commit. It carries serialization_failure's SQLSTATE, so
 * the database runs the transaction again (isWriteConflict).
 */
export class InboxRaceError extends Error {
  override readonly name = "InboxRaceError";
  readonly code = "40001";
  constructor(missing: number) {
    super(`${missing} of the events this transaction processed were recorded by a concurrent transaction first; it runs again`);
  }
}

interface InboxRow {
  readonly consumer: string;
  readonly eventId: string;
  readonly processedAt: number;
}

/** Rows an INSERT writes at most (3 parameters each; SQLite allows 32,766 parameters a statement). */
const rowsPerInsert = 256;

const insertSql = sqlByRowCount((rows) => `INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES ${placeholderRows(rows, 3)} ON CONFLICT DO NOTHING`);

const insertRows = (rows: readonly InboxRow[], tx: Transaction) => tx.run(insertSql(rows.length), rows.flatMap((r) => [r.consumer, r.eventId, r.processedAt]));

const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

const stagedRows: StagedWrites<InboxRow> = {
  name: "inbox",
  async flush(tx, staged) {
    // In one order everywhere: two instances' transactions recording some of the same events wait for each other rather than deadlock.
    const rows = [...staged].sort((a, b) => (a.consumer === b.consumer ? compare(a.eventId, b.eventId) : compare(a.consumer, b.consumer)));
    let written = 0;
    for (let from = 0; from < rows.length; from += rowsPerInsert) written += await insertRows(rows.slice(from, from + rowsPerInsert), tx);
    if (written < rows.length) throw new InboxRaceError(rows.length - written);
  },
};

/** The inbox, in the database of the transactions it is given (tables from `inboxMigrations`). */
export function createInbox(): Inbox {
  return {
    async claim(tx, consumer, eventId) {
      return (await insertRows([{ consumer, eventId, processedAt: Date.now() }], tx)) === 1;
    },
    async processed(q, consumer, eventIds) {
      if (eventIds.length === 0) return new Set();
      const rows = await q.query<{ event_id: string }>(`SELECT event_id FROM event_inbox WHERE consumer = $1 AND event_id ${q.dialect.anyOf("$2")}`, [consumer, eventIds]);
      return new Set(rows.map((r) => r.event_id));
    },
    record(tx, consumer, eventId) {
      tx.stage(stagedRows, { consumer, eventId, processedAt: Date.now() });
    },
  };
}

/**
 * The inbox claims of one transaction whose events run without savepoints
 * (a failing event voids it all, see noSavepointStep): which of its events
 * were processed is read by one query when it starts, and its own claims are
 * written by one statement before it commits, instead of a statement an
 * event. Not for savepoints: one rolled back would leave a claim here whose
 * row is gone.
 */
export interface BatchClaims {
  /** At the start of each attempt of the transaction: reads which of `eventIds` are processed, forgets earlier claims. */
  begin(tx: Transaction, consumer: string, eventIds: readonly string[]): Promise<void>;
  /** Whether `begin` read `eventId`: only those are claimed here. */
  covers(eventId: string): boolean;
  /** Claims `eventId` (staged with `Inbox.record`); false when it was processed, or claimed earlier in this transaction. */
  claim(tx: Transaction, consumer: string, eventId: string): boolean;
}

export function createBatchClaims(inbox: Inbox): BatchClaims {
  let read = new Set<string>();
  let taken = new Set<string>();
  return {
    async begin(tx, consumer, eventIds) {
      read = new Set(eventIds);
      taken = await inbox.processed(tx, consumer, [...read]);
    },
    covers: (eventId) => read.has(eventId),
    claim(tx, consumer, eventId) {
      if (taken.has(eventId)) return false;
      taken.add(eventId);
      inbox.record(tx, consumer, eventId);
      return true;
    },
  };
}

/** Longest ce-id a consumer takes (ids key the inbox; the platform's own are 36-character UUIDs). */
export const maxEventIdLength = 256;

/**
 * Why `id` cannot key the inbox (empty, longer than maxEventIdLength,
 * holding a control character, which PostgreSQL's text refuses in the case
 * of NUL, or U+FFFD, which bytes that are not UTF-8 decode to, so that
 * different ids would read as one), or undefined when it can.
 */
export function eventIdProblem(id: string | undefined): string | undefined {
  if (!id) return "has no ce-id header";
  if (id.length > maxEventIdLength) return `has a ce-id of ${id.length} characters, more than ${maxEventIdLength}`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(id)) return "has a control character in its ce-id";
  // What bytes that are not UTF-8 decode to: two different ids would read as one.
  if (id.includes("\ufffd")) return "has bytes in its ce-id that are not UTF-8 (U+FFFD)";
  return undefined;
}

const upperCaseHex = /[A-F]/;
const uuidText = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The delivery's event id (`ce-id`) as the inbox and its handler know it:
 * one that is a UUID in lower case, as UUIDs compare case-insensitively
 * (RFC 9562), so an event published again by a producer that writes its
 * ids in upper case one time and lower the next (another SDK, a relay that
 * reads them back from a database's uuid column) is one event, not two;
 * any other id as it came, as a CloudEvents id is opaque text whose case
 * counts. The header itself is left as it came (dead letters keep it).
 * Costs one regex test on the id unless it holds an upper-case A to F.
 */
export function eventIdOf(delivery: Delivery): string | undefined {
  const id = headerValue(delivery.headers, eventHeaders.id);
  return id !== undefined && upperCaseHex.test(id) && uuidText.test(id) ? id.toLowerCase() : id;
}

/**
 * The pipeline step that runs the rest of it once per event id and
 * consumer: a delivery whose event was processed already is acked without
 * running the handler; one without a usable `ce-id` (eventIdProblem) cannot
 * be deduplicated and is unprocessable, as is one that repeats a CloudEvents
 * attribute with another value (repeatedAttribute), whose id is not known. Its inbox row commits with the handler's effects. With
 * `batch`, the events its transaction began with are claimed through it. `logger` is the
 * consumer's (consumerPipeline), which names the consumer on its lines.
 */
export function inboxStep(inbox: Inbox, logger: Logger, batch?: BatchClaims): DeliveryMiddleware {
  return (next) => async (delivery, tx) => {
    const eventId = eventIdOf(delivery);
    const problem = eventIdProblem(eventId);
    if (problem || !eventId) throw new UnprocessableEventError(`the ${headerValue(delivery.headers, eventHeaders.type) ?? "event"} message ${problem}, so it cannot be deduplicated`);
    // Refused before the inbox is asked: with two ids, which one it has is not known, so it is not acked as a processed first one.
    const repeated = repeatedAttribute(delivery);
    if (repeated !== undefined) throw new UnprocessableEventError(repeatedAttributeProblem(delivery, repeated));
    const claimed = batch?.covers(eventId) ? batch.claim(tx, delivery.consumer, eventId) : await inbox.claim(tx, delivery.consumer, eventId);
    if (claimed) return next(delivery, tx);
    logger.debug({ eventId, streamSequence: delivery.streamSequence }, "event already processed; acked without running the handler");
    return { kind: "ack" };
  };
}
