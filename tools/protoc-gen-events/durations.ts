/** google.protobuf.Duration values of the options, as the milliseconds the specs carry. */
import type { Duration } from "@bufbuild/protobuf/wkt";

/** Milliseconds of a duration, or the reason it cannot be used as such. */
export type Millis = { readonly ok: true; readonly ms: number } | { readonly ok: false; readonly reason: string };

/**
 * Converts a duration to whole milliseconds. Negative durations, fractions
 * of a millisecond and values beyond Number.MAX_SAFE_INTEGER are refused.
 */
export function toMillis(duration: Duration): Millis {
  const { seconds, nanos } = duration;
  if (seconds < 0n || nanos < 0) return { ok: false, reason: "is negative" };
  if (nanos % 1_000_000 !== 0) return { ok: false, reason: "is not a whole number of milliseconds" };
  const ms = seconds * 1000n + BigInt(nanos / 1_000_000);
  if (ms > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, reason: "is too long" };
  return { ok: true, ms: Number(ms) };
}
