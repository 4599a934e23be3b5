import type { JetStreamClient, JsMsg, NatsConnection } from "nats";
import type { MessageChecker } from "../contracts/index.js";
import { messageWithCauses } from "../errors/index.js";
import { LineWindow, type Logger } from "../log/index.js";
import { checkOptions, nonNegativeInteger, positiveInteger } from "../options/index.js";
import { type Database, isDatabaseRefusingWrites, isDatabaseTakingNoWrites, isLockTimeout, limitLockWaits } from "../sql/index.js";
import { batchLocker, type BatchLocker } from "./batch-locks.js";
import { deadLetterPrefix, deadLetterStreamSpec, fileDeadLetter, reasonOf } from "./dead-letter.js";
import { BatchConflictError, SavepointNeededError, type Delivery, type DeliveryHandler, type DeliveryMiddleware, type Settlement } from "./delivery.js";
import type { ConsumerBinding } from "./event-handler.js";
import { receivedHeaders } from "./nats-internals.js";
import { countAttempt, countFailure, createBatchClaims, createInbox, eventIdOf, eventIdProblem, noteDeadLetter, uncountAttempt, type BatchClaims } from "./inbox.js";
import { createOutbox, type Outbox } from "./outbox.js";
import { consumerPipeline } from "./pipeline.js";
import { createPullIntake, defaultMaxHeldBytes, maxMessageBytesOf, type PullIntake } from "./pull-intake.js";
import { ensureConsumers, ensureStreams, validateConsumerSpec, validateStreamSpec } from "./provision.js";
import { validateSource } from "./publisher.js";
import { backoffDelay } from "./retry.js";
import type { StreamSpec } from "./types.js";
import { DeadLetterLines, deadLetterLinesPerWindow, deadLetterWindowMs } from "./dead-letter-lines.js";
import { deliveryLogFields } from "./delivery-log.js";

export interface StartConsumersOptions {
  readonly nc: NatsConnection;
  /** The service's database, opened with the inbox and outbox migrations. */
  readonly db: Database;
  /** The consuming service: `ce-source` of the events its handlers emit. */
  readonly service: string;
  /** One binding per durable consumer (`any`: each has its own event type); see `bindConsumers`. */
  readonly consumers: readonly ConsumerBinding<any>[];
  readonly logger: Logger;
  /** Where events go that consumers give up on. Default `deadLetterStreamSpec` (CONCORD_DLQ). */
  readonly dlqStream?: StreamSpec;
  /** Outbox for events handlers emit. Default: one on `db` with `service` as source. */
  readonly outbox?: Outbox;
  /** Most events of one consumer handled in one batch (one transaction); twice as many are pulled ahead, each kept alive with progress acks. Default 64. */
  readonly pullBatch?: number;
  /**
   * Most bytes of events one consumer holds: pulled and not yet settled (the batch being handled among them), plus
   * what its pull requests under way may still bring (their max_bytes), counted as nats-server counts them (subject,
   * reply, headers and data). Pulls wait while less than the server's max_payload (and 8 KiB) is free; one event
   * always comes, however large. Default 8 MiB; twice the server's max_payload (and 8 KiB) when that is more.
   */
  readonly maxHeldBytes?: number;
  /** How long to wait before pulling again when pulling failed. Default 1 s. */
  readonly reopenDelayMs?: number;
  /** The contracts' rules: an event that breaks them goes to the dead letter stream at once. */
  readonly checker?: MessageChecker;
  /** The service's own pipeline steps (metrics, tracing), outermost first, around the default chain (see pipeline.ts). */
  readonly middleware?: readonly DeliveryMiddleware[];
  /**
   * The `ce-source` of each stream's events (gen/ts/concord_nats.ts
   * `streamSources`): an event from anyone else is dead-lettered. Every
   * consumed stream must be named. Not checked when not set.
   */
  readonly streamSources?: Readonly<Record<string, string>>;
  /** The database was made at this start: consumers that acknowledged events already are warned of (see ensureConsumers). */
  readonly newDatabase?: boolean;
}

