import type { JsMsg, Msg, NatsConnection } from "nats";
import type { MessageChecker } from "../contracts/index.js";
import type { Logger } from "../log/index.js";
import type { Database } from "../sql/index.js";
import { receivedHeaders } from "./cloud-events.js";
import { deadLetter, deadLetterPrefix, deadLetterStreamSpec } from "./dead-letter.js";
import { isPending, type Delivery, type DeliveryHandler, type Settlement } from "./delivery.js";
import { typedHandler, type ConsumerBinding } from "./event-handler.js";
import { createInbox } from "./inbox.js";
import { createOutbox, type Outbox } from "./outbox.js";
import { createPullIntake, type PullIntake } from "./pull-intake.js";
import { ensureConsumers, ensureStreams, validateConsumerSpec, validateStreamSpec } from "./provision.js";
import { validateSource } from "./publisher.js";
import { retryWithBackoff } from "./retry.js";
import type { StreamSpec } from "./types.js";

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
  /** How long to wait before pulling again when pulling failed. Default 1 s. */
  readonly reopenDelayMs?: number;
  /** The contracts' rules: an event that breaks them goes to the dead letter stream at once. */
  readonly checker?: MessageChecker;
}

/** The running consumers of a service. */
export interface RunningConsumers {
  /** Stops pulling, lets the handler in flight finish and settle, nak's what was pulled ahead, then resolves. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Provisions the dead letter stream and the durable consumers, then consumes
 * each one: decode, inbox, handler in a transaction, ack; a failing handler is
 * retried with the spec's backoff and dead-lettered after maxDeliver attempts,
 * an unprocessable message at once. Messages of one consumer are handled one
 * at a time, in stream order; every message pulled gets progress acks while
 * it waits or is handled, so only a process that is gone has its messages
 * redelivered after ack_wait. The source streams must exist (ensureStreams).
 */
export async function startConsumers(options: StartConsumersOptions): Promise<RunningConsumers> {
  const known = new Set(["nc", "db", "service", "consumers", "logger", "dlqStream", "outbox", "pullBatch", "reopenDelayMs", "checker"]);
  for (const key of Object.keys(options)) if (!known.has(key)) throw new Error(`startConsumers: unknown option ${key}`);
  const { nc, db, service, consumers } = options;
  const dlqStream = options.dlqStream ?? deadLetterStreamSpec;
  const pullBatch = options.pullBatch ?? 64;
  const reopenDelayMs = options.reopenDelayMs ?? 1_000;
  if (!Number.isInteger(pullBatch) || pullBatch < 1) throw new Error(`startConsumers: invalid pullBatch: ${pullBatch}`);
  if (!Number.isInteger(reopenDelayMs) || reopenDelayMs < 0) throw new Error(`startConsumers: invalid reopenDelayMs: ${reopenDelayMs}`);
  validateSource("startConsumers", service);
  validateStreamSpec(dlqStream);
  deadLetterPrefix(dlqStream);
  const durables = new Set<string>();
  for (const { spec, descriptor } of consumers) {
    validateConsumerSpec(spec);
    const key = `${spec.stream}/${spec.durable}`;
    if (durables.has(key)) throw new Error(`startConsumers: consumer ${spec.durable} on stream ${spec.stream} is bound twice`);
    durables.add(key);
    if (descriptor.typeName !== spec.eventType) throw new Error(`startConsumers: consumer ${spec.durable} takes ${spec.eventType} but was bound to the descriptor of ${descriptor.typeName}`);
    if (descriptor.stream !== spec.stream) throw new Error(`startConsumers: consumer ${spec.durable} reads stream ${spec.stream} but ${descriptor.typeName} is published to ${descriptor.stream}`);
  }
  const logger = options.logger.child({ component: "event-consumer" });
  const inbox = createInbox({ db });
  const outbox = options.outbox ?? createOutbox({ db, source: service });

  const jsm = await nc.jetstreamManager();
  await ensureStreams(jsm, [dlqStream]);
  await ensureConsumers(jsm, consumers.map((c) => c.spec));
  const js = nc.jetstream();

  const consume = async (binding: ConsumerBinding<unknown>, intake: PullIntake): Promise<void> => {
    const { spec } = binding;
    const log = logger.child({ consumer: spec.durable, stream: spec.stream });
    // Outermost first: dead letter catches what retry gives up on.
    const pipeline: DeliveryHandler = deadLetter({ js, dlqStream, logger: log })(
      retryWithBackoff({ maxDeliver: spec.maxDeliver, backoffMs: spec.backoffMs, logger: log })(typedHandler({ binding, inbox, outbox, logger: log, checker: options.checker })),
    );
    const step = { pipeline, consumer: spec.durable, db, intake, budgetMs: spec.ackWaitMs / 8, logger: log };
    for (let batch = await intake.take(pullBatch); batch; batch = await intake.take(pullBatch)) {
      try {
        await handleBatch(batch, step);
      } catch (err) {
        // Settling failed (the connection closed under it): what is left unsettled comes again after ack_wait.
        if (!nc.isClosed()) log.error({ err, events: batch.length }, "handling a batch of events failed; they will be redelivered");
        for (const msg of batch) intake.forget(msg);
      }
    }
  };

  const intakes = consumers.map(({ spec }) =>
    createPullIntake({
      nc,
      js,
      stream: spec.stream,
      durable: spec.durable,
      limit: 2 * pullBatch,
      ackWaitMs: spec.ackWaitMs,
      reopenDelayMs,
      logger: logger.child({ consumer: spec.durable, stream: spec.stream }),
    }),
  );
  const running = consumers.map((binding, i) => consume(binding, intakes[i]));
  logger.info({ consumers: consumers.map((c) => c.spec.durable) }, "consuming events");
  let stopped: Promise<void> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        await Promise.all(intakes.map((intake) => intake.close()));
        await Promise.all(running);
      })();
      return stopped;
    },
  };
}

