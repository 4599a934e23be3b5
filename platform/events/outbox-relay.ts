import type { NatsConnection } from "nats";
import { errorLogFields } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { checkOptions, positiveInteger } from "../options/index.js";
import { type Database, isDatabaseRefusingWrites, type SessionLock } from "../sql/index.js";
import { stopStatusIterator } from "./nats-internals.js";
import { createBatchTrial } from "./batch-trial.js";
import { recordSend } from "./event-tracing.js";
import type { TraceHeaders } from "./trace-context.js";
import { spanLogFields, type SpanLogFields } from "../tracing/index.js";
import { onOutboxCommit, outboxChannel } from "./outbox.js";
import { createOutboxStore, type OutboxRow } from "./outbox-store.js";
import { createPublishWindow, type PublishOutcome } from "./publish-window.js";

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
   * How often a relay that another process's relay keeps out asks again to take over (Postgres); it asks at once
   * when the holder says it gave the lock up. Default 1 s.
   */
  readonly leaderPollMs?: number;
  /** How long acknowledged events wait to be deleted, so that one statement covers many. Default 20 ms; a crash in between only repeats them. */
  readonly markDelayMs?: number;
  /**
   * Streams that take atomic batch publishes (ensureStreams resolves with
   * them). A backlog of events in a row bound for one of them (minBatch or
   * more) goes out as one batch, which the stream stores all or none with one
   * fsync and one answer, instead of one publish each. Default none: one
   * publish per event.
   */
  readonly batchStreams?: ReadonlyArray<{ readonly name: string; readonly subjects: readonly string[] }>;
  /**
   * How many events in a row, waiting for one batch stream, make a backlog
   * that goes out as one atomic batch (see batchStreams). Fewer go out one by
   * one, pipelined, which costs the server less for small numbers. Default 16.
   */
  readonly minBatch?: number;
  /**
   * "faster" (the default): a backlog goes out in batches only while batches
   * were measured to be acknowledged clearly faster than single publishes,
   * as when each publish waits for its own fsync; a server that answers
   * single publishes fast stores them for less CPU than batches. "backlog":
   * every backlog in batches.
   */
  readonly batchWhen?: "faster" | "backlog";
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
  /**
   * Resolves once every event committed before the call is published (or parked); rejects if the relay stops first,
   * and with OutboxUnread when the outbox cannot be read. `onRead` is called once it is read and holds events to
   * publish: a flush that does not end before then has not learnt whether any are left.
   */
  flush(onRead?: () => void): Promise<void>;
  /**
   * Stops sending, waits for the PubAcks in flight (at most publishTimeoutMs), marks what was acknowledged; the rest
   * waits for the next start. Resolves within about a second past publishTimeoutMs, whatever the database does (a
   * statement of a hung one is left under way). Safe to call twice.
   */
  stop(): Promise<void>;
  stats(): OutboxRelayStats;
  /** Whether this process relays the outbox now: it holds the relay's lock (PostgreSQL), and not another instance. */
  relaying(): boolean;
  /**
   * Says the process is stopping (called before its gRPC calls drain, ahead of `stop`): the relay goes on as
   * before, but if it takes the lock from now on (the relaying process stopped too), it publishes what is left
   * without saying it took the relay over, which it holds only until its own stop. From now on a failure (the
   * database or NATS away) is not retried: the relay ends, leaving its events in the outbox, and `flush` rejects
   * with OutboxRelayGaveUp, which says why, as the one line of what was left.
   */
  standDown(): void;
}

/** Whether `subject` falls under the stream subject `filter` (`*` one token, `>` the rest). */
function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split(".");
  const t = subject.split(".");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === ">") return t.length > i;
    if (i >= t.length || (f[i] !== "*" && f[i] !== t[i])) return false;
  }
  return f.length === t.length;
}

/** What ties a line about an event the relay failed to publish to the event and to its send span (see spanLogFields). */
type FailedEventFields = { readonly eventId: string } & Partial<SpanLogFields>;

interface Flusher {
  readonly upTo: number;
  resolve(): void;
  reject(err: Error): void;
}

/** The database lock of the one process that relays a service's outbox. */
const relayLockKey = 0x436f6e65;

/** How long a stop waits for the relay's last mark, beyond the PubAcks in flight (publishTimeoutMs). */
const stopMarkMs = 1_000;

/** How often, at most, marks that go on failing are logged again after the first failure's line. */
const markFailureLogMs = 60_000;

/**
 * Postgres: the channel on which a relay that gave the lock up says so, once
 * it has, to the processes waiting for it, which ask at once rather than at
 * their next ask (what other processes committed since the holder's last
 * read waited for that). The death of a holder is noticed at the next ask.
 */
