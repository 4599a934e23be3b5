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
