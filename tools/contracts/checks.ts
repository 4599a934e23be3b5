import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { repoRoot } from "../repo-root.js";
import { bufBin, buildImage } from "./image.js";

/** Result of a buf check: ok, or the findings buf printed. */
export interface CheckResult {
  readonly ok: boolean;
  readonly output: string;
}

function runBuf(args: string[]): CheckResult {
  const result = spawnSync(bufBin, args, { cwd: repoRoot, encoding: "utf8" });
  if (result.error) throw new Error(`running buf failed: ${result.error.message}`, { cause: result.error });
  return { ok: result.status === 0, output: `${result.stdout}${result.stderr}`.trim() };
}

/** `buf lint` (rules from buf.yaml) on the contracts in `protoDir`. */
export function lintContracts(protoDir = join(repoRoot, "proto")): CheckResult {
  const work = mkdtempSync(join(tmpdir(), "concord-lint-"));
  try {
    const image = join(work, "image.binpb");
    buildImage(protoDir, image);
    return runBuf(["lint", image, "--config", join(repoRoot, "buf.yaml"), "--error-format", "text"]);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** `buf breaking` (rules from buf.yaml): the contracts in `protoDir` against those in `againstDir`. */
export function breakingChanges(protoDir: string, againstDir: string): CheckResult {
  const work = mkdtempSync(join(tmpdir(), "concord-breaking-"));
  try {
    const current = join(work, "current.binpb");
    const previous = join(work, "previous.binpb");
    buildImage(protoDir, current);
    buildImage(againstDir, previous);
    return runBuf(["breaking", current, "--against", previous, "--config", join(repoRoot, "buf.yaml"), "--error-format", "text"]);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Checks proto/ in the work tree against proto/ at a git revision. Returns
 * undefined when that revision has no contracts (nothing to compare).
 */
export function breakingAgainstRevision(revision: string): CheckResult | undefined {
  const work = mkdtempSync(join(tmpdir(), "concord-against-"));
  try {
    const hasProto = spawnSync("git", ["cat-file", "-e", `${revision}:proto`], { cwd: repoRoot }).status === 0;
    if (!hasProto) return undefined;
    execFileSync("sh", ["-c", `git archive "${revision}" proto | tar -x -C "${work}"`], { cwd: repoRoot });
    const againstDir = join(work, "proto");
    if (!existsSync(againstDir)) return undefined;
    return breakingChanges(join(repoRoot, "proto"), againstDir);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