/** The running consumers of a service. */
export interface RunningConsumers {
  /** Stops pulling, lets the batch in flight finish and settle, nak's what was pulled ahead, then resolves. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Provisions the dead letter stream and the durable consumers, then consumes
 * each one: it pulls (pull-intake.ts), hands what arrived together to the
 * pipeline (pipeline.ts) in one transaction, and settles each event once it
 * has committed: ack, a nak with the retry's delay, or the dead letter filed
 * and then the ack. Messages of one consumer are handled one at a time, in
 * stream order; every message pulled gets progress acks while it waits or is
 * handled, so only a process that is gone has its messages redelivered after
 * ack_wait. The source streams must exist (ensureStreams).
 */
export async function startConsumers(options: StartConsumersOptions): Promise<RunningConsumers> {
  const factory = "startConsumers";
  checkOptions(factory, options, ["nc", "db", "service", "consumers", "logger", "dlqStream", "outbox", "pullBatch", "maxHeldBytes", "reopenDelayMs", "checker", "middleware", "streamSources", "newDatabase"]);
  const { nc, db, service, consumers, streamSources } = options;
  const dlqStream = options.dlqStream ?? deadLetterStreamSpec;
  const pullBatch = positiveInteger(factory, "pullBatch", options.pullBatch, 64);
  const maxHeldBytes = positiveInteger(factory, "maxHeldBytes", options.maxHeldBytes, defaultMaxHeldBytes);
  const reopenDelayMs = nonNegativeInteger(factory, "reopenDelayMs", options.reopenDelayMs, 1_000);
  validateSource(factory, service);
  validateStreamSpec(dlqStream);
  deadLetterPrefix(dlqStream);
  const durables = new Map<string, string>();
  for (const { spec, descriptor } of consumers) {
    validateConsumerSpec(spec);
    const bound = durables.get(spec.durable);
    if (bound === spec.stream) throw new Error(`${factory}: consumer ${spec.durable} on stream ${spec.stream} is bound twice`);
    // The inbox keeps processed events by consumer name: an event on one stream would pass for the other's event with its id.
    if (bound !== undefined) throw new Error(`${factory}: consumer ${spec.durable} is bound on streams ${bound} and ${spec.stream}; the inbox tells consumers apart by name, so each needs a name of its own`);
    durables.set(spec.durable, spec.stream);
    if (descriptor.typeName !== spec.eventType) throw new Error(`${factory}: consumer ${spec.durable} takes ${spec.eventType} but was bound to the descriptor of ${descriptor.typeName}`);
    if (descriptor.stream !== spec.stream) throw new Error(`${factory}: consumer ${spec.durable} reads stream ${spec.stream} but ${descriptor.typeName} is published to ${descriptor.stream}`);
    if (streamSources && typeof streamSources[spec.stream] !== "string") throw new Error(`${factory}: streamSources names no source for stream ${spec.stream} (consumer ${spec.durable})`);
  }
  const logger = options.logger.child({ component: "event-consumer" });
  const outbox = options.outbox ?? createOutbox({ db, source: service, ...(options.checker && { checker: options.checker }) });

  const awayLines = databaseAwayLines(logger);

  const jsm = await nc.jetstreamManager();
  // With stream owners known (NATS permissions in force), no service changes the shared dead letter stream: a
  // service's user could otherwise shorten its retention, which is deleting dead letters by another name.
  await ensureStreams(jsm, [dlqStream], { logger, ...(streamSources && { foreign: [dlqStream.name] }) });
  await ensureConsumers(jsm, consumers.map((c) => c.spec), { logger, ...(options.newDatabase && { newDatabase: true }) });
  const js = nc.jetstream();

  const consume = async (binding: ConsumerBinding<unknown>, intake: PullIntake): Promise<void> => {
    const { spec } = binding;
    const log = logger.child({ consumer: spec.durable, stream: spec.stream });
    const pipelineOptions = { binding, outbox, checker: options.checker, logger: log, middleware: options.middleware, expectedSource: streamSources?.[spec.stream] };
    const claims = createBatchClaims(createInbox());
    const pipeline = consumerPipeline({ ...pipelineOptions, savepoints: "none", batchClaims: claims });
    const failed = new Map<number, unknown>();
    const careful = consumerPipeline({ ...pipelineOptions, savepoints: "each", failed });
    const lockBatch = batchLocker(binding, db, options.checker, streamSources?.[spec.stream]);
    const step: BatchStep = {
      pipeline,
      claims,
      ...(lockBatch && { lockBatch }),
      careful,
      failed,
      consumer: spec.durable,
      maxDeliver: spec.maxDeliver,
      backoffMs: spec.backoffMs,
      db,
      intake,
      js,
      dlqStream,
      budgetMs: spec.ackWaitMs / 8,
      stopping: stopping.signal,
      logger: log,
      deadLetterLines: new DeadLetterLines(log, spec.durable),
      lockTimedOutAt: -Infinity,
      lockWaitLines: lockWaitLines(log),
      databaseAwayLines: awayLines,
    };
    for (let batch = await intake.take(pullBatch); batch; batch = await intake.take(pullBatch)) {
      try {
        await handleBatch(batch, step);
      } catch (err) {
        // Settling failed (the connection closed under it): what is left unsettled comes again after ack_wait.
        if (!nc.isClosed()) log.error({ err, events: batch.length }, "handling a batch of events failed; they will be redelivered");
        for (const msg of batch) intake.forget(msg);
      }
    }
    step.deadLetterLines.flush();
    step.lockWaitLines.flush();
  };

  const maxMessageBytes = maxMessageBytesOf(nc);
  const intakes = consumers.map(({ spec }) =>
    createPullIntake({
      nc,
      js,
      stream: spec.stream,
      durable: spec.durable,
      limit: 2 * pullBatch,
      maxBytes: maxHeldBytes,
      maxMessageBytes,
      ackWaitMs: spec.ackWaitMs,
      reopenDelayMs,
      logger: logger.child({ consumer: spec.durable, stream: spec.stream }),
    }),
  );
  const stopping = new AbortController();
  const running = consumers.map((binding, i) => consume(binding, intakes[i]));
  logger.info({ consumers: consumers.map((c) => c.spec.durable) }, "consuming events");
  let stopped: Promise<void> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        stopping.abort(new Error("the consumers are stopping"));
        await Promise.all(intakes.map((intake) => intake.close()));
        await Promise.all(running);
        awayLines.window.flush();
      })();
      return stopped;
    },
  };
}

