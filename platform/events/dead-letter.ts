import { ErrorCode, type JetStreamClient, type NatsError } from "nats";
import { eventHeaders } from "./cloud-events.js";
import { isDatabaseRefusingWrites } from "../sql/index.js";
import { BatchConflictError, SavepointNeededError, type Delivery, type DeliveryMiddleware } from "./delivery.js";
import { noteDeadLetter } from "./inbox.js";
import { deadLetterMessageBytes } from "./message-limit.js";
import { toNatsHeaders } from "./nats-internals.js";
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
  // As the contracts' streams: a dead letter is an event nobody else holds (a standalone server keeps 1, see ensureStreams).
  replicas: 3,
  maxAgeMs: 0,
  duplicateWindowMs: 120_000,
  description: "Events consumers gave up on; the concord-dlq-* headers say why and where from",
};

/**
 * The dead letter stream as the operator provisions it for the contracts'
 * `streams`: deadLetterStreamSpec with a max_msg_size that takes each of
 * their events whole with a dead letter's headers (deadLetterMessageBytes).
 * deadLetterStreamSpec alone has no say in the limit: a service leaves it to
 * the operator, and one that creates the stream creates it without.
 */
export function deadLetterStreamFor(streams: readonly StreamSpec[]): StreamSpec {
  return { ...deadLetterStreamSpec, maxMessageBytes: deadLetterMessageBytes(streams) };
}

