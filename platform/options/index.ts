/**
 * Option checks for the platform's factories (`createX(options)`): an
 * unknown option is an error rather than silently ignored, and numbers are
 * checked with the name of the factory and the option in the message.
 */

/** Throws, naming the factory and the option, when `options` has a key not in `known`. */
export function checkOptions(factory: string, options: object, known: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw new Error(`${factory}: unknown option ${key} (it takes ${known.join(", ")})`);
  }
}

/** A whole number above 0: `value`, or `fallback` when it is undefined. Throws, naming factory and option, otherwise. */
export function positiveInteger(factory: string, name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${factory}: invalid ${name}: ${String(v)} (a whole number above 0)`);
  return v;
}

/** A whole number of 0 or more: `value`, or `fallback` when it is undefined. Throws, naming factory and option, otherwise. */
export function nonNegativeInteger(factory: string, name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < 0) throw new Error(`${factory}: invalid ${name}: ${String(v)} (a whole number, 0 or more)`);
  return v;
}

/** The longest a Node.js timer waits, 2^31 - 1 ms (about 24.8 days): setTimeout fires a longer one after 1 ms. */
export const longestTimerMs = 2 ** 31 - 1;

/** A timer's wait in milliseconds, 0 to `longestTimerMs`: `value`, or `fallback` when it is undefined. Throws, naming factory and option, otherwise. */
export function timerMs(factory: string, name: string, value: number | undefined, fallback: number): number {
  const v = nonNegativeInteger(factory, name, value, fallback);
  if (v > longestTimerMs) throw new Error(`${factory}: invalid ${name}: ${v} (at most ${longestTimerMs}, about 24.8 days, the longest a timer waits)`);
  return v;
}
