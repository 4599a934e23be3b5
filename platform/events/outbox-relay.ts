import { createInbox, type Msg, MsgHdrsImpl, type NatsConnection, type Subscription } from "nats";
import type { Logger } from "../log/index.js";
import type { Database } from "../sql/index.js";
import { encodeHeaderBlock } from "./cloud-events.js";
import { assertOutboxTable, onOutboxCommit } from "./outbox.js";

export interface OutboxRelayOptions {
  /** The database whose outbox is published; opened with `outboxMigrations`. */
  readonly db: Database;
  readonly nc: NatsConnection;
  readonly logger: Logger;
  /** Events awaiting their PubAck at once (a sliding window). Default 256. */
  readonly maxInFlight?: number;
  /** How often leftovers are looked for when no commit wakes the relay. Default 1 s. */
  readonly sweepIntervalMs?: number;
  /** How long to wait for one PubAck (checked about every quarter of it). Default 5 s. */
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
  /** Events JetStream refused for good, moved to the parked table so that later events flow. */
  readonly parked: number;
}

/** Publishes the outbox to JetStream in commit order, at least once. */
export interface OutboxRelay {
  /** Resolves once every event committed before the call is published; rejects if the relay stops first. */
  flush(): Promise<void>;
  /** Stops sending, waits for the PubAcks in flight (at most publishTimeoutMs), marks what was acknowledged; the rest waits for the next start. Safe to call twice. */
  stop(): Promise<void>;
  stats(): OutboxRelayStats;
}

interface OutboxRow {
  readonly seq: number;
  readonly event_id: string;
  readonly subject: string;
  readonly payload: Buffer;
  /** The NATS header block; a JSON object in rows stored by earlier versions. */
  readonly headers: Buffer | string;
}

interface Sent {
  /** Unique per publish, the last token of its reply subject; a late answer to an earlier send of the same row cannot be taken for this one. */
  readonly sendId: number;
  readonly seq: number;
  readonly eventId: string;
  readonly sentAt: number;
}

interface Flusher {
  readonly upTo: number;
  resolve(): void;
  reject(err: Error): void;
}

/**
 * Headers already in wire form: nats.js sends what `encode` returns. The
 * relay only publishes them; reading them back is not supported.
 */
class WireHeaders extends MsgHdrsImpl {
  constructor(private readonly wire: Uint8Array) {
    super();
  }
  override encode(): Uint8Array {
    return this.wire;
  }
}

const wireHeadersOf = (row: OutboxRow): WireHeaders =>
  new WireHeaders(typeof row.headers === "string" ? encodeHeaderBlock({ ...JSON.parse(row.headers), "Nats-Msg-Id": row.event_id }) : row.headers);

/**
 * What one PubAck (or the server's answer in its place) says. A permanent
 * failure is one that sending the same bytes again can never cure.
 */
type AckOutcome = { readonly ok: true; readonly duplicate: boolean } | { readonly ok: false; readonly error: string; readonly permanent?: boolean };

/**
 * JetStream errors that refuse an event for what it is, not for the state
 * of the server (nats-server errors.json): message over the stream's
 * max_msg_size (10054), headers over 64 KiB (10097).
 */
const permanentApiErrors = new Set([10054, 10097]);

/** nats.js errors thrown on publish for what the message is: over max_payload, a subject or header it cannot send. */
const permanentClientErrors = new Set(["MAX_PAYLOAD_EXCEEDED", "BAD_SUBJECT", "BAD_HEADER"]);

function readAck(msg: Msg): AckOutcome {
  // A 503 status instead of a PubAck: no stream captures the subject.
  if (msg.headers?.code === 503) return { ok: false, error: "no stream captures the subject (503 no responders)" };
  if (msg.headers && msg.headers.code >= 400) return { ok: false, error: `status ${msg.headers.code} ${msg.headers.description}` };
  try {
    const ack = JSON.parse(Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength).toString()) as {
      stream?: string;
      duplicate?: boolean;
      error?: { code?: number; description?: string };
    };
    if (ack.error) {
      const code = (ack.error as { err_code?: number }).err_code;
      return { ok: false, error: `JetStream refused the event: ${ack.error.description ?? "error"} (${code ?? ack.error.code ?? "?"})`, permanent: code !== undefined && permanentApiErrors.has(code) };
    }
    if (typeof ack.stream !== "string") return { ok: false, error: "the PubAck names no stream" };
    return { ok: true, duplicate: ack.duplicate === true };
  } catch {
    return { ok: false, error: "the PubAck is not JSON" };
  }
}

