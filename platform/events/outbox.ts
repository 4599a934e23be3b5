import type { MessageChecker } from "../contracts/index.js";
import { placeholderRows, sendAhead, sqlByRowCount, type Database, type Migration, type StagedWrites, type Transaction } from "../sql/index.js";
import { encodeEvent, eventHeaderBlock, type EncodedEvent } from "./cloud-events.js";
import { startProducerSpan } from "./event-tracing.js";
import { assertEventFits, defaultMaxPayloadBytes } from "./event-rules.js";
import { checkOptions } from "../options/index.js";
import { validateSource } from "./publisher.js";
import type { TraceHeaders } from "./trace-context.js";
import type { EventDescriptor } from "./types.js";

/**
 * The outbox table: events wait here, committed with the state change they
 * describe, until the relay has them acknowledged by JetStream. `seq` gives the
 * publishing order; SQLite serialises writers, so it is also commit order.
 * `headers` holds the NATS header block as sent (CloudEvents headers plus
 * Nats-Msg-Id).
 *
 * 0003 keeps the table lean, as every commit that emits an event writes it:
 * no AUTOINCREMENT (its sqlite_sequence row is one more page per commit) and
 * no index on event_id (ids are UUIDv7, unique by construction, and nothing
 * looks rows up by id). Without AUTOINCREMENT a seq can be used again once
 * every row above it is gone; the relay allows for that.
 */
export const outboxMigrations: Migration[] = [
  {
    id: "events_0001_outbox",
    sqlite: `
      CREATE TABLE event_outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id   TEXT    NOT NULL UNIQUE,
        subject    TEXT    NOT NULL,
        type       TEXT    NOT NULL,
        payload    BLOB    NOT NULL,
        headers    TEXT    NOT NULL,
        created_at INTEGER NOT NULL
      );
    `,
    postgres: `
      CREATE TABLE event_outbox (
        seq        BIGSERIAL PRIMARY KEY,
        event_id   TEXT   NOT NULL,
        subject    TEXT   NOT NULL,
        type       TEXT   NOT NULL,
        payload    BYTEA  NOT NULL,
        headers    BYTEA  NOT NULL,
        created_at BIGINT NOT NULL
      );
    `,
  },
  {
    id: "events_0003_outbox_lean",
    sqlite: `
      CREATE TABLE event_outbox_lean (
        seq        INTEGER PRIMARY KEY,
        event_id   TEXT    NOT NULL,
        subject    TEXT    NOT NULL,
        type       TEXT    NOT NULL,
        payload    BLOB    NOT NULL,
        headers    BLOB    NOT NULL,
        created_at INTEGER NOT NULL
      );
      INSERT INTO event_outbox_lean SELECT seq, event_id, subject, type, payload, headers, created_at FROM event_outbox;
      DROP TABLE event_outbox;
      ALTER TABLE event_outbox_lean RENAME TO event_outbox;
    `,
    postgres: "" /* Postgres starts with the lean table */,
  },
  {
    // Events the relay can never publish (JetStream refuses them for good) wait here with the reason,
    // out of the way of later events, until an operator sends them again (tools/outbox.ts).
    id: "events_0004_outbox_parked",
    sqlite: `
      CREATE TABLE event_outbox_parked (
        event_id   TEXT    PRIMARY KEY,
        subject    TEXT    NOT NULL,
        type       TEXT    NOT NULL,
        payload    BLOB    NOT NULL,
        headers    BLOB    NOT NULL,
        created_at INTEGER NOT NULL,
        parked_at  INTEGER NOT NULL,
        reason     TEXT    NOT NULL
      ) WITHOUT ROWID;
    `,
    postgres: `
      CREATE TABLE event_outbox_parked (
        event_id   TEXT   PRIMARY KEY,
        subject    TEXT   NOT NULL,
        type       TEXT   NOT NULL,
        payload    BYTEA  NOT NULL,
        headers    BYTEA  NOT NULL,
        created_at BIGINT NOT NULL,
        parked_at  BIGINT NOT NULL,
        reason     TEXT   NOT NULL
      );
    `,
  },
];

export interface OutboxOptions {
  /** The service's database, opened with `outboxMigrations`. */
  readonly db: Database;
  /** The publishing service, sent as `ce-source`. */
  readonly source: string;
  /** The contracts' rules, which every event must pass before it is stored. */
  readonly checker?: MessageChecker;
  /** The server's max_payload, which an event and its headers must fit. Default 1 MiB. */
  readonly maxPayloadBytes?: () => number;
}

