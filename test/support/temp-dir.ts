import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, onTestFinished } from "vitest";

/** A directory under the system temp dir; `remove` deletes it with everything inside. */
export interface TempDir {
  readonly path: string;
  remove(): void;
}

/** Creates a fresh temporary directory; the caller removes it. */
export function createTempDir(prefix = "concord-test-"): TempDir {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/**
 * Creates a temporary directory that is removed after the current test file,
 * so a test cannot forget to clean up; called inside a test, once that test
 * has finished (vitest takes an afterAll there without a word and never runs
 * it: such directories, development keys in them, stayed in the temp dir).
 */
export function tempDirForSuite(prefix = "concord-test-"): string {
  const dir = createTempDir(prefix);
  if (expect.getState().currentTestName === undefined) afterAll(() => dir.remove());
  else onTestFinished(() => dir.remove());
  return dir.path;
}