/**
 * Starts the relay of `db`'s outbox. It is woken by every commit that adds
 * events and sweeps every `sweepIntervalMs` for leftovers. Each event is
 * published with its id as `Nats-Msg-Id` and its stored header block, with a
 * reply subject on the relay's own inbox, which collects the PubAcks; up to
 * `maxInFlight` events await theirs at once, and a new commit is sent while
 * earlier ones are still in flight. Acknowledged events are deleted in one
 * statement per contiguous run, so a crash in between only causes a duplicate
 * that JetStream drops within its window.
 *
 * An event JetStream refuses for what it is (larger than the server or the
 * stream takes) can never be published: it is moved to the parked table
 * with the reason, and logged, and later events flow; `tools/outbox.ts`
 * lists parked events and sends them again.
 *
 * On any other failure (a refusal, a 503, no PubAck within publishTimeoutMs) the
 * relay stops sending, lets the events in flight settle, waits with capped
 * backoff, asks JetStream whether it answers, and starts again from the
 * oldest event left. While NATS is unreachable events wait for the reconnect.
 * Order: events go out in commit order on one connection, so a lost connection
 * loses a tail, which is published again in order. Only an event the server
 * refuses on its own (say, a subject no stream captures) while later ones are
 * stored ends up after them.
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
  // Acknowledged events are deleted in batches at most this long after their PubAck: a crash in
  // between publishes them again (JetStream drops the copies), and commits are saved meanwhile.
  const markDelayMs = 20;
  if (retryMaxMs < retryMinMs) throw new Error(`createOutboxRelay: retryMaxMs (${retryMaxMs}) is below retryMinMs (${retryMinMs})`);
  const { db, nc, beforeMarkSent } = options;
  const logger = options.logger.child({ component: "outbox-relay" });
  assertOutboxTable(db, "createOutboxRelay");

  const selectAfter = db.sqlite.prepare("SELECT seq, event_id, subject, payload, headers FROM event_outbox WHERE seq > ? ORDER BY seq LIMIT ?");
  const deleteRange = db.sqlite.prepare("DELETE FROM event_outbox WHERE seq BETWEEN ? AND ?");
  const lastSeq = db.sqlite.prepare("SELECT max(seq) FROM event_outbox").pluck();
  const anyUpTo = db.sqlite.prepare("SELECT EXISTS (SELECT 1 FROM event_outbox WHERE seq <= ?)").pluck();
  const parkRow = db.sqlite.prepare(
    `INSERT OR REPLACE INTO event_outbox_parked (event_id, subject, type, payload, headers, created_at, parked_at, reason)
     SELECT event_id, subject, type, payload, headers, created_at, @now, @reason FROM event_outbox WHERE seq = @seq AND event_id = @eventId`,
  );
  const deleteRow = db.sqlite.prepare("DELETE FROM event_outbox WHERE seq = @seq AND event_id = @eventId");

  let stopping = false;
  let woken = false;
  /** Ends the current wait of the run loop early; set while it waits. */
  let interrupt: ((why: "wake" | "ack") => void) | undefined;
  let flushers: Flusher[] = [];
  let published = 0;
  let duplicates = 0;
  let parked = 0;

  /** Events sent and not yet answered, by send id, in sending order. */
  const inFlight = new Map<number, Sent>();
  let lastSendId = 0;
  /** Answered since the loop last looked: acknowledged ones, and the first failure. */
  let acked: Sent[] = [];
  let ackedDuplicates = 0;
  let failures = 0;
  let firstFailure: string | undefined;
  /** The highest seq sent in this pass; the next select starts after it. */
  let cursor = 0;

  // The connection's inbox prefix, so the account permissions that let requests through let PubAcks through too.
  const replyPrefix = createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
  /** Moves an event that can never be published out of the outbox, with the reason; false when that failed. */
  const park = (sent: Sent, reason: string): boolean => {
    try {
      db.transaction(() => {
        parkRow.run({ seq: sent.seq, eventId: sent.eventId, now: Date.now(), reason });
        deleteRow.run({ seq: sent.seq, eventId: sent.eventId });
      });
    } catch (err) {
      logger.error({ err, eventId: sent.eventId, reason }, "parking an outbox event that cannot be published failed; it is retried");
      return false;
    }
    parked++;
    logger.error(
      { eventId: sent.eventId, reason },
      "an outbox event can never be published; it is parked so that later events flow (`tools/outbox.ts list` shows it, `retry` sends it again)",
    );
    return true;
  };

  const settle = (sendId: number, outcome: AckOutcome): void => {
    const sent = inFlight.get(sendId);
    // A late answer to a send that already timed out: the event is sent again and deduplicated.
    if (!sent) return;
    inFlight.delete(sendId);
    if (outcome.ok) {
      acked.push(sent);
      if (outcome.duplicate) ackedDuplicates++;
    } else if (outcome.permanent && park(sent, outcome.error)) {
      // Parked: nothing to retry.
    } else {
      failures++;
      firstFailure ??= outcome.error;
    }
    interrupt?.("ack");
  };
  const acks: Subscription = nc.subscribe(`${replyPrefix}.*`, {
    callback: (err, msg) => {
      if (err) return;
      settle(Number(msg.subject.slice(replyPrefix.length + 1)), readAck(msg));
    },
  });
  const timeoutCheck = setInterval(
    () => {
      const expired = Date.now() - publishTimeoutMs;
      for (const sent of inFlight.values()) {
        if (sent.sentAt > expired) break;
        settle(sent.sendId, { ok: false, error: `no PubAck within ${publishTimeoutMs} ms` });
      }
    },
    Math.max(10, Math.floor(publishTimeoutMs / 4)),
  );
  timeoutCheck.unref();

  /** Whether rows after the cursor may exist: a select that came back short says no, until the next commit or sweep. */
  let maybeMore = true;
  const wake = (): void => {
    woken = true;
    maybeMore = true;
    interrupt?.("wake");
  };
  /** Waits for `ms`, or less when ended by what `by` allows; `stop` (default true) means stopping ends it. */
  const wait = (ms: number, by: { wake: boolean; ack: boolean; stop?: boolean }): Promise<void> => {
    if ((stopping && by.stop !== false) || (by.wake && woken)) return Promise.resolve();
    return new Promise((resolve) => {
      const end = () => {
        clearTimeout(timer);
        interrupt = undefined;
        resolve();
      };
      const timer = ms === Number.POSITIVE_INFINITY ? undefined : setTimeout(end, ms);
      interrupt = (why) => {
        if (why === "wake" ? by.wake : by.ack) end();
      };
      stopWaiting = by.stop === false ? undefined : end;
    });
  };
  let stopWaiting: (() => void) | undefined;

  const settleFlushers = (): void => {
    if (flushers.length === 0) return;
    flushers = flushers.filter((f) => {
      if (anyUpTo.get(f.upTo)) return true;
      f.resolve();
      return false;
    });
  };

  /** Sends events after the cursor until the window is full or the outbox has no more. */
  const sendMore = (): void => {
    while (maybeMore && inFlight.size < maxInFlight) {
      const limit = maxInFlight - inFlight.size;
      const rows = selectAfter.all(cursor, limit) as OutboxRow[];
      if (rows.length < limit) maybeMore = false;
      for (const row of rows) {
        cursor = row.seq;
        const sent: Sent = { sendId: ++lastSendId, seq: row.seq, eventId: row.event_id, sentAt: Date.now() };
        inFlight.set(sent.sendId, sent);
        try {
          nc.publish(row.subject, row.payload, { reply: `${replyPrefix}.${sent.sendId}`, headers: wireHeadersOf(row) });
        } catch (err) {
          const permanent = permanentClientErrors.has((err as { code?: string }).code ?? "");
          settle(sent.sendId, { ok: false, error: (err as Error).message, permanent });
          if (!permanent || failures > 0) return;
        }
      }
    }
  };

  /** Deletes what was acknowledged since the last call; says whether any was. */
  const markAcked = (): boolean => {
    if (acked.length === 0) return false;
    const done = acked;
    const dup = ackedDuplicates;
    acked = [];
    ackedDuplicates = 0;
    try {
      beforeMarkSent?.(done.map((s) => s.eventId));
      const seqs = done.map((s) => s.seq).sort((a, b) => a - b);
      db.transaction(() => {
        // Every seq of a run of consecutive numbers was acknowledged, so one range covers exactly those rows.
        let from = seqs[0];
        for (let i = 1; i <= seqs.length; i++) {
          if (i < seqs.length && seqs[i] === seqs[i - 1] + 1) continue;
          deleteRange.run(from, seqs[i - 1]);
          from = seqs[i];
        }
      });
    } catch (err) {
      logger.error({ err, events: done.length }, "marking published outbox events failed; they will be published again (JetStream drops the copies)");
      failures++;
      return false;
    }
    published += done.length;
    duplicates += dup;
    return true;
  };

  let markTimer: NodeJS.Timeout | undefined;
  const scheduleMark = (): void => {
    markTimer ??= setTimeout(() => {
      markTimer = undefined;
      markAcked();
      settleFlushers();
      // A failed mark is handled by the loop (backoff, then the events go out again).
      if (failures > 0) interrupt?.("ack");
    }, markDelayMs);
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
    // After a pass where something failed, ask JetStream whether it answers before sending again.
    let probe = false;
    while (!stopping) {
      const until = Date.now() + retryMaxMs;
      while (!connected && !stopping && Date.now() < until) {
        woken = false;
        await wait(until - Date.now(), { wake: true, ack: false });
      }
      if (stopping) break;
      if (nc.isClosed()) {
        logger.warn("the NATS connection is closed; the outbox relay stops and events stay in the outbox");
        break;
      }
      if (probe) {
        try {
          await nc.jetstreamManager({ timeout: publishTimeoutMs });
          probe = false;
        } catch (err) {
          logger.warn({ err, retryInMs: retryMs }, "the outbox relay cannot reach JetStream; retrying");
          await wait(retryMs, { wake: false, ack: false });
          retryMs = Math.min(retryMs * 2, retryMaxMs);
          continue;
        }
      }
      woken = false;
      // With nothing in flight every row left is unsent, save those acknowledged and not yet deleted (PubAcks come in
      // order, so they are the lowest); starting over after them also finds a seq used again (see outboxMigrations).
      if (inFlight.size === 0) cursor = acked.reduce((max, sent) => Math.max(max, sent.seq), 0);
      try {
        if (failures === 0) sendMore();
      } catch (err) {
        logger.warn({ err, retryInMs: retryMs }, "the outbox relay cannot read the database; retrying");
        failures++;
      }
      if (inFlight.size === 0 && failures === 0) {
        if (flushers.length > 0) markAcked();
        settleFlushers();
        await wait(sweepIntervalMs, { wake: true, ack: false });
        maybeMore = true;
        continue;
      }
      // Answers (or, while nothing failed, new commits) end the wait; the timeout check bounds it.
      if (inFlight.size > 0) await wait(Number.POSITIVE_INFINITY, { wake: failures === 0, ack: true });
      // Answers still coming: let those of the next read join this mark.
      if (inFlight.size > 0) await new Promise((r) => setImmediate(r));
      // Deleting what was acknowledged waits a little (markDelayMs) so one statement covers many events,
      // unless a full window is waiting, something failed, or a flush is asked for.
      const progressed = acked.length > 0;
      if (failures > 0 || flushers.length > 0 || acked.length >= maxInFlight) markAcked();
      else if (acked.length > 0) scheduleMark();
      settleFlushers();
      if (failures > 0 && inFlight.size === 0) {
        logger.warn(
          { failed: failures, reason: firstFailure, retryInMs: retryMs },
          "publishing outbox events failed; they stay in the outbox and are retried",
        );
        failures = 0;
        firstFailure = undefined;
        maybeMore = true;
        probe = true;
        await wait(retryMs, { wake: false, ack: false });
        retryMs = Math.min(retryMs * 2, retryMaxMs);
      } else if (progressed && failures === 0) retryMs = retryMinMs;
    }
    // Stopping: the events in flight get their answers or time out; what was acknowledged is marked.
    while (inFlight.size > 0 && !nc.isClosed()) await wait(Number.POSITIVE_INFINITY, { wake: false, ack: true, stop: false });
    clearTimeout(markTimer);
    markAcked();
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
      clearInterval(timeoutCheck);
      clearTimeout(markTimer);
      if (!nc.isClosed()) acks.unsubscribe();
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
        stopWaiting?.();
        await done;
      })();
      return stopped;
    },
    stats() {
      return { published, duplicates, parked };
    },
  };
}