/** Filled by receivedHeaders with the headers a message repeats, every value of each; emptied for each message. */
const repeats = new Map<string, string[]>();

function deliveryOf(msg: JsMsg, consumer: string): Delivery {
  const headers = receivedHeaders(msg, repeats);
  const repeatedHeaders = repeats.size > 0 ? Object.fromEntries(repeats) : undefined;
  repeats.clear();
  return {
    consumer,
    stream: msg.info.stream,
    subject: msg.subject,
    streamSequence: msg.info.streamSequence,
    deliveryCount: msg.info.redeliveryCount,
    headers,
    ...(repeatedHeaders && { repeatedHeaders }),
    data: msg.data,
    storedAt: new Date(Math.floor(msg.info.timestampNanos / 1e6)),
  };
}

/** The ce-ids of deliveries[from..end); a delivery without a usable one is left to the inbox step to refuse, not read with the others. */
function eventIdsOf(deliveries: readonly Delivery[], from: number, end: number): string[] {
  const ids: string[] = [];
  for (let i = from; i < end; i++) {
    const id = eventIdOf(deliveries[i]);
    if (id !== undefined && eventIdProblem(id) === undefined) ids.push(id);
  }
  return ids;
}

interface BatchStep {
  /** Events without savepoints: a failure voids the transaction (SavepointNeededError), which then runs with `careful`. */
  readonly pipeline: DeliveryHandler;
  /** `pipeline`'s inbox claims: begun with the ids of the events left in the batch at the start of each of its transactions. */
  readonly claims: BatchClaims;
  /** Each event in a savepoint of its own; one in `failed` fails again with its error, without running. */
  readonly careful: DeliveryHandler;
  /**
   * The binding's `lockBatch`, run at the start of each transaction of two events or more (PostgreSQL), its lock
   * waits at most twice `budgetMs`; when that is not enough, the transaction runs again without it.
   */
  readonly lockBatch?: BatchLocker;
  readonly failed: Map<number, unknown>;
  readonly consumer: string;
  /** The spec's: deliveries before a failed attempt is final. */
  readonly maxDeliver: number;
  readonly backoffMs: readonly number[];
  readonly db: Database;
  readonly intake: PullIntake;
  readonly js: JetStreamClient;
  readonly dlqStream: StreamSpec;
  /** How long one transaction's handlers may run before it commits and lets the event loop go. */
  readonly budgetMs: number;
  /** Aborted when the consumers are asked to stop: a transaction waiting for a connection gives up. */
  readonly stopping: AbortSignal;
  readonly logger: Logger;
  /** The consumer's dead letters' lines, at most a dozen every ten seconds. */
  readonly deadLetterLines: DeadLetterLines;
  /** The lines of the events that waited too long for a lock, at most a dozen every ten seconds (see lockWaitLines). */
  readonly lockWaitLines: LineWindow;
  /** The lines of batches held while the database is away, shared by the service's consumers (see databaseAwayLines). */
  readonly databaseAwayLines: DatabaseAwayLines;
  /** When a lock wait of this consumer's last timed out (performance.now()), -Infinity before one did: see firstLockWait. */
  lockTimedOutAt: number;
}

/** The pause before a batch whose transaction failed is tried again: doubling from 250 ms after each failure in a row, at most 5 s. */
function transactionRetryDelay(failuresInARow: number): number {
  return Math.min(250 * 2 ** (failuresInARow - 1), 5_000);
}