function deliveryOf(msg: JsMsg, consumer: string): Delivery {
  return {
    consumer,
    stream: msg.info.stream,
    subject: msg.subject,
    streamSequence: msg.info.streamSequence,
    deliveryCount: msg.info.redeliveryCount,
    headers: receivedHeaders((msg as unknown as { msg: Msg }).msg ?? msg),
    data: msg.data,
    storedAt: new Date(Math.floor(msg.info.timestampNanos / 1e6)),
  };
}

interface BatchStep {
  readonly pipeline: DeliveryHandler;
  readonly consumer: string;
  readonly db: Database;
  readonly intake: PullIntake;
  /** How long one transaction's handlers may run before it commits and lets the event loop go. */
  readonly budgetMs: number;
  readonly logger: Logger;
}

/**
 * Handles the messages that arrived together in as few database transactions
 * as their handlers' time allows (group commit), each event in its own
 * savepoint so a failing handler rolls back only itself, in stream order.
 * Handlers are synchronous, so nothing else runs while a transaction is open:
 * once handlers have taken `budgetMs`, the transaction commits, its messages
 * are settled, the rest get progress acks, and the event loop is let go
 * before the next transaction, so no message outlives its ack_wait while its
 * neighbours are handled. Settlements known at once are sent right after each
 * commit, in the same tick, so nats.js writes them together with the events
 * the handlers emitted (the relay publishes those a microtask later); only
 * dead-lettering finishes after that.
 */
async function handleBatch(batch: readonly JsMsg[], step: BatchStep): Promise<void> {
  const waiting: Promise<void>[] = [];
  for (let from = 0; from < batch.length; ) {
    if (from > 0) {
      step.intake.keepAlive();
      await new Promise((resolve) => setImmediate(resolve));
    }
    from = handleChunk(batch, from, step, waiting);
  }
  if (waiting.length > 0) await Promise.all(waiting);
}

/** Handles batch[from..] in one transaction until the budget is spent; settles them; returns where it stopped. */
function handleChunk(batch: readonly JsMsg[], from: number, step: BatchStep, waiting: Promise<void>[]): number {
  const { pipeline, consumer, db, intake, budgetMs, logger } = step;
  const started = performance.now();
  const results: Array<Settlement | Promise<Settlement>> = [];
  let end = from;
  try {
    db.transaction(() => {
      while (end < batch.length) {
        const msg = batch[end++];
        try {
          results.push(pipeline(deliveryOf(msg, consumer)));
        } catch (err) {
          results.push(Promise.reject(err));
        }
        if (performance.now() - started >= budgetMs) break;
      }
    });
  } catch (err) {
    // The commit itself failed: nothing of these events is recorded, so they all come again.
    for (const r of results) if (isPending(r)) r.catch(() => undefined);
    logger.error({ err, events: end - from }, "committing a batch of events failed; they will be redelivered");
    for (let i = from; i < end; i++) intake.settle(batch[i], { kind: "retry", delayMs: 1_000 });
    return end;
  }
  results.forEach((result, k) => {
    const msg = batch[from + k];
    if (!isPending(result)) return intake.settle(msg, result);
    waiting.push(
      result.then(
        (settlement) => intake.settle(msg, settlement),
        (err: unknown) => {
          // Only a bug in the pipeline gets here; redeliver rather than lose the event.
          logger.error({ err, streamSequence: msg.info.streamSequence }, "the consumer pipeline failed; the event will be redelivered");
          intake.settle(msg, { kind: "retry", delayMs: 1_000 });
        },
      ),
    );
  });
  return end;
}
