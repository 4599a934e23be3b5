import { encodeMessage } from "../contracts/encode-message.js";
import { uuidv7 } from "../ids/index.js";
import { subjectFor } from "./subject.js";
import { traceparentFrom, tracestateFrom } from "./trace-context.js";
import type { EventDescriptor } from "./types.js";

/**
 * Header names of the CloudEvents NATS binding (binary mode): every attribute
 * as `ce-<name>`, `datacontenttype` included, and the distributed tracing
 * extension's `traceparent` and `tracestate` as `ce-traceparent` and
 * `ce-tracestate`. `content-type`, `traceparent` and `tracestate` carry the
 * same values again for readers that look for the plain names (NATS
 * tooling, W3C trace context propagators, older Concord consumers).
 */
export const eventHeaders = {
  specversion: "ce-specversion",
  id: "ce-id",
  type: "ce-type",
  source: "ce-source",
  time: "ce-time",
  dataContentType: "ce-datacontenttype",
  contentType: "content-type",
  ceTraceparent: "ce-traceparent",
  ceTracestate: "ce-tracestate",
  traceparent: "traceparent",
  tracestate: "tracestate",
} as const;

/** The payload of every event is the binary protobuf message. */
export const protobufContentType = "application/protobuf";

/** Media types (RFC 6838: their type and subtype in any case) other SDKs and brokers give a protobuf payload. */
const protobufMediaTypes = new Set([protobufContentType, "application/x-protobuf"]);

/**
 * Why `declared` (a `content-type` or `ce-datacontenttype`) does not declare
 * a payload of the protobuf message `typeName`; undefined when it does:
 * `application/protobuf` or `application/x-protobuf`, in any case, with any
 * parameters, save a `proto` parameter (a message name, as some producers
 * add) that names another message.
 */
export function contentTypeProblem(declared: string, typeName: string): string | undefined {
  if (declared === protobufContentType) return undefined;
  const [essence, ...parameters] = declared.split(";");
  if (!protobufMediaTypes.has(essence.trim().toLowerCase())) return `is not a protobuf payload (${protobufContentType})`;
  for (const parameter of parameters) {
    const at = parameter.indexOf("=");
    if (at < 0 || parameter.slice(0, at).trim().toLowerCase() !== "proto") continue;
    const named = parameter.slice(at + 1).trim().replace(/^"(.*)"$/, "$1");
    if (named !== typeName) return `names the message ${JSON.stringify(named)}, not ${typeName}`;
  }
  return undefined;
}

/** Days in each month of a common year, January at 1. */
const monthDays = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** The two digits at `at` as a number, or -1 when either is not a digit. */
function twoDigits(text: string, at: number): number {
  const tens = text.charCodeAt(at) - 48;
  const ones = text.charCodeAt(at + 1) - 48;
  return tens >= 0 && tens <= 9 && ones >= 0 && ones <= 9 ? tens * 10 + ones : -1;
}

/**
 * Whether `text` is an RFC 3339 date-time, as CloudEvents requires of a
 * `ce-time` (`2026-12-07T19:42:40.123Z`, `...T20:42:40+01:00`; T and Z in
 * either case; any digits of a second's fraction; a leap second's 60), its
 * day one its month has. One pass over the characters, no Date parsing:
 * this runs on every event a consumer takes.
 */
export function isRfc3339Time(text: string): boolean {
  // date-fullyear "-" date-month "-" date-mday "T" time-hour ":" time-minute ":" time-second [time-secfrac] time-offset
  if (text.length < 20) return false;
  const century = twoDigits(text, 0);
  const yearOfCentury = twoDigits(text, 2);
  const month = twoDigits(text, 5);
  const day = twoDigits(text, 8);
  if (century < 0 || yearOfCentury < 0 || text.charCodeAt(4) !== 45 || text.charCodeAt(7) !== 45 || month < 1 || month > 12 || day < 1) return false;
  const year = century * 100 + yearOfCentury;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  if (day > (month === 2 && leap ? 29 : monthDays[month])) return false;
  const t = text.charCodeAt(10);
  if (t !== 84 && t !== 116) return false;
  const hour = twoDigits(text, 11);
  const minute = twoDigits(text, 14);
  const second = twoDigits(text, 17);
  if (hour < 0 || hour > 23 || text.charCodeAt(13) !== 58 || minute < 0 || minute > 59 || text.charCodeAt(16) !== 58 || second < 0 || second > 60) return false;
  let at = 19;
  if (text.charCodeAt(at) === 46) {
    const fraction = ++at;
    while (at < text.length && text.charCodeAt(at) >= 48 && text.charCodeAt(at) <= 57) at++;
    if (at === fraction) return false;
  }
  const offset = text.charCodeAt(at);
  if (offset === 90 || offset === 122) return at + 1 === text.length;
  if (offset !== 43 && offset !== 45) return false;
  const offsetHour = twoDigits(text, at + 1);
  const offsetMinute = twoDigits(text, at + 4);
  return at + 6 === text.length && offsetHour >= 0 && offsetHour <= 23 && text.charCodeAt(at + 3) === 58 && offsetMinute >= 0 && offsetMinute <= 59;
}

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
  /** The trace context the event carries (its producer span's); a new trace is started when absent or malformed. */
  readonly traceparent?: string;
  /** Passed on with the traceparent when it is well formed (see `tracestateFrom`). */
  readonly tracestate?: string;
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
    payload = encodeMessage(descriptor.codec, message);
  } catch (err) {
    throw new Error(`encoding ${descriptor.typeName} failed: ${(err as Error).message}`, { cause: err });
  }
  const traceparent = traceparentFrom(options.traceparent);
  // A tracestate belongs to the trace it came with; a new trace starts without one.
  const tracestate = traceparent === options.traceparent ? tracestateFrom(options.tracestate) : undefined;
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
      [eventHeaders.dataContentType]: protobufContentType,
      [eventHeaders.contentType]: protobufContentType,
      [eventHeaders.ceTraceparent]: traceparent,
      [eventHeaders.traceparent]: traceparent,
      ...(tracestate !== undefined && { [eventHeaders.ceTracestate]: tracestate, [eventHeaders.tracestate]: tracestate }),
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
  const traceparent = h[eventHeaders.traceparent];
  const tracestate = h[eventHeaders.tracestate];
  return Buffer.from(
    `NATS/1.0\r\n${eventHeaders.specversion}: 1.0\r\n${eventHeaders.id}: ${event.id}\r\n${eventHeaders.type}: ${event.type}\r\n` +
      `${eventHeaders.source}: ${h[eventHeaders.source]}\r\n${eventHeaders.time}: ${h[eventHeaders.time]}\r\n` +
      `${eventHeaders.dataContentType}: ${protobufContentType}\r\n${eventHeaders.contentType}: ${protobufContentType}\r\n` +
      `${eventHeaders.ceTraceparent}: ${traceparent}\r\n${eventHeaders.traceparent}: ${traceparent}\r\n` +
      (tracestate === undefined ? "" : `${eventHeaders.ceTracestate}: ${tracestate}\r\n${eventHeaders.tracestate}: ${tracestate}\r\n`) +
      `Nats-Msg-Id: ${event.id}\r\n\r\n`,
  );
}
