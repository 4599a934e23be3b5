import type { MessageChecker } from "../contracts/index.js";
import type { Database, Migration } from "../sql/index.js";
import { encodeEvent, eventHeaderBlock } from "./cloud-events.js";
import { assertEventFits, defaultMaxPayloadBytes } from "./event-rules.js";
import { validateSource } from "./publisher.js";
import type { EventDescriptor } from "./types.js";

/**
 * The outbox table: events wait here, committed with the state change they
 * describe, until the relay has them acknowledged by JetStream. `seq` gives the
 * publishing order; SQLite serialises writers, so it is also commit order.
 * `headers` holds the NATS header block as sent (CloudEvents headers plus
 * Nats-Msg-Id); rows written before 0003 hold a JSON object.
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
    sql: `
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
  },
  {
    id: "events_0003_outbox_lean",
    sql: `
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
  },
  {
    // Events the relay can never publish (JetStream refuses them for good) wait here with the reason,
    // out of the way of later events, until an operator sends them again (tools/outbox.ts).
    id: "events_0004_outbox_parked",
    sql: `
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
   * Stores one event and returns its id (UUIDv7, also its `ce-id`). Must run
   * inside `db.transaction`; throws otherwise, when the subject cannot be
   * built, and (InvalidEventError) when the event breaks its contract's rules
   * or is larger than the server takes, so the transaction stores nothing.
   * The relay is woken when the transaction commits.
   */
  add<T>(descriptor: EventDescriptor<T>, message: T, options?: { readonly traceparent?: string }): string;
  /** Number of events not yet acknowledged by JetStream. */
  pending(): number;
}

// Every outbox on a database wakes every relay on it, however many were created.
const commitListeners = new WeakMap<Database, Set<() => void>>();

/** Creates the outbox of `db`; throws when its table is missing (migrations not applied). */
export function createOutbox(options: OutboxOptions): Outbox {
  const known = new Set(["db", "source", "checker", "maxPayloadBytes"]);
  for (const key of Object.keys(options)) if (!known.has(key)) throw new Error(`createOutbox: unknown option ${key}`);
  const { db, source, checker } = options;
  const maxPayloadBytes = options.maxPayloadBytes ?? (() => defaultMaxPayloadBytes);
  validateSource("createOutbox", source);
  assertOutboxTable(db, "createOutbox");
  const insert = db.sqlite.prepare(
    "INSERT INTO event_outbox (event_id, subject, type, payload, headers, created_at) VALUES (?, ?, ?, ?, ?, ?)",
  );
  const count = db.sqlite.prepare("SELECT count(*) FROM event_outbox").pluck();
  const wake = () => {
    for (const listener of commitListeners.get(db) ?? []) listener();
  };
  return {
    add(descriptor, message, addOptions = {}) {
      if (!db.sqlite.inTransaction) {
        throw new Error(`outbox.add(${descriptor.typeName}) must run inside db.transaction(...), so the event commits with the change it describes`);
      }
      const event = encodeEvent(descriptor, message, { source, traceparent: addOptions.traceparent });
      const payload = Buffer.from(event.payload.buffer, event.payload.byteOffset, event.payload.byteLength);
      const headers = eventHeaderBlock(event);
      assertEventFits(event.type, payload, headers.byteLength, checker, maxPayloadBytes());
      insert.run(event.id, event.subject, event.type, payload, headers, Date.now());
      db.afterCommit(wake);
      return event.id;
    },
    pending() {
      return count.get() as number;
    },
  };
}

/** Calls `listener` after every commit that added events to `db`'s outbox; returns the unsubscribe. */
export function onOutboxCommit(db: Database, listener: () => void): () => void {
  let listeners = commitListeners.get(db);
  if (!listeners) commitListeners.set(db, (listeners = new Set()));
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Throws a message naming the fix when `db` was opened without the outbox migrations. */
export function assertOutboxTable(db: Database, factory: string): void {
  const exists = db.sqlite.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'event_outbox'").get();
  if (!exists) throw new Error(`${factory}: the database has no event_outbox table; pass outboxMigrations to openDatabase`);
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
export function parkedEvents(db: Database): ParkedEvent[] {
  const rows = db.sqlite
    .prepare<[], { event_id: string; subject: string; type: string; size: number; created_at: number; parked_at: number; reason: string }>(
      "SELECT event_id, subject, type, length(payload) + length(headers) AS size, created_at, parked_at, reason FROM event_outbox_parked ORDER BY parked_at, event_id",
    )
    .all();
  return rows.map((r) => ({ eventId: r.event_id, subject: r.subject, type: r.type, size: r.size, createdAt: new Date(r.created_at), parkedAt: new Date(r.parked_at), reason: r.reason }));
}

/**
 * Puts parked events back at the end of the outbox (all of them, or those
 * with the given ids), for when what refused them has changed (a stream's
 * limit raised, say); the relay publishes them at its next sweep. Returns
 * how many were put back.
 */
export function retryParked(db: Database, eventIds?: readonly string[]): number {
  const where = eventIds ? "WHERE event_id IN (SELECT value FROM json_each(?))" : "";
  const args = eventIds ? [JSON.stringify(eventIds)] : [];
  return db.transaction(() => {
    const moved = db.sqlite
      .prepare(`INSERT INTO event_outbox (event_id, subject, type, payload, headers, created_at) SELECT event_id, subject, type, payload, headers, created_at FROM event_outbox_parked ${where} ORDER BY parked_at`)
      .run(...args).changes;
    db.sqlite.prepare(`DELETE FROM event_outbox_parked ${where}`).run(...args);
    return moved;
  });
}