/** Headers a dead letter carries besides the original event's own headers; the payload is the original bytes. */
export const deadLetterHeaders = {
  reason: "concord-dlq-reason",
  subject: "concord-dlq-subject",
  stream: "concord-dlq-stream",
  streamSequence: "concord-dlq-stream-sequence",
  consumer: "concord-dlq-consumer",
  deliveryCount: "concord-dlq-delivery-count",
  time: "concord-dlq-time",
  /**
   * Set on a dead letter filed without the event's payload, which with these
   * headers was over the server's max_payload: the payload's size in bytes.
   * The source stream still holds the event at concord-dlq-stream-sequence
   * (until its limits remove it); a replay reads it from there.
   */
  payloadOmitted: "concord-dlq-payload-omitted",
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

/**
 * Catches what is left after retries and settles it as a dead letter with
 * the reason (and the trace context of its attempt's span, for the line
 * that tells it): the consumer files it in the dead letter stream once the
 * batch has committed, then acks it at the source so later events flow.
 */
export function deadLetter(): DeliveryMiddleware {
  return (next) => async (delivery, tx) => {
    try {
      return await next(delivery, tx);
    } catch (err) {
      if (err instanceof BatchConflictError) throw err;
      const reason = reasonOf(err);
      // Kept with the decision: a filing that does not complete brings the event back to be filed with it, not run.
      try {
        await noteDeadLetter(tx, delivery, reason);
      } catch (noted) {
        // In a transaction without savepoints, an earlier event's write sent ahead may fail with this statement:
        // the run with a savepoint per event decides whose failure it was (see noSavepointStep), as it does when
        // the note fails there too (the batch then runs one event a transaction).
        throw isDatabaseRefusingWrites(noted) ? new BatchConflictError(noted) : new SavepointNeededError(noted, undefined);
      }
      return delivery.trace ? { kind: "deadLetter", reason, trace: delivery.trace } : { kind: "deadLetter", reason };
    }
  };
}

/**
 * Publishes a delivery to the dead letter stream with `reason` and its
 * origin in `concord-dlq-*` headers, under an id that is one per source
 * message and consumer (a crash between this publish and the ack cannot
 * file it twice: `duplicate` then says it was there already), with its
 * sequence in the dead letter stream. Rejects when JetStream does not take it.
 */
export async function fileDeadLetter(
  js: JetStreamClient,
  dlqStream: StreamSpec,
  delivery: Delivery,
  reason: string,
): Promise<{ readonly subject: string; readonly sequence: number; readonly duplicate: boolean }> {
  const subject = deadLetterSubject(dlqStream, delivery.stream, delivery.consumer);
  const msgID = `${delivery.stream}.${delivery.streamSequence}.${delivery.consumer}`;
  const full = deadLetterHeadersFor(delivery, reason);
  const omitted = { [deadLetterHeaders.payloadOmitted]: String(delivery.data.byteLength) };
  // An event near the server's max_payload, or with nearly the 64 KiB of headers a stream takes, does not fit
  // with the headers added here: it is filed without its payload, then if need be with only its CloudEvents
  // identity among its own headers, rather than come back forever and, at max_deliver, stay unacknowledged
  // and unfiled.
  const attempts: Array<[Uint8Array, Record<string, string | readonly string[]>]> = [
    [delivery.data, full],
    [new Uint8Array(0), { ...full, ...omitted }],
    [new Uint8Array(0), { ...deadLetterHeadersFor(identityOf(delivery), reason), ...omitted }],
  ];
  for (const [i, [data, headers]] of attempts.entries()) {
    try {
      const ack = await js.publish(subject, data, { headers: toNatsHeaders(headers), msgID });
      return { subject, sequence: ack.seq, duplicate: ack.duplicate };
    } catch (err) {
      if (!tooLarge(err) || i === attempts.length - 1) throw streamRefusal(dlqStream, err);
    }
  }
  throw new Error("unreachable: the last attempt either returns or throws");
}

/**
 * A refusal the dead letter stream gave in its answer, named: nats.js makes
 * the error's message the answer's code alone ("503" for a stream full under
 * a max_msgs or max_bytes with discard new), and the consumer's line said
 * nothing more. Any other error as it is.
 */
function streamRefusal(dlqStream: StreamSpec, err: unknown): unknown {
  const refusal = (err as NatsError).api_error;
  if (refusal?.description === undefined) return err;
  return new Error(`the dead letter stream ${dlqStream.name} refused it: ${refusal.description} (JetStream error ${refusal.err_code})`, { cause: err });
}

/** JetStream's refusals of a message for its size: its headers over 64 KiB (10097), over the stream's max_msg_size (10054). */
const tooLargeApiErrors = new Set([10054, 10097]);

/** Whether publishing failed for the message's size alone, which a smaller filing of it gets past. */
function tooLarge(err: unknown): boolean {
  return (err as { code?: unknown }).code === ErrorCode.MaxPayloadExceeded || tooLargeApiErrors.has((err as NatsError).api_error?.err_code ?? 0);
}

/**
 * Whether nats.js can send a header again: a name of printable ASCII without
 * a colon, a value without a line break. Another client's message may carry
 * any other (a name with a space, a lone line feed), which the server
 * stores as it came; nats.js refuses to encode it.
 */
function sendable(name: string, value: string): boolean {
  return /^[!-9;-~]+$/.test(name) && !/[\r\n]/.test(value);
}

/** How many values of a CloudEvents header given more than once the smallest filing keeps, so that it fits whatever was sent. */
const identityValues = 16;

/** The delivery with only the CloudEvents headers that say which event it was, each value cut to 256 characters. */
function identityOf(delivery: Delivery): Delivery {
  const headers: Record<string, string> = {};
  const repeats: Record<string, string[]> = {};
  for (const name of [eventHeaders.specversion, eventHeaders.id, eventHeaders.type, eventHeaders.source, eventHeaders.time]) {
    if (delivery.headers[name] === undefined) continue;
    headers[name] = delivery.headers[name].slice(0, 256);
    const values = delivery.repeatedHeaders?.[name];
    if (values) repeats[name] = values.slice(0, identityValues).map((value) => value.slice(0, 256));
  }
  return { ...delivery, headers, repeatedHeaders: repeats };
}

function deadLetterHeadersFor(delivery: Delivery, reason: string): Record<string, string | readonly string[]> {
  const headers: Record<string, string | readonly string[]> = {};
  // Nats-* headers steer JetStream (Nats-Msg-Id would collide with the dead letter's own id). One nats.js cannot
  // send is left out (the source stream keeps it), or no filing would ever go out. A header given more than once
  // keeps every value, in order: a dead letter for values that differ shows what was sent.
  for (const [name, first] of Object.entries(delivery.headers)) {
    const values = delivery.repeatedHeaders?.[name] ?? [first];
    if (!/^nats-/i.test(name) && values.every((value) => sendable(name, value))) headers[name] = values.length === 1 ? first : values;
  }
  headers[deadLetterHeaders.reason] = reason;
  headers[deadLetterHeaders.subject] = delivery.subject;
  headers[deadLetterHeaders.stream] = delivery.stream;
  headers[deadLetterHeaders.streamSequence] = String(delivery.streamSequence);
  headers[deadLetterHeaders.consumer] = delivery.consumer;
  headers[deadLetterHeaders.deliveryCount] = String(delivery.deliveryCount);
  headers[deadLetterHeaders.time] = new Date().toISOString();
  return headers;
}

/** A dead letter's reason from an error: its message on one line (NATS header values are single lines), at most 1,024 characters. */
export function reasonOf(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const line = message.replace(/[\r\n]+/g, " ").trim();
  return (line || "unknown error").slice(0, 1024);
}