/**
 * Handles the messages that arrived together in as few database transactions
 * as their handlers' time allows (group commit), in stream order. Events run
 * without savepoints first, the inbox read once for them when the transaction
 * starts and their rows written together before it commits (BatchClaims);
 * when one fails, its transaction is rolled back
 * and run again with each event in its own savepoint, so a failing handler
 * rolls back only itself. A redelivery runs alone, in a transaction after
 * the one that counts its attempt.
 * Once handlers have taken `budgetMs`, the transaction commits, its messages
 * are settled, the rest get progress acks, and the event loop is let go
 * before the next transaction, so no message outlives its ack_wait while its
 * neighbours are handled. Acks and naks are sent right after each commit,
 * in the same tick, so nats.js writes a transaction's together; dead
 * letters are filed after that. The events the handlers emitted go out with
 * the outbox relay, which the commit wakes: a few microtasks apart, so at
 * low rates they take a write of their own (two writes an event, seen with
 * strace at 200 orders/s).
 */
async function handleBatch(batch: readonly JsMsg[], step: BatchStep): Promise<void> {
  const { intake, logger } = step;
  const filing: Promise<void>[] = [];
  const deliveries: Delivery[] = batch.map((msg) => deliveryOf(msg, step.consumer));
  let failuresInARow = 0;
  /** Stopping: what is left of the batch goes back to the server for the next consumer. */
  const giveBack = (from: number) => {
    for (let i = from; i < batch.length; i++) intake.settle(batch[i], { kind: "retry", delayMs: 0 });
  };
  // After a transaction failed with the database answering: one event a transaction, until it is clear whose fails.
  let oneByOne = false;
  for (let from = 0; from < batch.length; ) {
    if (from > 0) {
      intake.keepAlive();
      await new Promise((resolve) => setImmediate(resolve));
    }
    // A redelivery runs alone, its attempt counted first in a transaction of its own: an event that takes
    // its process down with it is counted each time, and ends in the dead letter stream (unfinishedAttempts).
    const alone = oneByOne || deliveries[from].deliveryCount > 1;
    try {
      if (awaitsCount(deliveries[from])) {
        // Asked to stop: handed back uncounted.
        if (step.stopping.aborted) {
          giveBack(from);
          break;
        }
        deliveries[from] = await counted(deliveries[from], step);
      }
      // A counted attempt is made even when the consumers are asked to stop meanwhile (the batch in flight finishes).
      const signal = deliveries[from].attempt === undefined ? step.stopping : undefined;
      from = await handleChunk(batch, deliveries, from, alone ? 1 : firstDeliveries(deliveries, from), step, filing, signal);
      failuresInARow = 0;
    } catch (err) {
      // Stopping: what was not tried goes back; an attempt counted ahead is decided as any other.
      if (step.stopping.aborted && deliveries[from].attempt === undefined) {
        giveBack(from);
        break;
      }
      // A lock another session held past firstEventLockWaitMs: no attempt of the event's (one counted ahead is taken
      // back). It comes back after the backoff's first pause; the events after it go on meanwhile.
      if (isLockTimeout(err)) {
        step.lockTimedOutAt = performance.now();
        if (deliveries[from].attempt !== undefined) deliveries[from] = await uncounted(deliveries[from], step);
        const retryInMs = backoffDelay(step.backoffMs, 1);
        if (step.lockWaitLines.admit()) logger.warn({ err, streamSequence: deliveries[from].streamSequence, retryInMs }, "the event waited too long for a lock another session holds; it comes back, no attempt spent");
        intake.settle(batch[from], { kind: "retry", delayMs: retryInMs });
        from++;
        continue;
      }
      // An error that says something could not be reached is held only if the database does not answer either: it may
      // be a handler's (a service it called). One that says the database takes no writes is held without asking it.
      if (!isDatabaseTakingNoWrites(err) && (await answers(step.db))) {
        // The database is there, so something in the batch keeps the transaction from committing (a deferred
        // constraint, a value the database refuses, a pipeline step that failed, a handler that met something
        // else unavailable) or it lost a conflict: the rest of the batch runs one event a transaction, and an
        // event whose own transaction fails has had a failed attempt (retried, then dead-lettered).
        if (awaitsCount(deliveries[from])) {
          // A redelivery whose attempt could not be counted did not run: back after the backoff's first pause, nothing spent.
          const retryInMs = backoffDelay(step.backoffMs, 1);
          logger.warn({ err, streamSequence: deliveries[from].streamSequence, retryInMs }, "counting an attempt at a redelivered event failed; it did not run, and comes back");
          intake.settle(batch[from], { kind: "retry", delayMs: retryInMs });
          from++;
        } else if (alone) {
          const decided = await failedAttempt(batch[from], deliveries[from], err, step, filing);
          if (decided) deliveries[from] = decided;
          else from++;
        } else {
          logger.warn({ err, events: batch.length - from }, "committing a batch of events failed while the database answers; its events run one to a transaction");
          oneByOne = true;
        }
        continue;
      }
      // The database is away or takes no writes for now: nothing of the transaction is recorded, and the rest
      // of the batch would meet the same. The events stay here, kept alive by progress acks, and are tried again after a pause: a
      // redelivery would spend one of their deliveries on what is not their fault. A consumer that stops
      // meanwhile gives them back to the server. An attempt counted ahead was not made: it is taken back.
      if (deliveries[from].attempt !== undefined) deliveries[from] = await uncounted(deliveries[from], step);
      const retryInMs = transactionRetryDelay(++failuresInARow);
      const away = step.databaseAwayLines;
      if (away.window.admit()) {
        // The database away or refusing writes is no fault of the code: its stack would only point into the driver.
        const why = isDatabaseRefusingWrites(err) ? { error: messageWithCauses(err) } : { err };
        logger.error({ ...why, events: batch.length - from, attempt: failuresInARow, retryInMs }, "committing a batch of events failed and the database is away or takes no writes; trying it again");
      } else away.hold(step.consumer, batch, retryInMs);
      if (await stoppedWithin(step.stopping, retryInMs)) {
        giveBack(from);
        break;
      }
    }
  }
  if (filing.length > 0) await Promise.all(filing);
}

