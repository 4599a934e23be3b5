import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { repoRoot } from "../repo-root.js";
import { incompatibleEventChanges } from "./event-changes.js";
import { bufBin, buildImage } from "./image.js";
import { tighterValidationRules } from "./rule-changes.js";
import { loadImageFiles } from "./sdk-manifest.js";

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

/** What to do instead of a breaking change, under the findings of a failed check. */
export const breakingAdvice = `Keep what the running version uses: reserve a removed field's number and name (reserved 5; reserved "lines_version";)
and add a new field rather than retyping one; put a changed RPC or event beside the old one, under a new name,
and remove the old one once nothing calls or consumes it; keep a subscription's durable name; tighten a validation rule
only once every sender keeps to it, in a commit of its own. README.md, "Breaking changes", says how.`;

/**
 * `buf breaking` (rules from buf.yaml), then the events' own rules
 * (event-changes.ts) and the validation rules' (rule-changes.ts): the
 * contracts in `protoDir` against those in `againstDir`, every finding of
 * each in `output`, then breakingAdvice.
 */
export function breakingChanges(protoDir: string, againstDir: string): CheckResult {
  const work = mkdtempSync(join(tmpdir(), "concord-breaking-"));
  try {
    const current = join(work, "current.binpb");
    const previous = join(work, "previous.binpb");
    buildImage(protoDir, current);
    buildImage(againstDir, previous);
    const buf = runBuf(["breaking", current, "--against", previous, "--config", join(repoRoot, "buf.yaml"), "--error-format", "text"]);
    const [now, then, ignored] = [loadImageFiles(readFileSync(current)), loadImageFiles(readFileSync(previous)), breakingIgnored()];
    const found = [...incompatibleEventChanges(now, then, ignored), ...tighterValidationRules(now, then, ignored)];
    if (buf.ok && found.length === 0) return buf;
    return { ok: false, output: `${[buf.output, ...found].filter((part) => part !== "").join("\n")}\n\n${breakingAdvice}` };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The paths buf.yaml's `breaking.ignore` lists, relative to proto/. */
function breakingIgnored(): string[] {
  const config = parse(readFileSync(join(repoRoot, "buf.yaml"), "utf8")) as { breaking?: { ignore?: unknown } } | null;
  const ignore = config?.breaking?.ignore;
  return Array.isArray(ignore) ? ignore.filter((p): p is string => typeof p === "string") : [];
}

/**
 * What `npm run breaking` compares with `revision`, for its messages:
 * `proto/ at HEAD (abc1234) against HEAD~1 (def5678)` when neither proto/
 * nor buf.yaml has uncommitted changes; else proto/ as the work tree holds
 * it, naming the files changed, and, when `revision` is not HEAD, that the
 * changes committed since are compared together with them.
 */
export function comparedContracts(revision: string, root = repoRoot): string {
  const git = (...args: string[]): string => execFileSync("git", args, { cwd: root, encoding: "utf8" });
  const commit = (rev: string): string => git("rev-parse", "--short", "--verify", `${rev}^{commit}`).trim();
  const against = `${revision} (${commit(revision)})`;
  const entries = git("status", "--porcelain", "-z", "--untracked-files=all", "--", "proto", "buf.yaml").split("\0");
  const changed: string[] = [];
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    if (entry.length < 4) continue;
    changed.push(entry.slice(3));
    // A rename or a copy is followed by the path it came from.
    if (entry[0] === "R" || entry[0] === "C") i++;
  }
  if (changed.length === 0) return `proto/ at HEAD (${commit("HEAD")}) against ${against}`;
  const named = changed.length > 3 ? `${changed.slice(0, 3).join(", ")} and ${changed.length - 3} more` : changed.join(", ");
  const since = commit(revision) === commit("HEAD") ? "" : `: the changes committed since ${revision} and the uncommitted ones together (npm run breaking -- HEAD compares the uncommitted ones alone)`;
  return `proto/ as the work tree holds it, uncommitted changes to ${named} included, against ${against}${since}`;
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
