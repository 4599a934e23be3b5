import type { JetStreamClient } from "nats";
import type { Logger } from "../log/index.js";
import { toNatsHeaders } from "./cloud-events.js";
import { onFailure, type Delivery, type DeliveryMiddleware, type Settlement } from "./delivery.js";
import type { StreamSpec } from "./types.js";

/**
 * Where consumers put events they gave up on. JetStream has no dead letter
 * queue of its own (at max_deliver the message just stays in its stream), so
 * the runtime provisions this one.
 */
export const deadLetterStreamSpec: StreamSpec = {
  name: "CONCORD_DLQ",
  subjects: ["concord.dlq.>"],
  storage: "file",
  replicas: 1,
  maxAgeMs: 0,
  duplicateWindowMs: 120_000,
  description: "Events consumers gave up on; the concord-dlq-* headers say why and where from",
};

/** Headers a dead letter carries besides the original event's own headers; the payload is the original bytes. */
export const deadLetterHeaders = {
  reason: "concord-dlq-reason",
  subject: "concord-dlq-subject",
  stream: "concord-dlq-stream",
  streamSequence: "concord-dlq-stream-sequence",
  consumer: "concord-dlq-consumer",
  deliveryCount: "concord-dlq-delivery-count",
  time: "concord-dlq-time",
} as const;

/** The subject of one consumer's dead letters: `<prefix>.<stream>.<durable>`, the prefix from the DLQ stream's `x.>` subject. */
export function deadLetterSubject(dlqStream: StreamSpec, stream: string, durable: string): string {
  return `${deadLetterPrefix(dlqStream)}.${stream}.${durable}`;
}

/** Throws unless the dead letter stream has exactly one subject of the form `prefix.>`. */
export function deadLetterPrefix(dlqStream: StreamSpec): string {
  const [subject, ...others] = dlqStream.subjects;
  if (others.length > 0 || !subject?.endsWith(".>") || subject.length < 3) {
    throw new Error(`the dead letter stream ${dlqStream.name} needs exactly one subject of the form "prefix.>", got ${JSON.stringify(dlqStream.subjects)}`);
  }
  return subject.slice(0, -2);
}

export interface DeadLetterOptions {
  readonly js: JetStreamClient;
  readonly dlqStream: StreamSpec;
  readonly logger: Logger;
  /** Redelivery delay when the dead letter itself cannot be published. Default 1 s. */
  readonly retryDelayMs?: number;
}

/**
 * Catches what is left after retries: publishes the event with the reason to
 * the dead letter stream, then acks it at the source so later events flow.
 * If that publish fails the event is redelivered instead of being lost.
 */
export function deadLetter(options: DeadLetterOptions): DeliveryMiddleware {
  const { js, dlqStream, logger } = options;
  const retryDelayMs = options.retryDelayMs ?? 1_000;
  deadLetterPrefix(dlqStream);
  const file = async (err: unknown, delivery: Delivery): Promise<Settlement> => {
    const reason = reasonOf(err);
    const subject = deadLetterSubject(dlqStream, delivery.stream, delivery.consumer);
    try {
      // One id per source message and consumer: a crash between this publish and the ack cannot file it twice.
      await js.publish(subject, delivery.data, {
        headers: toNatsHeaders(deadLetterHeadersFor(delivery, reason)),
        msgID: `${delivery.stream}.${delivery.streamSequence}.${delivery.consumer}`,
      });
    } catch (publishErr) {
      logger.error(
        { err: publishErr, reason, consumer: delivery.consumer, streamSequence: delivery.streamSequence, retryInMs: retryDelayMs },
        "publishing to the dead letter stream failed; the event will be redelivered",
      );
      return { kind: "retry", delayMs: retryDelayMs };
    }
    logger.error(
      { err, consumer: delivery.consumer, stream: delivery.stream, streamSequence: delivery.streamSequence, attempt: delivery.deliveryCount, deadLetterSubject: subject },
      "event sent to the dead letter stream",
    );
    return { kind: "ack" };
  };
  // Filed after the batch's commit (a microtask later), like every other effect that leaves the process.
  return (next) => (delivery) => onFailure(next, delivery, (err) => Promise.resolve().then(() => file(err, delivery)));
}

function deadLetterHeadersFor(delivery: Delivery, reason: string): Record<string, string> {
  const headers: Record<string, string> = {};
  // Nats-* headers steer JetStream (Nats-Msg-Id would collide with the dead letter's own id).
  for (const [name, value] of Object.entries(delivery.headers)) if (!/^nats-/i.test(name)) headers[name] = value;
  headers[deadLetterHeaders.reason] = reason;
  headers[deadLetterHeaders.subject] = delivery.subject;
  headers[deadLetterHeaders.stream] = delivery.stream;
  headers[deadLetterHeaders.streamSequence] = String(delivery.streamSequence);
  headers[deadLetterHeaders.consumer] = delivery.consumer;
  headers[deadLetterHeaders.deliveryCount] = String(delivery.deliveryCount);
  headers[deadLetterHeaders.time] = new Date().toISOString();
  return headers;
}

/** A header-safe reason: NATS header values are single lines. */
function reasonOf(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const line = message.replace(/[\r\n]+/g, " ").trim();
  return (line || "unknown error").slice(0, 1024);
}
