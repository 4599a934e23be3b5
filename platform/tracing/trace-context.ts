import { randomBytesFromPool as randomBytes } from "../ids/random-pool.js";

/** W3C trace context as calls and events carry it: `traceparent`, and `tracestate` when there is one. */
export interface TraceHeaders {
  readonly traceparent: string;
  readonly tracestate?: string;
}

// W3C Trace Context: version-traceid-parentid-flags, lower-case hex.
const traceparentPattern = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The fields of a `traceparent` a receiver may continue; undefined for anything else (malformed, version ff, all-zero ids). */
export function parseTraceparent(value: string): { readonly traceId: string; readonly spanId: string; readonly flags: number } | undefined {
  const match = traceparentPattern.exec(value);
  if (!match) return undefined;
  const [, version, traceId, spanId, flags] = match;
  if (version === "ff" || /^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, flags: Number.parseInt(flags, 16) };
}

/** True for a W3C `traceparent` a receiver may continue (not version ff, no all-zero ids). */
export function isTraceparent(value: string): boolean {
  return parseTraceparent(value) !== undefined;
}

/** A new sampled root `traceparent`, for events that do not continue a caller's trace. */
export function newTraceparent(): string {
  return `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
}

/**
 * The caller's `traceparent` when it is valid, otherwise a new one: W3C says a
 * malformed parent starts a new trace rather than failing the operation.
 */
export function traceparentFrom(given: string | undefined): string {
  return given !== undefined && isTraceparent(given) ? given : newTraceparent();
}

// One list member: a key (simple or tenant@system) and a value of printable ASCII without ',', '=' or spaces.
const tracestateMember = /^[a-z0-9][a-z0-9_\-*/@]{0,255}=[\x21-\x2b\x2d-\x3c\x3e-\x7e]{1,256}$/;

/**
 * A `tracestate` fit to pass on, with the optional whitespace around its
 * commas removed, or undefined: W3C lets a receiver drop a tracestate it
 * cannot parse, and this one goes into header lines, so nothing else
 * (line breaks, spaces, more than 32 members or 512 characters) passes.
 */
export function tracestateFrom(given: string | undefined): string | undefined {
  if (given === undefined || given.length > 512) return undefined;
  const members = given.split(",").map((m) => m.trim()).filter((m) => m !== "");
  if (members.length === 0 || members.length > 32 || !members.every((m) => tracestateMember.test(m))) return undefined;
  return members.join(",");
}