const handoverChannel = "concord_outbox_relay";

/**
 * Starts the relay of `db`'s outbox: the select / mark / back-off loop here,
 * the JetStream side in a publish window (publish-window.ts). It is woken by
 * every commit that adds events and sweeps every `sweepIntervalMs` for
 * leftovers. Events go out in seq order, up to `maxInFlight` awaiting their
 * PubAck at once, a new commit sent while earlier events are still in
 * flight. Acknowledged events are deleted in one statement per contiguous
 * run, so a crash in between only causes a duplicate that JetStream drops
 * within its window.
 *
 * An event refused for what it is (larger than the server or the stream
 * takes, a subject or header that cannot be sent, a subject the
 * connection's user may not publish to) can never be published: it is
 * moved to the parked table with the reason, and logged, and later events
 * flow; `tools/outbox.ts` lists parked events and sends them again.
 *
 * On any other failure (a refusal, a 503, no PubAck within
 * publishTimeoutMs) the relay stops sending, lets the events in flight
 * settle, waits with capped backoff, asks JetStream whether it answers, and
 * starts again from the oldest event left; the first events acknowledged
 * after that are logged once, at info, with how long publishing was held
 * up. While NATS is unreachable events wait for the reconnect. Order: events
 * go out in commit order on one connection, so a lost connection loses a
 * tail, which is published again in
 * order. Only an event the server refuses on its own (say, a subject no
 * stream captures) while later ones are stored ends up after them.
 */