/**
 * The lines of a consumer's events that waited too long for a lock: one each
 * for the first ten in ten seconds, the rest counted in one line when the
 * window ends, as dead letters are. While a row stays held, each event that
 * needs it comes back after the backoff's first pause and meets it again:
 * 20 such events wrote 101 lines in 12 s.
 */
function lockWaitLines(logger: Logger): LineWindow {
  return new LineWindow(deadLetterLinesPerWindow, deadLetterWindowMs, (held) =>
    logger.warn(
      { events: held },
      `${held} more events waited too long for a lock another session holds, past the ${deadLetterLinesPerWindow} logged one by one in ${deadLetterWindowMs / 1000} s; they come back, no attempt spent`,
    ),
  );
}

/** Batches held while the database is away, of all of a service's consumers, logged one line each in a window, before the rest are told together. */
const databaseAwayLinesPerWindow = 5;
const databaseAwayWindowMs = 10_000;

interface DatabaseAwayLines {
  readonly window: LineWindow;
  /** Notes a failed attempt the window did not admit: its consumer, its batch and the pause before it is tried again. */
  hold(consumer: string, batch: object, pauseMs: number): void;
}

/**
 * The lines of batches a service's consumers hold while the database is
 * away or takes no writes: the first five failed attempts in ten seconds,
 * the rest counted in one line when the window ends, with how many batches
 * they were of, their consumers and the longest pause before a batch is
 * tried again. Each consumer with a batch in flight tries it again after
 * 250 ms, 500 ms, 1 s, 2 s and so on, so a batch held for long fails
 * several times in a window: the line counts attempts, not batches, and a
 * PostgreSQL restart under load wrote about 35 such lines, each with its
 * stack.
 */
function databaseAwayLines(logger: Logger): DatabaseAwayLines {
  const consumers = new Set<string>();
  const batches = new Set<object>();
  let longestPauseMs = 0;
  const window = new LineWindow(databaseAwayLinesPerWindow, databaseAwayWindowMs, (held) => {
    const attempts = held === 1 ? "attempt" : "attempts";
    const ofBatches = batches.size === 1 ? "1 batch" : `${batches.size} batches`;
    logger.error(
      { attempts: held, batches: batches.size, consumers: [...consumers], longestPauseMs },
      `${held} more ${attempts} to commit ${ofBatches} of events failed while the database is away or takes no writes (consumers ${[...consumers].join(", ")}), ` +
        `past the ${databaseAwayLinesPerWindow} logged one by one in ${databaseAwayWindowMs / 1000} s; each is tried again after a pause of at most ${longestPauseMs / 1000} s`,
    );
    consumers.clear();
    batches.clear();
    longestPauseMs = 0;
  });
  return {
    window,
    hold(consumer, batch, pauseMs) {
      consumers.add(consumer);
      batches.add(batch);
      longestPauseMs = Math.max(longestPauseMs, pauseMs);
    },
  };
}

/** A redelivery whose attempt is not counted yet (see `counted`): it does not run until it is. */
function awaitsCount(delivery: Delivery): boolean {
  return delivery.deliveryCount > 1 && delivery.attempt === undefined;
}

/** How many deliveries from `from` on are first deliveries, one at least. */
function firstDeliveries(deliveries: readonly Delivery[], from: number): number {
  let end = from + 1;
  while (end < deliveries.length && deliveries[end].deliveryCount <= 1) end++;
  return end - from;
}

