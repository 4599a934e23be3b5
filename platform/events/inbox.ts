import type { Logger } from "../log/index.js";
import { startRetention, type Database, type Migration, type Retention } from "../sql/index.js";

/** The inbox table: one row per event a consumer has processed, committed with the handler's effects. */
export const inboxMigrations: Migration[] = [
  {
    id: "events_0002_inbox",
    sql: `
      CREATE TABLE event_inbox (
        consumer     TEXT    NOT NULL,
        event_id     TEXT    NOT NULL,
        processed_at INTEGER NOT NULL,
        PRIMARY KEY (consumer, event_id)
      ) WITHOUT ROWID;
    `,
  },
  {
    // Old rows are found by age (inboxRetention).
    id: "events_0003_inbox_processed_at",
    sql: "CREATE INDEX event_inbox_processed_at ON event_inbox (processed_at);",
  },
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
 * Forgets processed events once they are older than `retentionMs`, so the
 * inbox does not grow for ever. An event delivered again after its row is
 * gone is processed again, so the retention must outlast every way an event
 * comes twice: redeliveries and retries take minutes at most, but an event
 * that an outbox relay published just before its process died is published
 * again when that process restarts, which may be days later.
 */
export function inboxRetention(options: InboxRetentionOptions): Retention {
  const known = new Set(["db", "retentionMs", "logger", "intervalMs"]);
  for (const key of Object.keys(options)) if (!known.has(key)) throw new Error(`inboxRetention: unknown option ${key}`);
  const { db, logger, intervalMs } = options;
  return startRetention({
    db,
    name: "inbox",
    table: "event_inbox",
    timeColumn: "processed_at",
    retentionMs: options.retentionMs ?? defaultInboxRetentionMs,
    logger,
    ...(intervalMs !== undefined && { intervalMs }),
  });
}

export interface InboxOptions {
  /** The service's database, opened with `inboxMigrations`. */
  readonly db: Database;
}

/**
 * Exactly-once effects on top of at-least-once delivery: JetStream may deliver
 * an event again (lost ack, crash, re-publish beyond the duplicate window), and
 * the inbox makes the second delivery a no-op.
 */
export interface Inbox {
  /**
   * Runs `work` in one transaction with the inbox row of (consumer, eventId);
   * returns false without running it when that row already exists. When
   * `work` throws, nothing is recorded and the error propagates.
   */
  runOnce(consumer: string, eventId: string, work: () => void): boolean;
}

/** Creates the inbox of `db`; throws when its table is missing (migrations not applied). */
export function createInbox(options: InboxOptions): Inbox {
  for (const key of Object.keys(options)) if (key !== "db") throw new Error(`createInbox: unknown option ${key}`);
  const { db } = options;
  const exists = db.sqlite.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'event_inbox'").get();
  if (!exists) throw new Error("createInbox: the database has no event_inbox table; pass inboxMigrations to openDatabase");
  const record = db.sqlite.prepare("INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING");
  return {
    runOnce(consumer, eventId, work) {
      return db.transaction(() => {
        if (record.run(consumer, eventId, Date.now()).changes === 0) return false;
        work();
        return true;
      });
    },
  };
}
