import type { NatsConnection, PubAck } from "nats";
import type { Logger } from "../log/index.js";
import type { Database } from "../sql/index.js";
import { toNatsHeaders } from "./cloud-events.js";
import { assertOutboxTable, onOutboxCommit } from "./outbox.js";

export interface OutboxRelayOptions {
  /** The database whose outbox is published; opened with `outboxMigrations`. */
  readonly db: Database;
  readonly nc: NatsConnection;
  readonly logger: Logger;
  /** PubAcks awaited at once; the window keeps publishing pipelined. Default 256. */
  readonly maxInFlight?: number;
  /** How often leftovers are looked for when no commit wakes the relay. Default 1 s. */
  readonly sweepIntervalMs?: number;
  /** How long to wait for one PubAck. Default 5 s. */
  readonly publishTimeoutMs?: number;
  /** First and largest pause after a failed attempt; doubles in between. Defaults 100 ms and 5 s. */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /**
   * Test hook, called with the acknowledged event ids before they are marked
   * sent. Throwing simulates a crash between PubAck and mark: the events are
   * published again later and JetStream drops the copies.
   */
  readonly beforeMarkSent?: (eventIds: readonly string[]) => void;
}

/** Counters since the relay started, for tests and metrics. */
export interface OutboxRelayStats {
  /** Events acknowledged by JetStream and removed from the outbox. */
  readonly published: number;
  /** Of those, how many JetStream already held (a re-publish inside its duplicate window). */
  readonly duplicates: number;
}

/** Publishes the outbox to JetStream in commit order, at least once. */
export interface OutboxRelay {
  /** Resolves once every event committed before the call is published; rejects if the relay stops first. */
  flush(): Promise<void>;
  /** Stops after the batch in flight; events left in the outbox wait for the next start. Safe to call twice. */
  stop(): Promise<void>;
  stats(): OutboxRelayStats;
}

interface OutboxRow {
  readonly seq: number;
  readonly event_id: string;
  readonly subject: string;
  readonly type: string;
  readonly payload: Buffer;
  readonly headers: string;
}

interface Flusher {
  readonly upTo: number;
  resolve(): void;
  reject(err: Error): void;
}

/**
 * Starts the relay of `db`'s outbox. It is woken by every commit that adds
 * events and sweeps every `sweepIntervalMs` for leftovers. Events are published
 * with their id as `Nats-Msg-Id` and deleted once acknowledged, so a crash in
 * between only causes a duplicate that JetStream drops within its window. While
 * NATS is unreachable events wait and the relay retries with capped backoff.
 * Order: a window goes out in commit order on one connection, so a lost
 * connection loses a tail of it, which is published again in order. Only an
 * event the server refuses on its own (say, a subject no stream captures) while
 * later ones are stored ends up after them.
 */