/** Events to publish, stored in the same transaction as the state change that caused them. */
export interface Outbox {
  /**
   * Adds one event to `tx` and returns its id (UUIDv7, also its `ce-id`).
   * Checked at once: throws when the subject cannot be built, and
   * (InvalidEventError) when the event breaks its contract's rules or is
   * larger than the server takes, so the change fails with nothing stored.
   * Written with the transaction's other events just before it commits
   * (dropped with a savepoint that rolls back); the relay is woken once it
   * has committed. `trace` is the context the event continues (a call's
   * CallContext, say): its producer span's parent while tracing is on, and
   * the trace context it carries while tracing is off; without it the
   * event starts a trace of its own.
   */
  add<T>(tx: Transaction, descriptor: EventDescriptor<T>, message: T, trace?: Partial<TraceHeaders>): string;
  /** Number of events not yet acknowledged by JetStream. */
  pending(): Promise<number>;
  /**
   * When the oldest event still in the outbox was added (ms since the
   * epoch), undefined when there is none: how far publishing lags behind
   * (NATS away, say). Events JetStream has taken may wait a moment more to
   * be deleted, or until the database is back from an outage.
   */
  oldestAddedAt(): Promise<number | undefined>;
}

/** One event ready to be written to the outbox table. */
interface OutboxRow {
  readonly id: string;
  readonly subject: string;
  readonly type: string;
  readonly payload: Buffer;
  readonly headers: Buffer;
  readonly createdAt: number;
}

/** Rows of one multi-row INSERT: SQLite binds up to 32,766 parameters, six a row. */
const rowsPerInsert = 500;

/** The INSERT of `rows` outbox rows, by row count: made once, not at every commit. */
const insertSql = sqlByRowCount(
  (rows) => `INSERT INTO event_outbox (event_id, subject, type, payload, headers, created_at) VALUES ${placeholderRows(rows, 6)}`,
);

/**
 * Postgres: the channel on which a process that committed events tells the
 * relay of another process (the one holding the relay's lock) to look.
 */
export const outboxChannel = "concord_outbox";

/** Hears of a commit that added events; says whether it relays them itself (then no other process is told). */
type CommitListener = () => boolean;

// Every outbox on a database wakes every relay on it, however many were created.
const commitListeners = new WeakMap<Database, Set<CommitListener>>();

/**
 * Tells other processes' relays that events were committed, outside the
 * committing transactions: a NOTIFY inside one would make every commit with
 * events wait for a lock on the server's notification queue, held through
 * the commit's flush to disk, and so commit one at a time. At most one
 * notification per database is in flight; commits meanwhile are told by the
 * next one.
 */
const notifiers = new WeakMap<Database, () => void>();
function notifierOf(db: Database): () => void {
  let notify = notifiers.get(db);
  if (notify) return notify;
  let sending = false;
  let again = false;
  notify = () => {
    if (sending) {
      again = true;
      return;
    }
    sending = true;
    again = false;
    // A lost notification costs only time: the relay sweeps for leftovers.
    void db
      .query("SELECT pg_notify($1, '')", [outboxChannel])
      .catch(() => undefined)
      .finally(() => {
        sending = false;
        if (again) notify!();
      });
  };
  notifiers.set(db, notify);
  return notify;
}