export function createOutboxRelay(options: OutboxRelayOptions): OutboxRelay {
  const factory = "createOutboxRelay";
  checkOptions(factory, options, ["db", "nc", "logger", "maxInFlight", "sweepIntervalMs", "publishTimeoutMs", "retryMinMs", "retryMaxMs", "leaderPollMs", "markDelayMs", "batchStreams", "minBatch", "batchWhen", "beforeMarkSent"]);
  const leaderPollMs = positiveInteger(factory, "leaderPollMs", options.leaderPollMs, 1_000);
  const markDelayMs = positiveInteger(factory, "markDelayMs", options.markDelayMs, 20);
  const minBatch = Math.max(2, positiveInteger(factory, "minBatch", options.minBatch, 16));
  const batchWhen = options.batchWhen ?? "faster";
  if (batchWhen !== "faster" && batchWhen !== "backlog") throw new Error(`${factory}: batchWhen must be "faster" or "backlog" (got ${JSON.stringify(options.batchWhen)})`);
  const maxInFlight = positiveInteger(factory, "maxInFlight", options.maxInFlight, 256);
  const sweepIntervalMs = positiveInteger(factory, "sweepIntervalMs", options.sweepIntervalMs, 1_000);
  const publishTimeoutMs = positiveInteger(factory, "publishTimeoutMs", options.publishTimeoutMs, 5_000);
  const retryMinMs = positiveInteger(factory, "retryMinMs", options.retryMinMs, 100);
  const retryMaxMs = positiveInteger(factory, "retryMaxMs", options.retryMaxMs, 5_000);
  if (retryMaxMs < retryMinMs) throw new Error(`${factory}: retryMaxMs (${retryMaxMs}) is below retryMinMs (${retryMinMs})`);
  const { db, nc, beforeMarkSent } = options;
  const batchStreams = options.batchStreams ?? [];
  /** The batch stream an event's subject goes to, if any. */
  const batchStreamOf = (subject: string): string | undefined => batchStreams.find((s) => s.subjects.some((f) => subjectMatches(f, subject)))?.name;
  /**
   * After a failure, how many events still go out one by one before batches
   * again: sent alone, each duplicate or refusal is settled on its own.
   */
  let oneByOne = 0;
  const logger = options.logger.child({ component: "outbox-relay" });
  /** How a backlog goes out where batchWhen is "faster" (see batch-trial.ts). */
  const trial = createBatchTrial({
    onDecision: ({ batch, single, batched }) =>
      logger.debug({ singlePerSecond: Math.round(single * 1000), batchedPerSecond: Math.round(batched * 1000) }, batch ? "batches were clearly faster; a backlog goes out in batches" : "batches were not clearly faster; a backlog goes out one by one"),
  });
  /** Whether the next backlog goes out in batches. */
  const batchNext = (): boolean => batchWhen === "backlog" || trial.batchNext();
  const store = createOutboxStore(db);

  let stopping = false;
  /**
   * Why the relay ended on its own once the process began to stop (see standDown): the first failure met from
   * then on, which is not retried. Its events stay in the outbox, for the next start or another instance.
   */
  let gaveUp: string | undefined;
  let woken = false;
  /** Ends the current wait of the run loop early; set while it waits. */
  let interrupt: ((why: "wake" | "ack") => void) | undefined;
  let stopWaiting: (() => void) | undefined;
  /** Ends whatever wait the loop is in, for any reason. */
  let currentWait: (() => void) | undefined;
  let flushers: Flusher[] = [];
  let published = 0;
  let duplicates = 0;
  let parked = 0;

  /** Answered since the loop last looked: acknowledged ones, those to park, and the first failure. */
  let acked: OutboxRow[] = [];
  let ackedDuplicates = 0;
  let toPark: Array<{ readonly row: OutboxRow; readonly reason: string; readonly trace: TraceHeaders | undefined }> = [];
  let failures = 0;
  let firstFailure: string | undefined;
  /** The event the first failure was of, when it was one event's: its id and its send span's ids, for the line that tells it. */
  let firstFailed: FailedEventFields | undefined;
  /** The fields that tie a line about `row` to it and to the span of its failed send, `trace` (recordSend's). */
  const failedEventFields = (row: OutboxRow, trace: TraceHeaders | undefined): FailedEventFields => ({ eventId: row.eventId, ...spanLogFields(trace) });
  /** Since when publishing has been held up, from the first failure logged until an event is acknowledged again. */
  let heldUpSince: number | undefined;
  /** Logs, once an outage is over, that events are published again: how long they were held up, and how many wait. */
  const resumed = (): void => {
    const heldUpForMs = Date.now() - heldUpSince!;
    heldUpSince = undefined;
    const say = (waiting: number | undefined) =>
      logger.info({ heldUpForMs, waiting }, `publishing outbox events works again after ${(heldUpForMs / 1000).toFixed(1)} s held up${waiting === undefined ? "" : `; ${waiting} events wait in the outbox`}`);
    // Read off the loop, once an outage: the line is not worth holding the events up again for.
    store.waiting().then(say, () => say(undefined));
  };
  /** The highest seq sent in this pass; the next select starts after it (SQLite). */
  let cursor = 0;
  /**
   * Postgres gives out seqs at insert, so a transaction that commits late can
   * hold a lower seq than events already read. Reads there start from the
   * oldest row each time and skip the rows this pass has sent and not yet
   * deleted (in flight, acknowledged, or to be parked); a late commit is read
   * at the next select, before any later event of its aggregate, whose
   * transaction waited for its lock. SQLite has one writer, so its seq order is
   * commit order and reads go on after the cursor.
   */
  const fromHead = db.dialect.name === "postgres";
  const taken = new Set<number>();
  const read = (limit: number): Promise<OutboxRow[]> => (fromHead ? store.after(0, limit, [...taken]) : store.after(cursor, limit));
  const release = (rows: readonly OutboxRow[]): void => {
    for (const row of rows) taken.delete(row.seq);
  };

  const window = createPublishWindow<OutboxRow>({
    nc,
    publishTimeoutMs,
    onOutcome(row, outcome: PublishOutcome) {
      const failedSend = recordSend(row, outcome);
      if (outcome.ok && batchWhen === "faster") trial.acked(batchInFlight);
      if (outcome.ok) {
        acked.push(row);
        if (outcome.duplicate) ackedDuplicates++;
      } else if (outcome.permanent) toPark.push({ row, reason: outcome.error, trace: failedSend });
      else {
        taken.delete(row.seq);
        failures++;
        if (firstFailure === undefined) {
          firstFailure = outcome.error;
          firstFailed = failedEventFields(row, failedSend);
        }
      }
      interrupt?.("ack");
    },
  });

  /**
   * Whether rows after the cursor may exist: a select that came back short says no, until the next commit or sweep,
   * unless a commit woke the relay while it ran (see `wakes`).
   */
  let maybeMore = true;
  /** Wake-ups so far. A commit that wakes the relay during a select may be missing from what it returns: read again. */
  let wakes = 0;
  const wake = (): void => {
    wakes++;
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
        stopWaiting = undefined;
        currentWait = undefined;
        resolve();
      };
      currentWait = end;
      const timer = ms === Number.POSITIVE_INFINITY ? undefined : setTimeout(end, ms);
      interrupt = (why) => {
        if (why === "wake" ? by.wake : by.ack) end();
      };
      stopWaiting = by.stop === false ? undefined : end;
    });
  };

  /**
   * Resolves the flushes whose events are all out of the outbox; a flush asked for meanwhile waits for the next call,
   * as does one whose outbox cannot be read (the database away): never rejects, so the loop goes on.
   */
  const settleFlushers = async (): Promise<void> => {
    if (flushers.length === 0) return;
    const checking = flushers;
    flushers = [];
    const still: Flusher[] = [];
    for (const f of checking) {
      if (await store.anyUpTo(f.upTo).catch(() => true)) still.push(f);
      else f.resolve();
    }
    flushers = [...still, ...flushers];
    if (stopped) rejectFlushers();
  };

  /** Parks what JetStream refused for good; a row that cannot be parked is retried like any failure. */
  const parkRefused = async (): Promise<void> => {
    const refused = toPark;
    toPark = [];
    for (const { row, reason, trace } of refused) {
      taken.delete(row.seq);
      try {
        await store.park(row, reason);
      } catch (err) {
        logger.error({ err, reason, ...failedEventFields(row, trace) }, "parking an outbox event that cannot be published failed; it is retried");
        failures++;
        if (firstFailure === undefined) {
          firstFailure = reason;
          firstFailed = failedEventFields(row, trace);
        }
        continue;
      }
      parked++;
      logger.error(
        { subject: row.subject, reason, ...failedEventFields(row, trace) },
        "an outbox event can never be published; it is parked so that later events flow (`tools/outbox.ts <service> list` shows it, `retry` sends it again)",
      );
    }
  };

  /** A batch is in flight: nothing else goes out until it is answered (were it refused, later events would be stored before its own). */
  let batchInFlight = false;
  /** A backlog was found while events were in flight: it waits for their answers and goes out as one batch. */
  let backlogWaiting = false;

  /**
   * Sends what comes next until the window is full or the outbox has no
   * more; stops at a failure. Events go out one by one, a sliding window of
   * them awaiting their PubAcks, unless at least `minBatch` events in a row
   * are waiting for one batch stream and batches are in use (batchWhen; see
   * batch-trial.ts): a backlog, as when each publish waits for its fsync.
   * Those wait for the window to empty and go out as one
   * atomic batch (one store, one fsync, one answer), and nothing else is
   * sent until it is answered. A trickle of events is never held back to
   * make a batch.
   */
  const sendMore = async (): Promise<void> => {
    const batching = batchStreams.length > 0;
    while (maybeMore && failures === 0 && !stopping) {
      if (window.inFlight === 0) batchInFlight = backlogWaiting = false;
      if (batchInFlight || backlogWaiting) return;
      const room = maxInFlight - window.inFlight;
      const limit = batching && oneByOne > 0 ? Math.min(room, oneByOne) : room;
      if (limit <= 0) return;
      const wakesBefore = wakes;
      const rows = await read(limit);
      // Woken during the read: the commit may be after the read's snapshot, so the read says nothing of what is left.
      const wokenMeanwhile = wakes !== wakesBefore;
      // A read that filled what room there was leaves more behind: a backlog, however small the room.
      trial.backlog(rows.length >= minBatch || (rows.length > 0 && rows.length === limit));
      if (batching && oneByOne === 0 && rows.length >= minBatch && batchNext()) {
        const stream = batchStreamOf(rows[0].subject);
        let end = 1;
        while (stream && end < rows.length && batchStreamOf(rows[end].subject) === stream) end++;
        if (stream && end >= minBatch) {
          // Read again once the window is empty (or at once, when it is).
          if (window.inFlight > 0) return void (backlogWaiting = true);
          const next = rows.slice(0, end);
          maybeMore = wokenMeanwhile || rows.length === limit || end < rows.length;
          cursor = next[next.length - 1].seq;
          for (const row of next) taken.add(row.seq);
          batchInFlight = true;
          trial.sentBatch(next.length);
          window.sendBatch(next.map((row) => ({ event: row, tag: row })));
          return;
        }
      }
      if (rows.length < limit && !wokenMeanwhile) maybeMore = false;
      for (const row of rows) {
        cursor = row.seq;
        taken.add(row.seq);
        window.send(row, row);
        if (oneByOne > 0) oneByOne--;
        if (failures > 0) return;
      }
    }
  };

  /** Deletes what was acknowledged since the last call, one at a time; says whether any was. */
  let marking: Promise<boolean> = Promise.resolve(false);
  /** The highest seq of the rows a mark under way is deleting (0 when none): they are sent, though still in the outbox. */
  let markingUpTo = 0;
  /**
   * The loop's reads start after markingUpTo. Once the mark has deleted its rows the outbox may be empty, and
   * a commit then takes a seq at or below it again (see outboxMigrations), which such a read would pass over:
   * the end of the mark wakes the loop to read again.
   */
  let floored = false;
  /**
   * While marks fail (a database file deleted under the service fails every one, retried every retryMaxMs): since
   * when, when a line last said so, and how many failed since. The first failure is logged with its stack; the
   * same again at most every markFailureLogMs, by its message and count, and once when a mark works again.
   */
  let markFailing: { since: number; loggedAt: number; failedSince: number } | undefined;
  const markFailed = (err: unknown, events: number, level: "warn" | "error", message: string): void => {
    const now = Date.now();
    if (!markFailing) {
      markFailing = { since: now, loggedAt: now, failedSince: 0 };
      logger[level]({ err, events }, message);
      return;
    }
    markFailing.failedSince++;
    if (now - markFailing.loggedAt < markFailureLogMs) return;
    const error = err instanceof Error ? err.message : String(err);
    logger[level]({ error, events, failedSince: markFailing.failedSince, failingForMs: now - markFailing.since }, `${message} (still failing; the first failure's line has its stack)`);
    markFailing.loggedAt = now;
    markFailing.failedSince = 0;
  };
  const markAcked = (): Promise<boolean> => {
    marking = marking.then(async () => {
      if (acked.length === 0) return false;
      const done = acked;
      const dup = ackedDuplicates;
      acked = [];
      ackedDuplicates = 0;
      markingUpTo = done.reduce((max, row) => Math.max(max, row.seq), 0);
      try {
        beforeMarkSent?.(done.map((r) => r.eventId));
        await store.remove(done.map((r) => r.seq));
        if (markFailing) {
          logger.info({ failingForMs: Date.now() - markFailing.since }, "deleting published outbox events works again");
          markFailing = undefined;
        }
        markingUpTo = 0;
        release(done);
        if (floored) {
          floored = false;
          wake();
        }
      } catch (err) {
        markingUpTo = 0;
        // Stopping: nothing is tried again; the events go out again at the next start (JetStream drops the copies).
        if (stopBegun()) {
          release(done);
          giveUp(`deleting published events failed: ${errorMessage(err)}`);
          failures++;
          return false;
        }
        if (isDatabaseRefusingWrites(err)) {
          // JetStream has them: they are deleted once the database takes the DELETE, not published again (a database
          // away for longer than JetStream's duplicate window would have them stored twice), and not read meanwhile.
          acked = [...done, ...acked];
          ackedDuplicates += dup;
          markFailed(err, done.length, "warn", "deleting published outbox events failed while the database is away; deleting them again once it answers");
        } else {
          release(done);
          markFailed(err, done.length, "error", "marking published outbox events failed; they will be published again (JetStream drops the copies)");
        }
        failures++;
        firstFailure ??= "marking published events failed";
        return false;
      }
      published += done.length;
      duplicates += dup;
      return true;
    });
    return marking;
  };

  let markTimer: NodeJS.Timeout | undefined;
  /** Drops a scheduled mark (what it would have deleted is marked by the caller, or published again later). */
  const cancelMark = (): void => {
    clearTimeout(markTimer);
    markTimer = undefined;
  };
  const scheduleMark = (): void => {
    markTimer ??= setTimeout(() => {
      markTimer = undefined;
      void markAcked()
        .then(() => settleFlushers())
        .then(() => {
          // A failed mark is handled by the loop (backoff, then the events go out again).
          if (failures > 0) interrupt?.("ack");
        })
        .catch((err: unknown) => logger.error({ err }, "marking published outbox events failed"));
    }, markDelayMs);
  };

  // nats.js drops what is published while disconnected, so the relay waits for the reconnect instead
  // (but tries anyway after retryMaxMs, so a missed status event cannot stall it).
  let connected = !nc.isClosed();
  /** When the connection last dropped, while it is down: a relay cut off from NATS for retryMaxMs hands the relay over. */
  let disconnectedAt: number | undefined;
  const statuses = nc.status();
  void (async () => {
    for await (const status of statuses) {
      if (status.type === "disconnect") {
        connected = false;
        disconnectedAt ??= Date.now();
      } else if (status.type === "reconnect") {
        connected = true;
        disconnectedAt = undefined;
        wake();
      }
    }
  })().catch(() => undefined);
  /** Whether this process has not reached NATS for retryMaxMs or more: another process that does should relay. */
  const cutOff = (): boolean => !connected && disconnectedAt !== undefined && Date.now() - disconnectedAt >= retryMaxMs;
  /** Whether NATS answers a ping within leaderPollMs; if so, the connection counts as up again. */
  const answersPing = async (): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined;
    const answered = await Promise.race([
      nc.flush().then(() => true, () => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), leaderPollMs))),
    ]);
    clearTimeout(timer);
    if (answered) {
      connected = true;
      disconnectedAt = undefined;
    }
    return answered;
  };

  /** Set once the process is stopping (see standDown). */
  let standingDown = false;
  /** Whether the process began to stop: a failure from then on ends the relay (see giveUp), where it was retried. */
  const stopBegun = (): boolean => standingDown || stopping;
  /** Ends the relay for `why`, the first failure once the stop began: its events stay in the outbox, and flush says so. */
  const giveUp = (why: string): void => {
    gaveUp ??= why;
    stopping = true;
  };

  /** Set when this process's lease on the relay is gone: its active loop ends and the relay goes back to waiting for the lease. */
  let leaseLost = false;

  /**
   * The relay of one service runs in one process at a time: the one holding
   * the database's relay lock (Postgres; with SQLite, the one process). The
   * others ask again every leaderPollMs, and take over within about that
   * long once the holder's connection is gone (its process died); one that
   * gives the lock up (it stops, or NATS is out of its reach) says so on
   * handoverChannel, and a waiting process asks at once, so what was
   * committed meanwhile goes out at once.
   * Events are published in the order they are read (see `fromHead`) by
   * whichever process holds the lock; one that dies between publish and
   * delete leaves its last events to its successor, which publishes them
   * again within JetStream's duplicate window.
   */
  const run = async (): Promise<void> => {
    let waitingLogged = false;
    /** While this process waits for the lock (Postgres): its LISTEN for a holder giving the lock up. */
    let handoverHeard: (() => Promise<void>) | undefined;
    /** A holder said it gave the lock up since this process last asked. */
    let handedOver = false;
    /** While asking for the lock fails (the database away): since when, and how often, so an outage is logged once, not at every ask. */
    let lockFailing: { since: number; times: number } | undefined;
    while (!stopping) {
      // A process that cannot reach NATS does not take the relay: it could not publish, and would keep out one that can.
      // A ping that is answered says it reaches NATS again, should its status event have been missed.
      if (cutOff() && !(await answersPing())) {
        await wait(leaderPollMs, { wake: false, ack: false });
        continue;
      }
      // Published while this process relayed, their deletion failed (the database away, which ended the lock's session
      // too): deleted before asking, as another process that takes the relay first would publish them again, and after
      // an outage longer than JetStream's duplicate window they would be stored twice. A failure is retried at the next ask.
      if (acked.length > 0) await markAcked();
      let lease: SessionLock | undefined;
      handedOver = false;
      try {
        lease = await db.tryLock(relayLockKey);
        if (lockFailing) {
          logger.info({ failedForMs: Date.now() - lockFailing.since, attempts: lockFailing.times }, "asking for the outbox relay's lock works again");
          lockFailing = undefined;
        }
      } catch (err) {
        if (stopBegun()) {
          giveUp(`asking for the relay's lock failed: ${errorMessage(err)}`);
          break;
        }
        if (!lockFailing) logger.warn({ ...errorLogFields(err), retryInMs: leaderPollMs }, "asking for the outbox relay's lock failed; asking again until it works (logged again once it does)");
        lockFailing ??= { since: Date.now(), times: 0 };
        lockFailing.times++;
      }
      if (!lease) {
        if (!waitingLogged) logger.info({ pollMs: leaderPollMs }, "another process relays this outbox; this one takes over if it goes");
        waitingLogged = true;
        // A holder that gives the lock up says so (see handoverChannel): then this one asks at once, not at its next ask.
        handoverHeard ??= await db.listen(handoverChannel, () => {
          handedOver = true;
          currentWait?.();
        }).catch(() => undefined);
        await settleFlushers();
        if (!handedOver) await wait(leaderPollMs, { wake: false, ack: false });
        continue;
      }
      await handoverHeard?.();
      handoverHeard = undefined;
      // A process that is stopping too relays only until its stop: the line would tell of a successor that is not one.
      if (waitingLogged && !standingDown) logger.info("took over relaying this outbox");
      else if (waitingLogged) logger.debug("took the outbox relay's lock while stopping, to publish what is left until this process stops");
      waitingLogged = false;
      leaseLost = false;
      void lease.lost.then(() => {
        leaseLost = true;
        currentWait?.();
      });
      const unlisten = await db.listen(outboxChannel, wake).catch((err: unknown) => {
        logger.warn({ err }, "listening for other processes' commits failed; the sweep finds their events");
        return async () => {};
      });
      leading = true;
      // Whether the lock went before the relay ended, not through its own release below.
      let lostLease = false;
      try {
        await relay();
      } finally {
        lostLease = leaseLost;
        leading = false;
        await unlisten();
        await lease.release();
        // Given up, not lost (its session broke, the database most likely away): the processes waiting ask at once.
        if (!lostLease && fromHead) await db.query("SELECT pg_notify($1, '')", [handoverChannel]).catch(() => undefined);
      }
      // A connection closed under the relay (not by stop()) takes no publishes any more: the relay ends, its events stay.
      if (nc.isClosed()) break;
      if (stopBegun() && !stopping && (lostLease || cutOff())) giveUp(lostLease ? "the relay's lock is gone (its database connection broke)" : "NATS cannot be reached from this process");
      else if (lostLease && !stopping) logger.warn("the outbox relay's lock is gone (its database connection broke); waiting to take it again");
      else if (cutOff() && !stopping) {
        heldUpSince ??= disconnectedAt;
        // Only PostgreSQL is shared by several processes of a service: a SQLite file has this one alone.
        logger.warn(
          { disconnectedForMs: Date.now() - disconnectedAt! },
          fromHead
            ? "NATS cannot be reached from this process; the outbox relay is left to another process of this service that reaches it, if one runs, and taken again once NATS answers"
            : "NATS cannot be reached from this process; the outbox relay waits, its events kept in the outbox, and publishes them once NATS answers",
        );
      }
    }
    await handoverHeard?.();
  };

  /** Publishes the outbox while this process holds the relay's lock. */
  const relay = async (): Promise<void> => {
    cursor = 0;
    taken.clear();
    maybeMore = true;
    failures = 0;
    firstFailure = undefined;
    firstFailed = undefined;
    // Acknowledged before, their deletion failed (the database away): left out of reads, and deleted first (a
    // failure again counts, and is retried as the loop retries any).
    for (const row of acked) taken.add(row.seq);
    if (acked.length > 0) await markAcked();
    let retryMs = retryMinMs;
    // After a pass where something failed, ask JetStream whether it answers before sending again.
    let probe = false;
    while (!stopping && !leaseLost) {
      const until = Date.now() + retryMaxMs;
      while (!connected && !stopping && Date.now() < until) {
        woken = false;
        await wait(until - Date.now(), { wake: true, ack: false });
      }
      if (stopping) break;
      // Cut off from NATS (its other processes may not be): the lock goes, so that one of them relays meanwhile.
      if (cutOff()) break;
      if (nc.isClosed()) {
        logger.warn("the NATS connection is closed; the outbox relay stops and events stay in the outbox");
        break;
      }
      if (probe) {
        try {
          await nc.jetstreamManager({ timeout: publishTimeoutMs });
          probe = false;
        } catch (err) {
          if (stopBegun()) {
            giveUp(`JetStream could not be reached: ${errorMessage(err)}`);
            break;
          }
          logger.warn({ err, retryInMs: retryMs }, "the outbox relay cannot reach JetStream; retrying");
          await wait(retryMs, { wake: false, ack: false });
          retryMs = Math.min(retryMs * 2, retryMaxMs);
          continue;
        }
      }
      woken = false;
      if (leaseLost) break;
      if (toPark.length > 0) await parkRefused();
      // With nothing in flight every row left is unsent, save those acknowledged and not yet deleted (PubAcks come in
      // order, so they are the lowest), whether waiting for a mark or being deleted by one (its DELETE may wait behind
      // a transaction while the loop reads), and those waiting to be parked; starting over after them also finds a seq
      // used again (see outboxMigrations).
      if (window.inFlight === 0) {
        cursor = markingUpTo;
        for (const row of acked) cursor = Math.max(cursor, row.seq);
        for (const { row } of toPark) cursor = Math.max(cursor, row.seq);
        floored = markingUpTo > 0;
      }
      try {
        await sendMore();
      } catch (err) {
        if (stopBegun()) {
          giveUp(`the outbox could not be read: ${errorMessage(err)}`);
          break;
        }
        logger.warn({ err, retryInMs: retryMs }, "the outbox relay cannot read the database; retrying");
        failures++;
      }
      if (window.inFlight === 0 && failures === 0 && toPark.length === 0) {
        // Before it rests, the loop deletes what is acknowledged and waits for no scheduled mark: events whose
        // deletion failed (the database away) and that no later answer will take along, left out of its reads.
        if (flushers.length > 0 || (acked.length > 0 && markTimer === undefined)) await markAcked();
        if (failures === 0) {
          await settleFlushers();
          await wait(sweepIntervalMs, { wake: true, ack: false });
          maybeMore = true;
          continue;
        }
      }
      // Answers (or, while nothing failed, new commits) end the wait; the timeout check bounds it.
      if (window.inFlight > 0) await wait(Number.POSITIVE_INFINITY, { wake: failures === 0, ack: true });
      // Answers still coming: let those of the next read join this mark.
      if (window.inFlight > 0) await new Promise((r) => setImmediate(r));
      // Deleting what was acknowledged waits a little (markDelayMs) so one statement covers many events,
      // unless a full window is waiting, something failed, or a flush is asked for.
      const progressed = acked.length > 0 || toPark.length > 0;
      if (heldUpSince !== undefined && acked.length > 0 && failures === 0) resumed();
      if (failures > 0 || flushers.length > 0 || acked.length >= maxInFlight) await markAcked();
      else if (acked.length > 0) scheduleMark();
      if (toPark.length > 0) await parkRefused();
      await settleFlushers();
      if (failures > 0 && window.inFlight === 0) {
        // What was acknowledged meanwhile (answers that came while a refused event was parked) is deleted first, so
        // that the next pass starts again from the oldest event left, the failed ones included.
        await markAcked();
        if (stopBegun()) {
          giveUp(`publishing failed: ${firstFailure ?? "unknown"}`);
          break;
        }
        // The reason is the first failure's, and so are the event and span named with it (set by callbacks the compiler does not follow here).
        logger.warn({ failed: failures, reason: firstFailure, ...(firstFailed ?? {}), retryInMs: retryMs }, "publishing outbox events failed; they stay in the outbox and are retried (logged at info once they are published again)");
        heldUpSince ??= Date.now();
        oneByOne = batchStreams.length > 0 ? maxInFlight : 0;
        failures = 0;
        firstFailure = undefined;
        firstFailed = undefined;
        maybeMore = true;
        probe = true;
        await wait(retryMs, { wake: false, ack: false });
        retryMs = Math.min(retryMs * 2, retryMaxMs);
      } else if (progressed && failures === 0) retryMs = retryMinMs;
    }
    // Stopping: the events in flight get their answers or time out; what was acknowledged is marked.
    while (window.inFlight > 0 && !nc.isClosed()) await wait(Number.POSITIVE_INFINITY, { wake: false, ack: true, stop: false });
    cancelMark();
    await markAcked();
    if (toPark.length > 0) await parkRefused();
  };

  let stopped: Promise<void> | undefined;
  const rejectFlushers = (): void => {
    const waiting = flushers;
    flushers = [];
    for (const f of waiting) f.reject(gaveUp !== undefined ? new OutboxRelayGaveUp(gaveUp) : new Error("the outbox relay stopped before the events were published"));
  };
  // A commit in this process wakes this relay; other processes' commits notify it while it leads.
  let leading = false;
  const unsubscribe = onOutboxCommit(db, () => {
    wake();
    return leading;
  });
  const done = run()
    .catch((err) => logger.error({ err }, "the outbox relay stopped unexpectedly"))
    .finally(() => {
      stopping = true;
      window.close();
      cancelMark();
      rejectFlushers();
    });

  return {
    async flush(onRead) {
      // Ended at a failure as the process stops: the outbox is not read again, which the failure may hold up as long.
      if (gaveUp !== undefined) throw new OutboxRelayGaveUp(gaveUp);
      if (stopping) throw new Error("the outbox relay is stopped");
      let upTo: number | undefined;
      try {
        upTo = await store.lastSeq();
      } catch (err) {
        throw new OutboxUnread(err);
      }
      if (upTo === undefined) return;
      onRead?.();
      if (gaveUp !== undefined) throw new OutboxRelayGaveUp(gaveUp);
      if (stopping) throw new Error("the outbox relay is stopped");
      await new Promise<void>((resolve, reject) => {
        flushers.push({ upTo, resolve, reject });
        wake();
      });
    },
    stop() {
      stopped ??= (async () => {
        stopping = true;
        unsubscribe();
        stopStatusIterator(statuses);
        stopWaiting?.();
        // A database that hangs holds the relay's statement under way until its connection is dropped (35 s, past the
        // statement timeout): the stop waits for the PubAcks in flight and a mark, not for that. What the relay
        // leaves stays in the outbox, and the process's stop closes the database under it.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([done, new Promise<void>((resolve) => (timer = setTimeout(resolve, publishTimeoutMs + stopMarkMs)))]);
        clearTimeout(timer);
      })();
      return stopped;
    },
    stats() {
      return { published, duplicates, parked };
    },
    relaying: () => leading,
    standDown() {
      standingDown = true;
    },
  };
}

/** A flush could not read the outbox (the database away): whether it holds events is not known. */
export class OutboxUnread extends Error {
  override readonly name: string = "OutboxUnread";
  constructor(cause: unknown) {
    super(`the outbox could not be read: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/**
 * The relay met a failure once its process began to stop (the database or NATS away) and did not try again: events
 * committed and not yet published, if any, stay in the outbox for the next start or another instance. `reason` says
 * what failed.
 */
export class OutboxRelayGaveUp extends Error {
  override readonly name: string = "OutboxRelayGaveUp";
  constructor(readonly reason: string) {
    super(`the outbox relay stopped at a failure as the process stops: ${reason}`);
  }
}

/** An error's message, for a line that needs no stack. */
function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