/** The delivery with its attempt counted (committed) before it runs. */
async function counted(delivery: Delivery, step: BatchStep): Promise<Delivery> {
  const { attempt, deadLetterReason } = await step.db.transaction((tx) => countAttempt(tx, delivery), { signal: step.stopping, finishOnceStarted: true });
  return { ...delivery, attempt, ...(deadLetterReason !== undefined && { deadLetterReason }) };
}

/** Deliveries whose attempt could not be taken back, said once: each later try while the database stays away is not. */
const toldStillCounted = new WeakSet<Delivery>();

/**
 * The delivery with the attempt counted ahead taken back, as it was not made
 * (the database away or taking no writes); as it is when that fails too, so
 * that it is not counted again here (a process stopping then hands it back
 * counted: at most one attempt for each time the database took the count
 * and refused both the work and taking it back). Its next failure tries
 * again; a failure is logged once a delivery, without a stack when the
 * database is away or takes no writes, which is expected operation.
 */
async function uncounted(delivery: Delivery, step: BatchStep): Promise<Delivery> {
  try {
    await step.db.transaction((tx) => uncountAttempt(tx, delivery, delivery.attempt!));
  } catch (err) {
    if (!toldStillCounted.has(delivery)) {
      toldStillCounted.add(delivery);
      const why = isDatabaseRefusingWrites(err) ? { error: messageWithCauses(err) } : { err };
      step.logger.warn(
        { ...why, streamSequence: delivery.streamSequence, attempt: delivery.attempt },
        "taking back an attempt counted ahead failed; it stays counted (taking it back is tried again if the event's next try fails too)",
      );
    }
    return delivery;
  }
  const { attempt: _attempt, deadLetterReason: _reason, ...rest } = delivery;
  return rest;
}

/** Whether the database answers a trivial query. */
async function answers(db: Database): Promise<boolean> {
  try {
    await db.ping();
    return true;
  } catch {
    return false;
  }
}

/**
 * An event whose transaction failed on its own, the database answering:
 * its failure counted in a transaction of its own, retried with the spec's
 * backoff, dead-lettered at its last attempt. When even the count cannot be
 * written, nothing is decided: the event is tried again after the backoff's
 * first pause (its delivery count is no measure of its attempts).
 *
 * A dead letter, once its reason is recorded, is settled by the pipeline:
 * resolves with the delivery carrying the reason, to be run again, which
 * files it without running its handler (unfinishedAttempts), so that the
 * service's steps see it as any other (metrics, tracing). One that fails
 * that way too, or whose reason cannot be recorded, is filed here.
 */
async function failedAttempt(msg: JsMsg, delivery: Delivery, err: unknown, step: BatchStep, filing: Promise<void>[]): Promise<Delivery | undefined> {
  // Decided already, and its transaction failed even so: filed here.
  if (delivery.deadLetterReason !== undefined) {
    filing.push(fileThenAck(msg, delivery, { kind: "deadLetter", reason: delivery.deadLetterReason }, step));
    return undefined;
  }
  const attempt = delivery.attempt ?? (step.maxDeliver <= 1 ? 1 : await step.db.transaction((tx) => countFailure(tx, delivery)).catch(() => undefined));
  if (attempt !== undefined && attempt >= step.maxDeliver) {
    const reason = `its transaction failed: ${reasonOf(err)}`;
    // Kept for a filing that does not complete (see noteDeadLetter); when even that fails, the event is tried again then.
    const noted = await step.db.transaction((tx) => noteDeadLetter(tx, delivery, reason)).then(() => true, () => false);
    if (noted) return { ...delivery, deadLetterReason: reason };
    filing.push(fileThenAck(msg, delivery, { kind: "deadLetter", reason }, step));
    return undefined;
  }
  const retryInMs = backoffDelay(step.backoffMs, attempt ?? 1);
  step.logger.warn({ err, streamSequence: delivery.streamSequence, attempt, deliveryCount: delivery.deliveryCount, maxDeliver: step.maxDeliver, retryInMs, ...deliveryLogFields(delivery) }, "the event's transaction failed; retrying");
  step.intake.settle(msg, { kind: "retry", delayMs: retryInMs });
  return undefined;
}

/** Resolves after `ms` with false, or with true as soon as `stopping` is aborted. */
function stoppedWithin(stopping: AbortSignal, ms: number): Promise<boolean> {
  if (stopping.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const stopped = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      stopping.removeEventListener("abort", stopped);
      resolve(false);
    }, ms);
    stopping.addEventListener("abort", stopped, { once: true });
  });
}