/** Creates the outbox of `db` (its table comes with `outboxMigrations`). */
export function createOutbox(options: OutboxOptions): Outbox {
  checkOptions("createOutbox", options, ["db", "source", "checker", "maxPayloadBytes"]);
  const { db, source, checker } = options;
  validateSource("createOutbox", source);
  const maxPayloadBytes = options.maxPayloadBytes ?? (() => defaultMaxPayloadBytes);
  const notifyOthers = db.dialect.name === "postgres" ? notifierOf(db) : undefined;
  const wake = () => {
    let relayedHere = false;
    for (const listener of commitListeners.get(db) ?? []) relayedHere = listener() || relayedHere;
    if (!relayedHere) notifyOthers?.();
  };
  const writes: StagedWrites<OutboxRow> = {
    name: "outbox",
    async flush(tx, rows) {
      for (let from = 0; from < rows.length; from += rowsPerInsert) {
        const chunk = rows.slice(from, from + rowsPerInsert);
        // Nothing is read back: on PostgreSQL the rows go with the COMMIT, in its round trip.
        await sendAhead(tx, insertSql(chunk.length), chunk.flatMap((r) => [r.id, r.subject, r.type, r.payload, r.headers, r.createdAt]));
      }
      tx.afterCommit(wake);
    },
  };
  return {
    add(tx, descriptor, message, trace) {
      const span = startProducerSpan(descriptor.typeName, trace);
      const given = span ? span.trace : trace;
      let event: EncodedEvent | undefined;
      try {
        event = encodeEvent(descriptor, message, { source, traceparent: given?.traceparent, tracestate: given?.tracestate });
        const payload = Buffer.from(event.payload.buffer, event.payload.byteOffset, event.payload.byteLength);
        const headers = eventHeaderBlock(event);
        assertEventFits(event.type, message, payload, headers.byteLength, checker, maxPayloadBytes());
        tx.stage(writes, { id: event.id, subject: event.subject, type: event.type, payload, headers, createdAt: Date.now() });
      } catch (err) {
        span?.failed(event, err);
        throw err;
      }
      span?.written(event, tx);
      return event.id;
    },
    async pending() {
      const [row] = await db.query<{ n: number }>("SELECT count(*) AS n FROM event_outbox");
      return Number(row.n);
    },
    async oldestAddedAt() {
      // The lowest seq, through the primary key: added first, give or take transactions committing side by side.
      const [row] = await db.query<{ created_at: number }>("SELECT created_at FROM event_outbox ORDER BY seq LIMIT 1");
      return row ? Number(row.created_at) : undefined;
    },
  };
}

/**
 * Calls `listener` after every commit that added events to `db`'s outbox;
 * returns the unsubscribe. The listener answers whether it relays the events
 * itself; when none does, other processes are told (Postgres).
 */
export function onOutboxCommit(db: Database, listener: CommitListener): () => void {
  let listeners = commitListeners.get(db);
  if (!listeners) commitListeners.set(db, (listeners = new Set()));
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** An event the relay parked because JetStream refuses it for good. */
export interface ParkedEvent {
  readonly eventId: string;
  readonly subject: string;
  readonly type: string;
  /** Payload and headers, in bytes. */
  readonly size: number;
  readonly createdAt: Date;
  readonly parkedAt: Date;
  readonly reason: string;
}

/** The parked events of `db`'s outbox, oldest first. */
export async function parkedEvents(db: Database): Promise<ParkedEvent[]> {
  const rows = await db.query<{ event_id: string; subject: string; type: string; size: number; created_at: number; parked_at: number; reason: string }>(
    "SELECT event_id, subject, type, length(payload) + length(headers) AS size, created_at, parked_at, reason FROM event_outbox_parked ORDER BY parked_at, event_id",
  );
  return rows.map((r) => ({ eventId: r.event_id, subject: r.subject, type: r.type, size: Number(r.size), createdAt: new Date(Number(r.created_at)), parkedAt: new Date(Number(r.parked_at)), reason: r.reason }));
}

/**
 * Puts parked events back at the end of the outbox (all of them, or those
 * with the given ids), for when what refused them has changed (a stream's
 * limit raised, say); the relay publishes them at its next sweep. Returns
 * how many were put back.
 */
export async function retryParked(db: Database, eventIds?: readonly string[]): Promise<number> {
  const where = eventIds ? `WHERE event_id ${db.dialect.anyOf("$1")}` : "";
  const params = eventIds ? [eventIds] : [];
  return db.transaction(async (tx) => {
    const moved = await tx.run(
      `INSERT INTO event_outbox (event_id, subject, type, payload, headers, created_at) SELECT event_id, subject, type, payload, headers, created_at FROM event_outbox_parked ${where} ORDER BY parked_at`,
      params,
    );
    await tx.run(`DELETE FROM event_outbox_parked ${where}`, params);
    return moved;
  });
}

/**
 * Deletes the parked event `eventId` for good: it is never published.
 * Returns whether it was parked (false: no such parked event, or put back
 * or deleted meanwhile).
 */
export async function dropParked(db: Database, eventId: string): Promise<boolean> {
  return (await db.run("DELETE FROM event_outbox_parked WHERE event_id = $1", [eventId])) > 0;
}
