import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { isAbsolute, join, relative } from "node:path";
import { createRegistry, type DescFile } from "@bufbuild/protobuf";
import { parse } from "yaml";
import { repoRoot } from "../repo-root.js";
import { narrowerAccess } from "./access-changes.js";
import { unboundedInputFields } from "./request-bounds.js";
import { incompatibleEventChanges } from "./event-changes.js";
import { bufBin, buildImage } from "./image.js";
import { tighterValidationRules } from "./rule-changes.js";
import { ContractError } from "../protoc-gen-events/contract-error.js";
import { loadImageFiles, readEventsManifest } from "./sdk-manifest.js";

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

/**
 * buf.yaml as JSON for buf's --config, without its `deps`: the one entry
 * there is no module but the message buf prints when run alone on proto/,
 * which it refuses before reading anything else (see buf.yaml).
 */
function bufConfig(): string {
  const config = parse(readFileSync(join(repoRoot, "buf.yaml"), "utf8")) as Record<string, unknown>;
  delete config.deps;
  return JSON.stringify(config);
}

/**
 * `buf lint` (rules from buf.yaml) on the contracts in `protoDir`, then
 * the events plugin's checks of their Concord options (streams, events'
 * subjects, subscriptions: what `npm run gen` and breakingChanges refuse)
 * and the lists of requests and of consumed events with no bound on their
 * size (request-bounds.ts), each finding naming its file as
 * breakingChanges' do: as opened from the repository's root
 * (proto/shop/...), or by its full path when `protoDir` is elsewhere.
 */
export function lintContracts(protoDir = join(repoRoot, "proto")): CheckResult {
  const work = mkdtempSync(join(tmpdir(), "concord-lint-"));
  try {
    const image = join(work, "image.binpb");
    buildImage(protoDir, image);
    const lint = runBuf(["lint", image, "--config", bufConfig(), "--error-format", "json"]);
    const shown = shownPath(protoDir);
    const files = loadImageFiles(readFileSync(image));
    const broken = eventContractProblems(files).map(shown);
    const unbounded = unboundedInputFields(files).map(shown);
    const output = [bufFindings(lint.output, shown), ...broken, ...unbounded].filter((part) => part !== "").join("\n");
    return { ok: lint.ok && broken.length === 0 && unbounded.length === 0, output };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The problems the events plugin finds in the Concord options of `files`, each starting with its file, line and column; none when they pass. */
function eventContractProblems(files: readonly DescFile[]): readonly string[] {
  try {
    readEventsManifest(files);
    return [];
  } catch (err) {
    if (err instanceof ContractError) return err.problems;
    throw err;
  }
}

/** Under the findings of a failed check, each of which says what to do instead. */
export const breakingAdvice = `Each finding says what to do instead; README.md, "Breaking changes", says more. A change that must ship all the same
(an RPC or an event nothing uses any more, a rule every sender keeps to) goes in a commit of its own that lists its file
under breaking: ignore in buf.yaml, relative to proto/ (shop/...), taken out again in the next commit.`;

const newField = "Instead: add a field of the new type, under a new number and name, beside it; write both while builds that read the old one run, then remove the old one with its number and name reserved.";
const newMethod = "Instead: add the new RPC (or service) beside it, move its callers, then remove the old one in a commit that lists its file under breaking: ignore.";

/** What to do instead, by the rule of buf's that a finding breaks (buf.yaml's `breaking.use`); a field or an enum value deleted is deletedFieldAdvice's or deletedEnumValueAdvice's. */
const bufAdvice: Record<string, string> = {
  ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED: "Instead: keep the value until no running build sends or reads it, then remove it with its number and name reserved.",
  ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED: "Instead: keep the value until no running build sends or reads it, then remove it with its number and name reserved.",
  FIELD_WIRE_JSON_COMPATIBLE_TYPE: newField,
  FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY: newField,
  FIELD_SAME_ONEOF: newField,
  FIELD_SAME_DEFAULT: newField,
  MESSAGE_SAME_REQUIRED_FIELDS: newField,
  FIELD_SAME_NAME: "Instead: keep the name, which JSON and update masks carry; a field under a new name is a new field, added beside the old one.",
  FIELD_SAME_JSON_NAME: "Instead: keep the name, which JSON and update masks carry; a field under a new name is a new field, added beside the old one.",
  ENUM_VALUE_SAME_NAME: "Instead: keep the name, which JSON reads; a value under a new name needs a new number.",
  RESERVED_MESSAGE_NO_DELETE: "Instead: keep the reservation: a number or name an older build may still send is never used again.",
  RESERVED_ENUM_NO_DELETE: "Instead: keep the reservation: a number or name an older build may still send is never used again.",
  RPC_NO_DELETE: newMethod,
  PACKAGE_SERVICE_NO_DELETE: newMethod,
  RPC_SAME_REQUEST_TYPE: newMethod,
  RPC_SAME_RESPONSE_TYPE: newMethod,
  RPC_SAME_CLIENT_STREAMING: newMethod,
  RPC_SAME_SERVER_STREAMING: newMethod,
  RPC_SAME_IDEMPOTENCY_LEVEL: "Instead: keep the level, which clients read to retry; a method with another one is a new RPC, added beside it.",
  FILE_SAME_PACKAGE: "Instead: keep the package: it is part of every type's and method's full name; a new package is new types, added beside the old ones.",
};

/** One finding of buf's, as `--error-format json` prints it. */
interface BufFinding {
  path?: string;
  start_line?: number;
  start_column?: number;
  type?: string;
  message?: string;
}

/**
 * buf's JSON findings as its text ones (`file:line:column:message`, the
 * file as `shown` names it), each followed by `after(finding)` where it is
 * given; any other line as it is.
 */
function bufFindings(output: string, shown: (file: string) => string, after?: (finding: BufFinding) => string): string {
  return output
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      let finding: BufFinding;
      try {
        finding = JSON.parse(line) as BufFinding;
      } catch {
        return line;
      }
      const text = `${shown(finding.path ?? "")}:${finding.start_line ?? 1}:${finding.start_column ?? 1}:${finding.message}`;
      return after ? `${text} ${after(finding)}` : text;
    })
    .join("\n");
}

