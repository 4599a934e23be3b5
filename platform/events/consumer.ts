import type { ConsumerMessages, JsMsg, NatsConnection } from "nats";
import type { Logger } from "../log/index.js";
import type { Database } from "../sql/index.js";
import { headersRecord } from "./cloud-events.js";
import { deadLetter, deadLetterPrefix, deadLetterStreamSpec } from "./dead-letter.js";
import type { Delivery, DeliveryHandler, Settlement } from "./delivery.js";
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
  const known = new Set(["nc", "db", "service", "consumers", "logger", "dlqStream", "outbox", "pullBatch", "reopenDelayMs"]);
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
      retryWithBackoff({ maxDeliver: spec.maxDeliver, backoffMs: spec.backoffMs, logger: log })(typedHandler({ binding, inbox, outbox, logger: log })),
    );
    while (!stopping) {
      let messages: ConsumerMessages | undefined;
      try {
        const consumer = await js.consumers.get(spec.stream, spec.durable);
        messages = await consumer.consume({ max_messages: pullBatch });
        open.add(messages);
        if (stopping) messages.stop();
        for await (const msg of messages) {
          // Pulled ahead but not started: hand it back so another instance need not wait out ack_wait.
          if (stopping) msg.nak();
          else await handle(msg, pipeline, spec.durable, log);
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

async function handle(msg: JsMsg, pipeline: DeliveryHandler, consumer: string, logger: Logger): Promise<void> {
  const delivery: Delivery = {
    consumer,
    stream: msg.info.stream,
    subject: msg.subject,
    streamSequence: msg.info.streamSequence,
    deliveryCount: msg.info.redeliveryCount,
    headers: headersRecord(msg.headers),
    data: msg.data,
    storedAt: new Date(Math.floor(msg.info.timestampNanos / 1e6)),
  };
  let settlement: Settlement;
  try {
    settlement = await pipeline(delivery);
  } catch (err) {
    // Only a bug in the pipeline gets here; redeliver rather than lose the event.
    logger.error({ err, streamSequence: delivery.streamSequence }, "the consumer pipeline failed; the event will be redelivered");
    settlement = { kind: "retry", delayMs: 1_000 };
  }
  if (settlement.kind === "ack") msg.ack();
  else msg.nak(settlement.delayMs);
}
