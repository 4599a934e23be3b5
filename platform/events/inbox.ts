import type { Logger } from "../log/index.js";
import { checkOptions } from "../options/index.js";
import { startRetention, type Database, type Migration, type Retention, type Transaction } from "../sql/index.js";
import { eventHeaders } from "./cloud-events.js";
import { headerValue, UnprocessableEventError, type DeliveryMiddleware } from "./delivery.js";

/** The inbox table: one row per event a consumer has processed, committed with the handler's effects. */
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
  checkOptions("inboxRetention", options, ["db", "retentionMs", "logger", "intervalMs"]);
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
}

/** The inbox, in the database of the transactions it is given (tables from `inboxMigrations`). */
export function createInbox(): Inbox {
  return {
    async claim(tx, consumer, eventId) {
      const added = await tx.run("INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", [consumer, eventId, Date.now()]);
      return added === 1;
    },
  };
}

/**
 * The pipeline step that runs the rest of it once per event id and
 * consumer: a delivery whose event was processed already is acked without
 * running the handler; one with no `ce-id` cannot be deduplicated and is
 * unprocessable. Its inbox row commits with the handler's effects.
 */
export function inboxStep(inbox: Inbox, logger: Logger): DeliveryMiddleware {
  return (next) => async (delivery, tx) => {
    const eventId = headerValue(delivery.headers, eventHeaders.id);
    if (!eventId) throw new UnprocessableEventError(`the ${headerValue(delivery.headers, eventHeaders.type) ?? "event"} message has no ce-id header, so it cannot be deduplicated`);
    if (await inbox.claim(tx, delivery.consumer, eventId)) return next(delivery, tx);
    logger.debug({ consumer: delivery.consumer, eventId, streamSequence: delivery.streamSequence }, "event already processed; acked without running the handler");
    return { kind: "ack" };
  };
}