/** How buf words a field deleted: its number, its name and its message's name within the package. */
const deletedField = /^Previously present field "(\d+)" with name "([^"]+)" on message "([^"]+)" was deleted/;

/**
 * What to do instead of a field deleted, with its own number and name to
 * reserve; where the message in `now` holds a field of that name under
 * another number, the field was renumbered, which reserving cannot mend
 * (protoc refuses a reserved name that a field still has).
 */
function deletedFieldAdvice(finding: BufFinding, now: readonly DescFile[]): string | undefined {
  const [, number, name, message] = deletedField.exec(finding.message ?? "") ?? [];
  if (number === undefined || name === undefined) return undefined;
  const reserve = `remove it with its number and name reserved (reserved ${number}; reserved "${name}";)`;
  const file = now.find((f) => f.proto.name === finding.path);
  const moved = file && createRegistry(file).getMessage(`${file.proto.package}.${message}`)?.fields.find((f) => f.name === name);
  if (moved)
    return `It was renumbered: "${name}" is now field ${moved.number}, which running builds skip as unknown, and they find ${number} unset. Instead: give it back number ${number}; to move it, add a field under a new number and a new name beside it, write both while builds that read this one run, then ${reserve}.`;
  return `Instead: keep it until no running build reads it, then ${reserve}.`;
}

/** How buf words an enum value deleted: its number and its enum's name within the package. */
const deletedEnumValue = /^Previously present enum value "(-?\d+)" on enum "([^"]+)" was deleted/;

/**
 * What to do instead of an enum value deleted, as deletedFieldAdvice does
 * for a field: its name, read from `then`, is to be reserved with its
 * number, unless the enum in `now` still has it under another number.
 */
function deletedEnumValueAdvice(finding: BufFinding, now: readonly DescFile[], then: readonly DescFile[]): string | undefined {
  const [, number, enumName] = deletedEnumValue.exec(finding.message ?? "") ?? [];
  const pkg = [...now, ...then].find((f) => f.proto.name === finding.path)?.proto.package;
  if (number === undefined || pkg === undefined) return undefined;
  const typeName = `${pkg}.${enumName}`;
  const value = createRegistry(...then).getEnum(typeName)?.values.find((v) => v.number === Number(number));
  if (!value) return undefined;
  const reserve = `remove it with its number and name reserved (reserved ${number}; reserved "${value.name}";)`;
  const moved = createRegistry(...now).getEnum(typeName)?.values.find((v) => v.name === value.name);
  if (moved)
    return `It was renumbered: ${value.name} is now ${moved.number}, a value running builds do not know, and they send ${number} for it. Instead: give it back number ${number}; a value under a new number takes a new name, beside it; once no running build sends or reads this one, ${reserve}.`;
  return `Instead: keep the value until no running build sends or reads it, then ${reserve}.`;
}

/** What to do instead of what a finding of buf breaking breaks, `now` and `then` being the contracts as changed and as before. */
const adviceFor = (finding: BufFinding, now: readonly DescFile[], then: readonly DescFile[]): string =>
  deletedFieldAdvice(finding, now) ??
  deletedEnumValueAdvice(finding, now, then) ??
  bufAdvice[finding.type ?? ""] ??
  `Instead: see README.md, "Breaking changes" (buf's rule ${finding.type}).`;

