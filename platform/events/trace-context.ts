import { randomBytesFromPool as randomBytes } from "../ids/random-pool.js";

// W3C Trace Context: version-traceid-parentid-flags, lower-case hex.
const traceparentPattern = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** True for a W3C `traceparent` a receiver may continue (not version ff, no all-zero ids). */
export function isTraceparent(value: string): boolean {
  const match = traceparentPattern.exec(value);
  if (!match) return false;
  const [, version, traceId, parentId] = match;
  return version !== "ff" && !/^0+$/.test(traceId) && !/^0+$/.test(parentId);
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