/**
 * How long an event after a transaction's first may wait for a lock before
 * it is left to the next transaction. Short: the other instance's batch
 * commits in a few milliseconds when the two do not wait on each other in a
 * circle, and when they do, this wait is what the circle costs (then the
 * whole batch runs again). A consumer whose binding has `lockBatch` takes
 * its batch's locks in one order first, so its batches form no circle over
 * what that foresees; this wait bounds the rest. With two instances of each service on
 * PostgreSQL, 5 ms rather than 50 took the saga's closed loop from 163 and
 * 168 to 236 and 254 orders/s, and its p99 at 100/s from 42 and 37 to 30
 * and 25 ms, in alternating runs of `bench/run.ts --only postgres`.
 */
const batchLockWaitMs = 5;

/**
 * How long a transaction's first event may wait for a lock (Postgres), at
 * most half the statement timeout (30 s by default), so that a row or lock another
 * session holds for long (an open transaction, a migration, CREATE INDEX)
 * fails the wait as a lock timeout, which is no attempt of the event's: it
 * comes back after the backoff's first pause, the events behind it handled
 * meanwhile, instead of spending its attempts and ending as a dead letter
 * (an order left PENDING, or a cancelled order's stock never given back).
 */
const firstEventLockWaitMs = 10_000;

/**
 * How long a transaction's first event may wait for a lock while the
 * consumer finds one held for long: from a lock wait of its that timed out
 * until as long after the last one as firstEventLockWaitMs. Without it each
 * event that needs the held row waited the full first wait in turn, and
 * the events behind it with it: of four orders for a product whose row an
 * open transaction held, placed ahead of three for another product, the
 * other's were still PENDING 25 s later. Now one event waits that long,
 * the next ones that need the row give up at once and come back after the
 * backoff's first pause (no attempt spent), and the rest go on: the other
 * product's orders were confirmed 10.8 s after they were placed. Longer
 * than another instance's batch holds a row at this machine's rates (a few
 * milliseconds), so that two instances' batches still take turns; an event
 * that meets a batch holding one longer comes back too, a pause, not an
 * attempt.
 */
const heldLockWaitMs = 100;

/** The first event's lock wait: heldLockWaitMs while a lock is found held (see there), else firstLockWaitOn. */
function firstLockWait(step: BatchStep): number {
  const usual = firstLockWaitOn(step.db);
  return performance.now() - step.lockTimedOutAt < usual ? Math.min(heldLockWaitMs, usual) : usual;
}

/** The first event's lock wait on `db`: firstEventLockWaitMs, or half the statement timeout when that is shorter. */
function firstLockWaitOn(db: Database): number {
  const timeout = db.statementTimeoutMs;
  return timeout === undefined || timeout === 0 ? firstEventLockWaitMs : Math.max(1, Math.min(firstEventLockWaitMs, Math.floor(timeout / 2)));
}

