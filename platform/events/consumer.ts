import type { ConsumerMessages, JsMsg, Msg, NatsConnection } from "nats";
import type { MessageChecker } from "../contracts/index.js";
import type { Logger } from "../log/index.js";
import type { Database } from "../sql/index.js";
import { receivedHeaders } from "./cloud-events.js";
import { deadLetter, deadLetterPrefix, deadLetterStreamSpec } from "./dead-letter.js";
import { isPending, type Delivery, type DeliveryHandler, type Settlement } from "./delivery.js";
import { typedHandler, type ConsumerBinding } from "./event-handler.js";
import { createInbox } from "./inbox.js";
import { createOutbox, type Outbox } from "./outbox.js";
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
  /** Messages pulled ahead per consumer; keep their handling well inside ack_wait. Default 64. */
  readonly pullBatch?: number;
  /** How long to wait before re-opening a consumer whose message stream failed. Default 1 s. */
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
 * at a time, in stream order. The source streams must exist (ensureStreams).
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

  let stopping = false;
  const open = new Set<ConsumerMessages>();
  const pauses = new Set<() => void>();
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const end = () => {
        clearTimeout(timer);
        pauses.delete(end);
        resolve();
      };
      const timer = setTimeout(end, ms);
      pauses.add(end);
    });

  const consume = async (binding: ConsumerBinding<unknown>): Promise<void> => {
    const { spec } = binding;
    const log = logger.child({ consumer: spec.durable, stream: spec.stream });
    // Outermost first: dead letter catches what retry gives up on.
    const pipeline: DeliveryHandler = deadLetter({ js, dlqStream, logger: log })(
      retryWithBackoff({ maxDeliver: spec.maxDeliver, backoffMs: spec.backoffMs, logger: log })(typedHandler({ binding, inbox, outbox, logger: log, checker: options.checker })),
    );
    while (!stopping) {
      let messages: ConsumerMessages | undefined;
      try {
        const consumer = await js.consumers.get(spec.stream, spec.durable);
        messages = await consumer.consume({ max_messages: pullBatch });
        open.add(messages);
        if (stopping) messages.stop();
        for await (const batch of availableBatches(messages, pullBatch)) {
          // Pulled ahead but not started: hand it back so another instance need not wait out ack_wait.
          if (stopping) for (const msg of batch) msg.nak();
          else await handleBatch(batch, pipeline, spec.durable, db, log);
        }
      } catch (err) {
        if (!stopping && !nc.isClosed()) log.warn({ err, retryInMs: reopenDelayMs }, "consuming failed; reopening the consumer");
      } finally {
        if (messages) open.delete(messages);
      }
      if (nc.isClosed()) {
        if (!stopping) log.warn("the NATS connection is closed; the consumer stops");
        return;
      }
      if (!stopping) await pause(reopenDelayMs);
    }
  };

  const running = consumers.map((binding) => consume(binding));
  logger.info({ consumers: consumers.map((c) => c.spec.durable) }, "consuming events");
  let stopped: Promise<void> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        stopping = true;
        for (const messages of open) messages.stop();
        for (const end of pauses) end();
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

/**
 * Handles the messages that arrived together in one database transaction
 * (group commit), each event in its own savepoint so a failing handler rolls
 * back only itself, in stream order; then settles them all. The pipeline's
 * database work runs synchronously when it is called, so it all lands inside
 * the transaction. Settlements known at once are sent right after the commit,
 * in the same tick, so nats.js writes them together with the events the
 * handlers emitted (the relay publishes those a microtask later); only
 * dead-lettering finishes after that.
 */
async function handleBatch(batch: readonly JsMsg[], pipeline: DeliveryHandler, consumer: string, db: Database, logger: Logger): Promise<void> {
  let results: Array<Settlement | Promise<Settlement>> = [];
  try {
    db.transaction(() => {
      results = batch.map((msg) => {
        try {
          return pipeline(deliveryOf(msg, consumer));
        } catch (err) {
          return Promise.reject(err);
        }
      });
    });
  } catch (err) {
    // The commit itself failed: nothing of the batch is recorded, so all of it comes again.
    for (const r of results) if (isPending(r)) r.catch(() => undefined);
    logger.error({ err, events: batch.length }, "committing a batch of events failed; they will be redelivered");
    for (const msg of batch) msg.nak(1_000);
    return;
  }
  const settle = (msg: JsMsg, settlement: Settlement): void => (settlement.kind === "ack" ? msg.ack() : msg.nak(settlement.delayMs));
  const waiting: Promise<void>[] = [];
  results.forEach((result, i) => {
    if (!isPending(result)) return settle(batch[i], result);
    waiting.push(
      result.then(
        (settlement) => settle(batch[i], settlement),
        (err: unknown) => {
          // Only a bug in the pipeline gets here; redeliver rather than lose the event.
          logger.error({ err, streamSequence: batch[i].info.streamSequence }, "the consumer pipeline failed; the event will be redelivered");
          batch[i].nak(1_000);
        },
      ),
    );
  });
  if (waiting.length > 0) await Promise.all(waiting);
}

/**
 * Yields the messages of `messages` in groups: each group is one message
 * plus whatever else has already arrived (up to `max`), never waiting for
 * more, so a lone event is handled at once and a burst shares one commit.
 */
async function* availableBatches(messages: AsyncIterable<JsMsg>, max: number): AsyncGenerator<JsMsg[]> {
  const it = messages[Symbol.asyncIterator]();
  let next: Promise<IteratorResult<JsMsg>> | undefined;
  const nothingYet = Symbol("nothing yet");
  while (true) {
    const first = await (next ?? it.next());
    next = undefined;
    if (first.done) return;
    const batch = [first.value];
    // One macrotask for the whole batch: messages already buffered resolve within microtasks, before it.
    const drained = new Promise<typeof nothingYet>((resolve) => setImmediate(resolve, nothingYet));
    while (batch.length < max) {
      next = it.next();
      const ready = await Promise.race([next, drained]);
      if (ready === nothingYet) break;
      next = undefined;
      if (ready.done) {
        yield batch;
        return;
      }
      batch.push(ready.value);
    }
    yield batch;
  }
}
