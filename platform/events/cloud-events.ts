import { headers as natsHeaders, type Msg, type MsgHdrs } from "nats";
import { uuidv7 } from "../ids/index.js";
import { subjectFor } from "./subject.js";
import { traceparentFrom } from "./trace-context.js";
import type { EventDescriptor } from "./types.js";

/** Header names of the CloudEvents NATS binding (binary mode) plus W3C trace context. */
export const eventHeaders = {
  specversion: "ce-specversion",
  id: "ce-id",
  type: "ce-type",
  source: "ce-source",
  time: "ce-time",
  contentType: "content-type",
  traceparent: "traceparent",
} as const;

/** The payload of every event is the binary protobuf message. */
export const protobufContentType = "application/protobuf";

/** An event ready for the wire: what the outbox stores and the relay publishes. */
export interface EncodedEvent {
  /** UUIDv7; `ce-id` and `Nats-Msg-Id`. */
  readonly id: string;
  readonly subject: string;
  readonly type: string;
  readonly payload: Uint8Array;
  readonly headers: Readonly<Record<string, string>>;
}

export interface EncodeEventOptions {
  /** The publishing service (`ce-source`). */
  readonly source: string;
  /** Continues the caller's trace; a new one is started when absent or malformed. */
  readonly traceparent?: string;
}

/**
 * Builds subject, headers and payload of one event. Throws before anything is
 * stored or sent when the subject cannot be built (see `subjectFor`).
 */
export function encodeEvent<T>(descriptor: EventDescriptor<T>, message: T, options: EncodeEventOptions): EncodedEvent {
  const subject = subjectFor(descriptor, message);
  const id = uuidv7();
  let payload: Uint8Array;
  try {
    payload = descriptor.codec.encode(message).finish();
  } catch (err) {
    throw new Error(`encoding ${descriptor.typeName} failed: ${(err as Error).message}`, { cause: err });
  }
  return {
    id,
    subject,
    type: descriptor.typeName,
    payload,
    headers: {
      [eventHeaders.specversion]: "1.0",
      [eventHeaders.id]: id,
      [eventHeaders.type]: descriptor.typeName,
      [eventHeaders.source]: options.source,
      [eventHeaders.time]: new Date().toISOString(),
      [eventHeaders.contentType]: protobufContentType,
      [eventHeaders.traceparent]: traceparentFrom(options.traceparent),
    },
  };
}

/** Event type names already checked for what a header line cannot carry. */
const typesFitForHeaders = new Set<string>();

/**
 * The header block the outbox stores for an event from `encodeEvent`: its
 * CloudEvents headers plus Nats-Msg-Id, in NATS wire form. Written straight
 * from the event's fields (this runs in every transaction that emits an
 * event): the id, time and trace context are generated or validated, the
 * source is validated by the outbox, and each type name is checked once.
 */
export function eventHeaderBlock(event: EncodedEvent): Buffer {
  if (!typesFitForHeaders.has(event.type)) {
    if (/[\r\n]/.test(event.type)) throw new Error(`event type ${JSON.stringify(event.type)} has a line break`);
    typesFitForHeaders.add(event.type);
  }
  const h = event.headers;
  return Buffer.from(
    `NATS/1.0\r\n${eventHeaders.specversion}: 1.0\r\n${eventHeaders.id}: ${event.id}\r\n${eventHeaders.type}: ${event.type}\r\n` +
      `${eventHeaders.source}: ${h[eventHeaders.source]}\r\n${eventHeaders.time}: ${h[eventHeaders.time]}\r\n` +
      `${eventHeaders.contentType}: ${protobufContentType}\r\n${eventHeaders.traceparent}: ${h[eventHeaders.traceparent]}\r\nNats-Msg-Id: ${event.id}\r\n\r\n`,
  );
}

/**
 * The NATS wire form of a header set ("NATS/1.0", then one "name: value"
 * line each, then an empty line): what the outbox stores, so the relay sends
 * it as it is. Throws on a name or value that cannot be sent.
 */
export function encodeHeaderBlock(record: Readonly<Record<string, string>>): Buffer {
  let block = "NATS/1.0\r\n";
  for (const [name, value] of Object.entries(record)) {
    if (!/^[!-9;-~]+$/.test(name)) throw new Error(`invalid header name ${JSON.stringify(name)}`);
    if (/[\r\n]/.test(value)) throw new Error(`header ${name} has a line break in its value`);
    block += `${name}: ${value.trim()}\r\n`;
  }
  return Buffer.from(`${block}\r\n`);
}

/** nats.js headers from a plain record. */
export function toNatsHeaders(record: Readonly<Record<string, string>>): MsgHdrs {
  const h = natsHeaders();
  for (const [name, value] of Object.entries(record)) h.set(name, value);
  return h;
}

/** A plain record of a message's headers (first value of each), for handlers and the dead letter stream. */
export function headersRecord(h: MsgHdrs | undefined): Record<string, string> {
  const record: Record<string, string> = {};
  if (!h) return record;
  // Iterating the entries once: h.get(name) looks every name up by walking all of them.
  for (const [name, values] of h) if (values.length > 0) record[name] = values[0];
  return record;
}

/**
 * The headers of a received message as a plain record (first value of each),
 * read straight from the header block as it came off the wire when nats.js
 * keeps it where its message class does (`msg._rdata` up to `msg._msg.hdr`):
 * one pass over a string instead of nats.js's general decoder, which costs a
 * consumer more than the rest of reading a message. Any other message object
 * goes through the public `headers` getter.
 */
export function receivedHeaders(msg: Msg): Record<string, string> {
  const inner = msg as unknown as { _rdata?: unknown; _msg?: { hdr?: unknown } };
  const hdr = inner._msg?.hdr;
  const data = inner._rdata;
  if (typeof hdr !== "number" || !(data instanceof Uint8Array)) return headersRecord(msg.headers);
  const record: Record<string, string> = {};
  if (hdr <= 0) return record;
  const block = Buffer.from(data.buffer, data.byteOffset, hdr).toString("utf8");
  // The first line is "NATS/1.0", with a status code after it on status messages.
  let start = block.indexOf("\r\n") + 2;
  while (start > 1 && start < block.length) {
    let end = block.indexOf("\r\n", start);
    if (end < 0) end = block.length;
    const colon = block.indexOf(":", start);
    if (colon > start && colon < end) {
      const name = block.slice(start, colon);
      if (!(name in record)) record[name] = block.slice(colon + 1, end).trim();
    }
    start = end + 2;
  }
  return record;
}
