import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "../../tools/repo-root.js";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface HotSpot {
  /** Function name and where it is (file:line, or package for node_modules). */
  readonly name: string;
  readonly selfMs: number;
  /** Share of the busy (non-idle) time. */
  readonly selfPct: number;
}

export interface ProfileSummary {
  readonly file: string;
  readonly totalMs: number;
  readonly busyMs: number;
  /** Top functions by self time. */
  readonly functions: HotSpot[];
  /** Self time grouped by package (node_modules), repo folder, or node internals. */
  readonly modules: HotSpot[];
  /** Top functions by inclusive time (self plus callees), repo code and packages only. */
  readonly inclusive: HotSpot[];
}

const idle = new Set(["(idle)", "(program)"]);

function moduleOf(url: string, fn: string): string {
  if (!url) return fn.startsWith("(") ? fn : "(native)";
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1];
  if (url.startsWith("node:")) return "node:" + (url.slice(5).split("/")[0] === "internal" ? "internal" : url.slice(5));
  const path = url.replace(/^file:\/\//, "").replace(`${repoRoot}/`, "");
  return path.split("/").slice(0, 2).join("/");
}

/** "name file:line:column" of a profile node; lines and columns are of the code V8 ran (tsx's output for .ts files). */
function nameOf(node: ProfileNode): string {
  const { functionName, url, lineNumber, columnNumber } = node.callFrame;
  const where = url ? url.replace(/^file:\/\//, "").replace(`${repoRoot}/`, "").replace(/.*node_modules\//, "") + `:${lineNumber + 1}:${columnNumber + 1}` : "";
  return `${functionName || "(anonymous)"}${where ? ` ${where}` : ""}`;
}

/** Self time per function and per module of a V8 .cpuprofile (written by `node --cpu-prof`). */
export function summariseProfile(file: string, top = 15, inclusiveFilter: (name: string) => boolean = () => true): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0));
  let totalUs = 0;
  let busyUs = 0;
  const fns = new Map<string, number>();
  const mods = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    totalUs += us;
    const { functionName, url, lineNumber } = node.callFrame;
    if (idle.has(functionName)) continue;
    busyUs += us;
    const name = nameOf(node);
    fns.set(name, (fns.get(name) ?? 0) + us);
    const mod = moduleOf(url, functionName);
    mods.set(mod, (mods.get(mod) ?? 0) + us);
  }
  // Inclusive: each sample counts once for every distinct function on its stack.
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, number>();
  for (const [id, us] of selfUs) {
    if (idle.has(byId.get(id)?.callFrame.functionName ?? "")) continue;
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const n = byId.get(at)!;
      const url = n.callFrame.url;
      if (!url || url.startsWith("node:")) continue;
      seen.add(nameOf(n));
    }
    for (const k of seen) if (inclusiveFilter(k)) incl.set(k, (incl.get(k) ?? 0) + us);
  }
  const rank = (m: Map<string, number>): HotSpot[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, selfMs: us / 1000, selfPct: busyUs ? (100 * us) / busyUs : 0 }));
  return { file, totalMs: totalUs / 1000, busyMs: busyUs / 1000, functions: rank(fns), modules: rank(mods), inclusive: rank(incl) };
}

/** The summary as indented text lines for the console. */
export function formatProfile(title: string, s: ProfileSummary): string {
  const lines = [`${title}: ${s.file}`, `  busy ${s.busyMs.toFixed(0)} ms of ${s.totalMs.toFixed(0)} ms sampled`, "  self time by module:"];
  for (const m of s.modules.slice(0, 8)) lines.push(`    ${m.selfPct.toFixed(1).padStart(5)}%  ${m.name}`);
  lines.push("  self time by function:");
  for (const f of s.functions) lines.push(`    ${f.selfPct.toFixed(1).padStart(5)}%  ${f.name}`);
  lines.push("  inclusive time (self + callees) by function:");
  for (const f of s.inclusive) lines.push(`    ${f.selfPct.toFixed(1).padStart(5)}%  ${f.name}`);
  return lines.join("\n");
}

/**
 * The main thread's profile in a process's profile directory (names are
 * CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile; the main thread is 0).
 */
export function profileOf(dir: string): string {
  const files = readdirSync(dir).filter((f) => f.endsWith(".cpuprofile"));
  const main = files.find((f) => f.split(".")[4] === "0") ?? files[0];
  if (!main) throw new Error(`no .cpuprofile in ${dir} (did the process exit cleanly?)`);
  return join(dir, main);
}

/** The profile directory of process `name` in this run, when profiling. */
export const profileDirOf = (profileDir: string | undefined, name: string): string | undefined => (profileDir ? join(profileDir, name) : undefined);

/** Summarises and logs the main-thread profile of process `name`; undefined when not profiling or none was written. */
export function reportProfile(profileDir: string | undefined, name: string, log: (line: string) => void, title = name): ProfileSummary | undefined {
  if (!profileDir) return undefined;
  try {
    const s = summariseProfile(profileOf(join(profileDir, name)), 15, (fn) => /(platform|services|gen|bench)\//.test(fn) || !fn.includes("/"));
    log(formatProfile(`  CPU profile of ${title}`, s));
    return s;
  } catch (err) {
    log(`  no CPU profile for ${name}: ${(err as Error).message}`);
    return undefined;
  }
}
