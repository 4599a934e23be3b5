import { chmodSync, statSync } from "node:fs";

/** A folder or file found open to other users, and narrowed to its owner's alone. */
export interface Narrowed {
  readonly file: string;
  /** Its mode before (permission bits). */
  readonly was: number;
  /** Its mode now. */
  readonly now: number;
}

/**
 * Narrows each of `paths` that other users may read or write to `mode`,
 * returning those it narrowed; a path not there is left out. Throws what
 * chmod throws.
 */
export function narrowOwnerOnly(paths: readonly string[], mode: number): Narrowed[] {
  const narrowed: Narrowed[] = [];
  for (const file of paths) {
    const was = statSync(file, { throwIfNoEntry: false })?.mode;
    if (was === undefined || (was & 0o077) === 0) continue;
    chmodSync(file, mode);
    narrowed.push({ file, was: was & 0o777, now: mode });
  }
  return narrowed;
}

/** The line a start prints for a secret it narrowed, `shown` as its path is shown: what it was, and what to do if others read it. */
export function narrowedLine({ file, was, now }: Narrowed, shown: string): string {
  const octal = (mode: number) => `0${mode.toString(8)}`;
  const which = now === 0o700 ? "the keys in it, stop, delete it and start again to have new ones made" : "it, stop, delete it and start again to have a new one made";
  return `${shown} was mode ${octal(was)}, which let other users read it; made it ${octal(now)} (if they may have read ${which})`;
}
