import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../tools/repo-root.js";

/** A process as /proc shows it: its start time tells it from a later process given the same pid. */
interface Seen {
  readonly pid: number;
  readonly startTime: string;
  readonly command: string;
}

/** /proc/<pid>/stat's fields after the command name: state is the first, start time the 20th. */
function statOf(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** Every process below `pid`, children of children included. */
function descendants(pid: number): Seen[] {
  let children: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      children.push(...readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").split(" ").filter(Boolean).map(Number));
    }
  } catch {
    children = [];
  }
  return children.flatMap((child) => {
    const stat = statOf(child);
    if (!stat) return [];
    let command = "";
    try {
      command = readFileSync(`/proc/${child}/cmdline`, "utf8").replaceAll("\0", " ");
    } catch {
      // gone meanwhile
    }
    return [{ pid: child, startTime: stat[19], command }, ...descendants(child)];
  });
}

/** Still running: there, not a zombie, and the same process (not a new one with its pid). */
function alive(p: Seen): boolean {
  const stat = statOf(p.pid);
  return stat !== undefined && stat[0] !== "Z" && stat[19] === p.startTime;
}

// Both describe blocks run bench/run.ts, and the first makes dist/ look stale for a while, which the second's run would
// refuse: in one file they run one after the other.
describe("npx tsx bench/run.ts with dist/ older than the sources", () => {
  it("refuses to run, naming the source and the command that builds (exit 2)", () => {
    const compiled = join(repoRoot, "dist", "platform", "events", "index.js");
    const { atime, mtime } = statSync(compiled);
    const source = statSync(join(repoRoot, "platform", "events", "index.ts")).mtime;
    // Put back however the run ends: the next bench runs from this dist/.
    utimesSync(compiled, atime, new Date(source.getTime() - 60_000));
    try {
      const result = spawnSync(process.execPath, ["--import", "tsx", "bench/run.ts", "--only", "grpc", "--runs", "1", "--quick", "--no-ghz"], { cwd: repoRoot, encoding: "utf8", timeout: 30_000 });
      // Another source changed since the last build would be named instead, whichever comes first.
      expect(result.stderr.trim()).toMatch(/^bench: dist\/ is older than the sources \((platform|services|gen)\/\S+\.ts changed since it was compiled to dist\/\S+\.js\); run `npm run build` first \(`npm run bench` builds before it runs\)$/);
      expect(result.stdout).toBe("");
      expect(result.status).toBe(2);
    } finally {
      utimesSync(compiled, atime, mtime);
    }
  });
});

/** Names under `dir` and one level below it. */
function entriesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => [e.name, ...(e.isDirectory() ? readdirSync(join(dir, e.name)).map((name) => join(e.name, name)) : [])]);
}

describe("npx tsx bench/run.ts interrupted", () => {
  const cases = [
    // By this line it runs a nats-server, the product service and the bare server.
    { signal: "SIGTERM", only: "grpc", ready: (stdout: string) => stdout.includes("GetProduct response"), running: ["nats-server", join("dist", "services", "products", "main.js"), "bare-grpc-server.ts"] },
    { signal: "SIGINT", only: "grpc", ready: (stdout: string) => stdout.includes("GetProduct response"), running: ["nats-server", join("dist", "services", "products", "main.js"), "bare-grpc-server.ts"] },
    // The publishing worker with the SQLite outbox of its own temp dir.
    { signal: "SIGTERM", only: "publish", ready: (_: string, entries: string[]) => entries.some((name) => /concord-bench-outbox-/.test(name)), running: ["nats-server", "events-publish.ts"] },
    // A local PostgreSQL server up, its data dir under the run's temp dir (not a temp dir of its own, which is not the run's to remove).
    {
      signal: "SIGTERM",
      only: "postgres",
      ready: (stdout: string, entries: string[]) => stdout.includes("PostgreSQL on 127.0.0.1:") && entries.some((name) => /^concord-bench-[^/]+\/postgres$/.test(name)),
      running: [join("bin", "postgres")],
    },
  ] as const;
  it.each(cases)(
    "stops on $signal during $only every process it started, removes its temp dir and its workers' and exits 128 + the signal's number, writing no figures",
    { timeout: 180_000 },
    async ({ signal, only, ready, running }) => {
      const scratch = mkdtempSync(join(os.tmpdir(), "concord-bench-signal-"));
      // Open to other users: run as root, the bench runs its PostgreSQL server as the postgres user, in a data dir below.
      chmodSync(scratch, 0o755);
      const out = join(scratch, "results");
      // Its temp dir goes under TMPDIR: here, where the test can see what is left.
      const bench = spawn(process.execPath, ["--import", "tsx", "bench/run.ts", "--quick", "--only", only, "--no-ghz", "--out", out], {
        cwd: repoRoot,
        env: { ...process.env, TMPDIR: scratch },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      bench.stdout.on("data", (d) => (stdout += d));
      bench.stderr.on("data", (d) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => bench.once("exit", (code) => resolve(code)));
      const benchEntries = () => entriesUnder(scratch).filter((name) => name.startsWith("concord-bench-"));
      let seen: Seen[] = [];
      try {
        await expect.poll(() => (bench.exitCode === null ? ready(stdout, benchEntries()) : `exited with ${bench.exitCode}: ${stderr}`), { timeout: 120_000, interval: 100 }).toBe(true);
        seen = descendants(bench.pid!);
        for (const command of running) expect(seen.some((p) => p.command.includes(command)), command).toBe(true);

        bench.kill(signal);
        const code = await exited;
        // What its own tsx loader ran (esbuild) ends once it is gone; give it a moment.
        await expect.poll(() => seen.filter(alive).map((p) => `${p.pid} ${p.command}`), { timeout: 10_000 }).toEqual([]);
        expect(benchEntries()).toEqual([]);
        expect(entriesUnder(scratch).filter((name) => name.startsWith("concord-pg-"))).toEqual([]);
        expect(readdirSync(scratch)).not.toContain("results");
        expect(code).toBe(128 + os.constants.signals[signal]);
        expect(stderr).toMatch(new RegExp(`^bench: interrupted by ${signal}; stopped what it started, removed \\S+, wrote no figures$`, "m"));
      } finally {
        if (bench.exitCode === null && bench.signalCode === null) bench.kill("SIGKILL");
        for (const p of seen.filter(alive)) process.kill(p.pid, "SIGKILL");
        rmSync(scratch, { recursive: true, force: true });
      }
    },
  );
});