export function createOutboxRelay(options: OutboxRelayOptions): OutboxRelay {
  const known = new Set(["db", "nc", "logger", "maxInFlight", "sweepIntervalMs", "publishTimeoutMs", "retryMinMs", "retryMaxMs", "beforeMarkSent"]);
  for (const key of Object.keys(options)) if (!known.has(key)) throw new Error(`createOutboxRelay: unknown option ${key}`);
  const positive = (name: string, value: number | undefined, fallback: number): number => {
    const v = value ?? fallback;
    if (!Number.isInteger(v) || v <= 0) throw new Error(`createOutboxRelay: invalid ${name}: ${String(v)}`);
    return v;
  };
  const maxInFlight = positive("maxInFlight", options.maxInFlight, 256);
  const sweepIntervalMs = positive("sweepIntervalMs", options.sweepIntervalMs, 1_000);
  const publishTimeoutMs = positive("publishTimeoutMs", options.publishTimeoutMs, 5_000);
  const retryMinMs = positive("retryMinMs", options.retryMinMs, 100);
  const retryMaxMs = positive("retryMaxMs", options.retryMaxMs, 5_000);
  if (retryMaxMs < retryMinMs) throw new Error(`createOutboxRelay: retryMaxMs (${retryMaxMs}) is below retryMinMs (${retryMinMs})`);
  const { db, nc, beforeMarkSent } = options;
  const logger = options.logger.child({ component: "outbox-relay" });
  assertOutboxTable(db, "createOutboxRelay");

  const js = nc.jetstream({ timeout: publishTimeoutMs });
  const selectBatch = db.sqlite.prepare("SELECT seq, event_id, subject, type, payload, headers FROM event_outbox ORDER BY seq LIMIT ?");
  const deleteRow = db.sqlite.prepare("DELETE FROM event_outbox WHERE seq = ?");
  const lastSeq = db.sqlite.prepare("SELECT max(seq) FROM event_outbox").pluck();
  const anyUpTo = db.sqlite.prepare("SELECT EXISTS (SELECT 1 FROM event_outbox WHERE seq <= ?)").pluck();

  let stopping = false;
  let woken = false;
  let pause: { readonly wakeable: boolean; end(): void } | undefined;
  let flushers: Flusher[] = [];
  let published = 0;
  let duplicates = 0;

  const wake = (): void => {
    woken = true;
    if (pause?.wakeable) pause.end();
  };
  // A wake-up cuts the idle sweep short, never a backoff: commits must not turn retries into a busy loop.
  const sleep = (ms: number, wakeable: boolean): Promise<void> => {
    if (stopping || (wakeable && woken)) return Promise.resolve();
    return new Promise((resolve) => {
      const end = () => {
        clearTimeout(timer);
        pause = undefined;
        resolve();
      };
      const timer = setTimeout(end, ms);
      pause = { wakeable, end };
    });
  };
  const settleFlushers = (): void => {
    if (flushers.length === 0) return;
    flushers = flushers.filter((f) => {
      if (anyUpTo.get(f.upTo)) return true;
      f.resolve();
      return false;
    });
  };

  /** Publishes one window; says whether any event got through and whether any failed. */
  const publishWindow = async (rows: OutboxRow[]): Promise<{ progressed: boolean; failed: boolean }> => {
    const results = await Promise.allSettled(
      rows.map(async (row): Promise<PubAck> => js.publish(row.subject, row.payload, { msgID: row.event_id, headers: toNatsHeaders(JSON.parse(row.headers)) })),
    );
    const acked: OutboxRow[] = [];
    let dup = 0;
    let firstError: unknown;
    results.forEach((result, i) => {
      if (result.status === "fulfilled") {
        acked.push(rows[i]);
        if (result.value.duplicate) dup += 1;
      } else firstError ??= result.reason;
    });
    const failed = acked.length < rows.length;
    if (failed) {
      logger.warn(
        { err: firstError, failed: rows.length - acked.length, acknowledged: acked.length },
        "publishing outbox events failed; they stay in the outbox and are retried",
      );
    }
    if (acked.length === 0) return { progressed: false, failed };
    try {
      beforeMarkSent?.(acked.map((row) => row.event_id));
      db.transaction(() => {
        for (const row of acked) deleteRow.run(row.seq);
      });
    } catch (err) {
      logger.error({ err, events: acked.length }, "marking published outbox events failed; they will be published again (JetStream drops the copies)");
      return { progressed: false, failed: true };
    }
    published += acked.length;
    duplicates += dup;
    return { progressed: true, failed };
  };

  // nats.js drops what is published while disconnected, so the relay waits for the reconnect instead
  // (but tries anyway after retryMaxMs, so a missed status event cannot stall it).
  let connected = !nc.isClosed();
  const statuses = nc.status();
  void (async () => {
    for await (const status of statuses) {
      if (status.type === "disconnect") connected = false;
      else if (status.type === "reconnect") {
        connected = true;
        wake();
      }
    }
  })().catch(() => undefined);

  const run = async (): Promise<void> => {
    let retryMs = retryMinMs;
    // After a pass where nothing got through, ask JetStream whether it answers before sending a whole window.
    let probe = false;
    while (!stopping) {
      // Commits wake the relay here too; only the reconnect (or the deadline) ends the wait.
      const until = Date.now() + retryMaxMs;
      while (!connected && !stopping && Date.now() < until) {
        woken = false;
        await sleep(until - Date.now(), true);
      }
      if (stopping) break;
      if (nc.isClosed()) {
        logger.warn("the NATS connection is closed; the outbox relay stops and events stay in the outbox");
        break;
      }
      woken = false;
      let outcome: { progressed: boolean; failed: boolean };
      try {
        if (probe) await nc.jetstreamManager({ timeout: publishTimeoutMs });
        const rows = selectBatch.all(maxInFlight) as OutboxRow[];
        if (rows.length === 0) {
          settleFlushers();
          await sleep(sweepIntervalMs, true);
          continue;
        }
        outcome = await publishWindow(rows);
      } catch (err) {
        logger.warn({ err, retryInMs: retryMs }, "the outbox relay cannot reach JetStream or the database; retrying");
        outcome = { progressed: false, failed: true };
      }
      settleFlushers();
      if (outcome.progressed) {
        probe = false;
        retryMs = retryMinMs;
      } else if (outcome.failed) {
        probe = true;
        await sleep(retryMs, false);
        retryMs = Math.min(retryMs * 2, retryMaxMs);
      }
    }
  };

  const rejectFlushers = (): void => {
    const waiting = flushers;
    flushers = [];
    for (const f of waiting) f.reject(new Error("the outbox relay stopped before the events were published"));
  };
  const unsubscribe = onOutboxCommit(db, wake);
  const done = run()
    .catch((err) => logger.error({ err }, "the outbox relay stopped unexpectedly"))
    .finally(() => {
      stopping = true;
      rejectFlushers();
    });
  let stopped: Promise<void> | undefined;

  return {
    flush() {
      if (stopping) return Promise.reject(new Error("the outbox relay is stopped"));
      const upTo = lastSeq.get() as number | null;
      if (upTo === null) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        flushers.push({ upTo, resolve, reject });
        wake();
      });
    },
    stop() {
      stopped ??= (async () => {
        stopping = true;
        unsubscribe();
        (statuses as { stop?: () => void }).stop?.();
        pause?.end();
        await done;
      })();
      return stopped;
    },
    stats() {
      return { published, duplicates };
    },
  };
}