/** Handles batch[from..], at most `max` events, in one transaction until the budget is spent; settles them; returns where it stopped. Rejects, nothing settled, when the transaction fails. */
async function handleChunk(
  batch: readonly JsMsg[],
  deliveries: readonly Delivery[],
  from: number,
  max: number,
  step: BatchStep,
  filing: Promise<void>[],
  signal: AbortSignal | undefined,
): Promise<number> {
  const { consumer, db, intake, logger } = step;
  const started = performance.now();
  const settlements: Array<{ readonly delivery: Delivery; readonly settlement: Settlement }> = [];
  let end = from;
  let lockingAhead = step.lockBatch !== undefined;
  const firstWait = firstLockWait(step);
  // Run again from the start when the transaction lost a write conflict (the database retries it).
  const run = (pipeline: DeliveryHandler) =>
    db.transaction(async (tx) => {
      end = from;
      settlements.length = 0;
      // One event left claims itself (one statement either way); two or more share one read and one write.
      const last = Math.min(batch.length, from + max);
      await limitLockWaits(tx, firstWait);
      if (pipeline === step.pipeline) await step.claims.begin(tx, consumer, last - from > 1 ? eventIdsOf(deliveries, from, last) : []);
      // Everything the events will lock, locked first in one global order: two instances' transactions then take
      // turns instead of waiting on each other in a circle until batchLockWaitMs ends it and work is redone.
      if (lockingAhead && last - from > 1) {
        await limitLockWaits(tx, Math.min(firstWait, Math.max(1, Math.round(2 * step.budgetMs))));
        try {
          await step.lockBatch!(deliveries.slice(from, last), tx);
        } catch (err) {
          throw isLockTimeout(err) ? new LocksAheadTimedOut(err) : err;
        }
        await limitLockWaits(tx, firstWait);
      }
      let limited = false;
      while (end < batch.length && end - from < max) {
        // The first event may wait for locks as long as it takes; later ones, holding the earlier ones'
        // locks meanwhile, only briefly: one that would wait longer is left to the next transaction, so
        // two instances' batches never wait for each other in a circle.
        if (end > from && !limited) {
          await limitLockWaits(tx, batchLockWaitMs);
          limited = true;
        }
        const delivery = deliveries[end];
        let settlement: Settlement;
        try {
          settlement = await pipeline(delivery, tx);
        } catch (err) {
          if (err instanceof SavepointNeededError) throw err;
          if (err instanceof BatchConflictError) {
            if (end > from && isLockTimeout(err.cause)) break;
            throw err.cause;
          }
          // Only a failure of a pipeline step (a service's middleware) gets here, maybe after the handler's
          // writes: the transaction fails, so none of them stays, and the event is then tried on its own.
          logger.error({ err, streamSequence: delivery.streamSequence, attempt: delivery.deliveryCount, ...deliveryLogFields(delivery) }, "the consumer pipeline failed");
          throw err;
        }
        end++;
        settlements.push({ delivery, settlement });
        if (performance.now() - started >= step.budgetMs) break;
      }
      // What the commit writes (the outbox's events) waits for its locks as long as it needs.
      await limitLockWaits(tx, undefined);
    }, signal && { signal, finishOnceStarted: true });
  const runLockingAhead = (pipeline: DeliveryHandler) =>
    run(pipeline).catch((err: unknown) => {
      if (!(err instanceof LocksAheadTimedOut)) throw err;
      // Held for longer than another instance's batch holds them: by something else (an open transaction, a
      // migration). The events take their locks as they go, as without lockBatch, so that those that do not
      // need what is held go on while the one that does waits for it.
      logger.warn({ err: err.cause, events: Math.min(batch.length - from, max) }, "the batch's locks were not all free in time; its events take their own as they go");
      lockingAhead = false;
      return run(pipeline);
    });
  try {
    await runLockingAhead(step.pipeline);
  } catch (err) {
    if (!(err instanceof SavepointNeededError)) throw err;
    // An event failed: nothing of that transaction stays; it runs again with a savepoint per event (the one
    // that failed fails again at once, unless whose failure it was is not known: then it runs again too).
    if (err.streamSequence !== undefined) step.failed.set(err.streamSequence, err.cause);
    try {
      await runLockingAhead(step.careful);
    } finally {
      step.failed.clear();
    }
  }
  settlements.forEach(({ delivery, settlement }, k) => {
    const msg = batch[from + k];
    if (settlement.kind !== "deadLetter") return intake.settle(msg, settlement);
    filing.push(fileThenAck(msg, delivery, settlement, step));
  });
  return end;
}

/**
 * The binding's lockBatch waited longer for a lock than another instance's
 * batch holds one (twice the time a transaction's handlers may take):
 * the transaction runs again without it.
 */
class LocksAheadTimedOut extends Error {
  override readonly name: string = "LocksAheadTimedOut";
  constructor(cause: unknown) {
    super("the batch's locks taken ahead waited too long", { cause });
  }
}

/** Files a dead letter, then acks the event at its source; naks it (to be filed again) when filing fails. */
async function fileThenAck(msg: JsMsg, delivery: Delivery, settlement: Extract<Settlement, { kind: "deadLetter" }>, step: BatchStep): Promise<void> {
  const { intake, logger } = step;
  const { reason } = settlement;
  let subject: string;
  let sequence: number;
  let duplicate: boolean;
  try {
    ({ subject, sequence, duplicate } = await fileDeadLetter(step.js, step.dlqStream, delivery, reason));
  } catch (err) {
    // Redelivered to be decided and filed again, after 1 s at its first delivery, doubling with each one, at most 30 s.
    const retryInMs = Math.min(1_000 * 2 ** Math.min(Math.max(delivery.deliveryCount - 1, 0), 5), 30_000);
    logger.error({ err, reason, streamSequence: delivery.streamSequence, retryInMs, ...deliveryLogFields(delivery, settlement.trace) }, "publishing to the dead letter stream failed; the event will be redelivered");
    intake.settle(msg, { kind: "retry", delayMs: retryInMs });
    return;
  }
  // The line an operator reads first: it names the dead letter as the commands that show and replay it take it.
  step.deadLetterLines.filed(sequence, () =>
    logger.error(
      { reason, streamSequence: delivery.streamSequence, attempt: delivery.deliveryCount, deadLetterSubject: subject, deadLetterSequence: sequence, ...deliveryLogFields(delivery, settlement.trace) },
      `event sent to the dead letter stream as ${sequence}: \`npx concord dlq show ${sequence}\` shows it; once what failed is put right, \`npx concord dlq replay ${sequence}\` sends it again`,
    ),
  );
  // Filed before (the ack of that filing was lost, or its process died before acking): counted then, not again.
  if (!duplicate) settlement.filed?.();
  intake.settle(msg, { kind: "ack" });
}