/**
 * `buf breaking` (rules from buf.yaml), then the events' own rules
 * (event-changes.ts), the validation rules' (rule-changes.ts) and the
 * methods' access (access-changes.ts): the
 * contracts in `protoDir` against those in `againstDir`, every finding of
 * each in `output`, each saying what to do instead, then breakingAdvice.
 * A finding names its file as one can open it from the repository's root
 * (proto/shop/...), or by its full path when `protoDir` is elsewhere; one
 * of an event removed, where `againstDir` declared it, saying so with
 * `againstName` (the revision it was taken from). The checks skip the
 * files under `ignored` (buf.yaml's `breaking.ignore`, as buf does), and a
 * path there that names no contract file or folder is a finding itself.
 */
export function breakingChanges(protoDir: string, againstDir: string, againstName = againstDir, ignored = breakingIgnored()): CheckResult {
  const work = mkdtempSync(join(tmpdir(), "concord-breaking-"));
  try {
    const current = join(work, "current.binpb");
    const previous = join(work, "previous.binpb");
    buildImage(protoDir, current);
    buildImage(againstDir, previous);
    const buf = runBuf(["breaking", current, "--against", previous, "--config", bufConfig(), "--against-config", bufConfig(), "--error-format", "json"]);
    const [now, then] = [loadImageFiles(readFileSync(current)), loadImageFiles(readFileSync(previous))];
    const shown = shownPath(protoDir);
    // The contracts' own problems, which `npm run gen` reports too, name their files as the findings do.
    const broken = eventContractProblems(now);
    if (broken.length > 0) throw new ContractError(broken.map(shown));
    const found = [...incompatibleEventChanges(now, then, ignored, againstName), ...tighterValidationRules(now, then, ignored), ...narrowerAccess(now, then, ignored)];
    const misnamed = ignoredNothing(ignored, [...now, ...then]);
    if (buf.ok && found.length === 0 && misnamed.length === 0) return buf;
    return { ok: false, output: `${[...misnamed, bufFindings(buf.output, shown, (finding) => adviceFor(finding, now, then)), ...found.map(shown)].filter((part) => part !== "").join("\n")}\n\n${breakingAdvice}` };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Puts before a path relative to `protoDir` (or a finding that starts with
 * one, as buf's and this check's do) the folder as a user at the
 * repository's root names it: `proto/`, or the full path of a folder elsewhere.
 */
function shownPath(protoDir: string): (file: string) => string {
  const dir = relative(repoRoot, protoDir);
  const base = dir === "" ? "" : dir.startsWith("..") || isAbsolute(dir) ? protoDir : dir;
  return (file) => (base === "" ? file : `${base}/${file}`);
}

/**
 * A line for each path of `ignored` that is neither a file of `files` nor a
 * folder holding one: buf and these checks would ignore nothing by it, and a
 * change meant to ship under it would be refused with no word why (a path
 * written from the repository's root, as the findings name files, is one).
 */
function ignoredNothing(ignored: readonly string[], files: readonly DescFile[]): string[] {
  const names = files.map((f) => f.proto.name);
  const contracts = (path: string): boolean => names.some((name) => name === path || name.startsWith(`${path.replace(/\/+$/, "")}/`));
  return ignored
    .filter((path) => !contracts(path))
    .map((path) => {
      const fromProto = path.startsWith("proto/") && contracts(path.slice("proto/".length)) ? ` (${path.slice("proto/".length)})` : "";
      return `buf.yaml: breaking: ignore lists ${path}, which is no file or folder of the contracts, so it ignores nothing: its paths are relative to proto/${fromProto}`;
    });
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
    // The commit's id, not its name, goes on to git and no shell sees either: a branch may be named `x$(rm${IFS}-r${IFS}~)`.
    const commit = execFileSync("git", ["rev-parse", "--verify", "--quiet", `${revision}^{commit}`], { cwd: repoRoot, encoding: "utf8" }).trim();
    const hasProto = spawnSync("git", ["cat-file", "-e", `${commit}:proto`], { cwd: repoRoot }).status === 0;
    if (!hasProto) return undefined;
    const archive = execFileSync("git", ["archive", "--format=tar", commit, "proto"], { cwd: repoRoot, maxBuffer: 1 << 30 });
    execFileSync("tar", ["-x", "-C", work], { input: archive });
    const againstDir = join(work, "proto");
    if (!existsSync(againstDir)) return undefined;
    return breakingChanges(join(repoRoot, "proto"), againstDir, revision);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
