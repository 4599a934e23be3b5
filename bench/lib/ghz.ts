import { execFile, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "../../tools/repo-root.js";
import { adopt } from "./proc.js";

/** ghz release the bench installs and was measured with. */
export const GHZ_VERSION = "v0.120.0";
const ghzModule = `github.com/bojand/ghz/cmd/ghz@${GHZ_VERSION}`;
const localGhz = join(repoRoot, ".tools", "bin", "ghz");

/**
 * Why $GHZ cannot be the ghz the bench runs (no file there), or undefined when it is unset or can be. The bench
 * refuses to start with it: a GHZ that named nothing was passed over for another ghz, saying nothing.
 */
export function givenGhzProblem(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const given = env.GHZ;
  if (!given) return undefined;
  return existsSync(given) && statSync(given).isFile() ? undefined : `GHZ=${JSON.stringify(given)} names no file; set it to a ghz binary, or unset it to use .tools/bin's or PATH's (installed when missing)`;
}

/** ghz from $GHZ (see givenGhzProblem), <repo>/.tools/bin or PATH; undefined when absent. */
export function findGhz(): string | undefined {
  if (process.env.GHZ) return process.env.GHZ;
  if (existsSync(localGhz)) return localGhz;
  for (const dir of (process.env.PATH ?? "").split(":")) if (dir && existsSync(join(dir, "ghz"))) return join(dir, "ghz");
  return undefined;
}

/**
 * Installs the pinned ghz into <repo>/.tools/bin with `go install` (about a
 * minute and a half the first time, on two cores). Returns its path, or the
 * reason it could not.
 */
export function installGhz(log: (line: string) => void): { path?: string; reason?: string } {
  const go = spawnSync("go", ["version"], { encoding: "utf8" });
  if (go.status !== 0) return { reason: "Go is not installed (ghz is installed with `go install`)" };
  log(`installing ghz ${GHZ_VERSION} into .tools/bin with ${go.stdout.trim()} (once; about 90 s) ...`);
  const r = spawnSync("go", ["install", ghzModule], { env: { ...process.env, GOBIN: join(repoRoot, ".tools", "bin"), GOFLAGS: "-mod=mod" }, encoding: "utf8", timeout: 600_000 });
  if (r.status !== 0 || !existsSync(localGhz)) return { reason: `go install ${ghzModule} failed: ${(r.stderr || r.error?.message || "").trim().split("\n").slice(-3).join(" / ")}` };
  return { path: localGhz };
}

export function ghzVersion(path: string): string {
  try {
    const r = spawnSync(path, ["--version"], { encoding: "utf8" });
    const v = `${r.stdout}${r.stderr}`.trim();
    // `go install` builds report "dev"; the module version is the one pinned.
    return v === "dev" && path === localGhz ? `${GHZ_VERSION} (go install)` : v;
  } catch {
    return "unknown";
  }
}

export interface GhzRun {
  readonly ghz: string;
  readonly protoset: string;
  /** Fully qualified, `pkg.Service.Method`. */
  readonly call: string;
  readonly address: string;
  readonly dataJson: string;
  readonly concurrency: number;
  readonly durationMs: number;
  /** GOMAXPROCS of ghz. */
  readonly cpus: number;
  readonly outFile: string;
}

export interface GhzResult {
  readonly ok: number;
  /** Failed calls, not counting those ghz cancels itself when its duration ends. */
  readonly errors: number;
  /** Calls still in flight when the duration ended, which ghz cancels (reported by it as Unavailable). */
  readonly cancelledAtEnd: number;
  readonly errorCodes: Record<string, number>;
  readonly elapsedMs: number;
  readonly perSecond: number;
  readonly latencyMs: { readonly p50: number; readonly p90: number; readonly p99: number; readonly mean: number; readonly max: number };
}

interface GhzJson {
  count: number;
  total: number;
  average: number;
  slowest: number;
  latencyDistribution: Array<{ percentage: number; latency: number }> | null;
  statusCodeDistribution: Record<string, number> | null;
  errorDistribution: Record<string, number> | null;
}

/**
 * One ghz run, closed loop: `concurrency` workers on one connection, each
 * with one call in flight, for a fixed duration. Rate counts OK responses
 * only; latency percentiles are ghz's, over OK responses (errors are not
 * counted in its statistics by default).
 */
export function runGhz(run: GhzRun): Promise<GhzResult> {
  const args = [
    "--insecure",
    "--protoset", run.protoset,
    "--call", run.call,
    "-d", run.dataJson,
    "-c", String(run.concurrency),
    "--connections", "1",
    "-z", `${run.durationMs}ms`,
    "--cpus", String(run.cpus),
    "--timeout", "10s",
    "-O", "json",
    "-o", run.outFile,
    run.address,
  ];
  return new Promise((resolve, reject) => {
    const child = execFile(run.ghz, args, { maxBuffer: 16 << 20, timeout: run.durationMs + 30_000 }, (err, _stdout, stderr) => {
      // ghz exits 1 when some calls failed; the report still says how many.
      if (!existsSync(run.outFile)) return reject(new Error(`ghz failed: ${err?.message ?? ""} ${stderr}`));
      const json = JSON.parse(readFileSync(run.outFile, "utf8")) as GhzJson;
      rmSync(run.outFile, { force: true });
      const codes = json.statusCodeDistribution ?? {};
      const ok = codes.OK ?? 0;
      const failed = Object.entries(codes).reduce((n, [code, count]) => (code === "OK" ? n : n + count), 0);
      // At the end of -z, ghz closes its connection under the calls in flight;
      // they fail as Unavailable with these messages. They are not the server's.
      const cancelledAtEnd = Object.entries(json.errorDistribution ?? {})
        .filter(([message]) => /connection is draining|use of closed network connection|transport is closing/.test(message))
        .reduce((n, [, count]) => n + count, 0);
      const errors = failed - cancelledAtEnd;
      const elapsedMs = json.total / 1e6;
      const pct = (p: number) => (json.latencyDistribution?.find((d) => d.percentage === p)?.latency ?? Number.NaN) / 1e6;
      resolve({
        ok,
        errors,
        cancelledAtEnd,
        errorCodes: Object.fromEntries(Object.entries(codes).filter(([c]) => c !== "OK")),
        elapsedMs,
        perSecond: (ok * 1000) / elapsedMs,
        latencyMs: { p50: pct(50), p90: pct(90), p99: pct(99), mean: json.average / 1e6, max: json.slowest / 1e6 },
      });
    });
    adopt(child);
  });
}
