import { type ChildProcess, fork, spawn } from "node:child_process";
import { closeSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { constants } from "node:os";
import { join } from "node:path";
import { childEnding } from "../../tools/child-ending.js";
import { repoRoot } from "../../tools/repo-root.js";

/** Every process the bench started, killed on exit whatever happens. */
const started = new Set<ChildProcess>();
const running = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;
process.once("exit", killStarted);
/** Set by `stopStarted`: from then on nothing new starts. */
let stopping = false;

/** SIGKILL to every process the bench started that still runs. */
export function killStarted(): void {
  for (const child of started) if (running(child)) child.kill("SIGKILL");
}

/**
 * Stops every process the bench started that still runs (SIGTERM, SIGKILL
 * after `graceMs`), resolved once all have exited. From then on
 * `startProcess`, `runWorker` and `adopt` refuse to start another, so a
 * scenario carrying on meanwhile cannot leave one behind.
 */
export async function stopStarted(graceMs = 5_000): Promise<void> {
  stopping = true;
  const children = [...started].filter(running);
  const exits = children.map((child) => new Promise<void>((resolve) => (running(child) ? child.once("exit", () => resolve()) : resolve())));
  for (const child of children) child.kill("SIGTERM");
  const timer = setTimeout(killStarted, graceMs);
  await Promise.all(exits);
  clearTimeout(timer);
}

function refuseWhenStopping(what: string): void {
  if (stopping) throw new Error(`not starting ${what}: the bench is stopping`);
}

/** Counts a child started elsewhere (ghz) among the bench's processes, stopped and killed with them; kills it when the bench is stopping. */
export function adopt(child: ChildProcess): void {
  if (stopping) {
    child.kill("SIGKILL");
    return;
  }
  started.add(child);
  child.once("exit", () => started.delete(child));
}

export { freePort } from "../../tools/free-port.js";

export interface MemoryReading {
  /** Resident set size now, MiB. */
  readonly rssMiB: number;
  /** Peak resident set size since the process started (VmHWM), MiB. */
  readonly hwmMiB: number;
  /** Of VmRSS: private memory (heaps, stacks), and file-backed pages (the node binary, shared libraries). */
  readonly anonMiB: number;
  readonly fileMiB: number;
  readonly threads: number;
}

/** VmRSS and VmHWM of a process from /proc; undefined once it is gone. */
export function readMemory(pid: number): MemoryReading | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? Number.NaN);
  return {
    rssMiB: kb("VmRSS") / 1024,
    hwmMiB: kb("VmHWM") / 1024,
    anonMiB: kb("RssAnon") / 1024,
    fileMiB: kb("RssFile") / 1024,
    threads: Number(/^Threads:\s+(\d+)/m.exec(text)?.[1] ?? Number.NaN),
  };
}

/** CPU time (user + system) a process has used so far, ms; NaN once it is gone. Resolution 10 ms. */
export function cpuTimeMs(pid: number): number {
  const f = statFields(pid);
  return f === undefined ? Number.NaN : ticksMs(f, 11, 12);
}

/** The fields of /proc/PID/stat after the command's name (state first, then ppid, ...); undefined once it is gone. */
function statFields(pid: number | string): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** The sum of the clock-tick fields `at` of `f` (statFields), ms: USER_HZ is 100 on Linux. */
const ticksMs = (f: readonly string[], ...at: number[]): number => (at.reduce((sum, i) => sum + Number(f[i]), 0) * 1000) / 100;

/** Starts counting the CPU time of some processes; the returned function gives each one's ms since. */
export function cpuMeter(pids: readonly number[]): () => number[] {
  const start = pids.map(cpuTimeMs);
  return () => pids.map((pid, i) => cpuTimeMs(pid) - start[i]);
}

/**
 * CPU time, ms, of process `root` and its children (a PostgreSQL server: the
 * postmaster and its backends and workers): each live one's, plus what the
 * processes that ended and were waited for used (the cutime and cstime of
 * the root and of each child). NaN once the root is gone.
 */
export function treeCpuTimeMs(root: number): number {
  const own = statFields(root);
  if (own === undefined) return Number.NaN;
  // utime, stime, cutime, cstime: its own and its ended children's.
  let total = ticksMs(own, 11, 12, 13, 14);
  let entries: string[] = [];
  try {
    entries = readdirSync("/proc").filter((name) => /^\d+$/.test(name));
  } catch {
    // no /proc: the root's own figure
  }
  for (const name of entries) {
    // A child that ended meanwhile has its time in the root's cutime once waited for; a live one's ended children in its own.
    const f = statFields(name);
    if (f !== undefined && Number(f[1]) === root) total += ticksMs(f, 11, 12, 13, 14);
  }
  return total;
}

/** A long-running process under test (a service, a bare server, nats-server). */
export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Where its stdout and stderr go. */
  readonly logFile: string;
  /** Resolves with the exit code (or 128 + the signal's number) when it ends. */
  readonly exited: Promise<number>;
  /** How it ended ("code 1", "killed by SIGKILL"); undefined while it runs. */
  ending(): string | undefined;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<number>;
}

export interface StartOptions {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** Directory for the log file `<name>.log`. */
  readonly logDir: string;
}

/**
 * Starts a process with its output going straight to a log file: the kernel
 * writes it, so the bench process spends no CPU reading a pipe while it
 * measures. A service logging at info therefore pays what it pays in
 * production when its stdout is a file.
 */
export function startProcess(options: StartOptions): ManagedProcess {
  refuseWhenStopping(options.name);
  const logFile = join(options.logDir, `${options.name}.log`);
  const fd = openSync(logFile, "a");
  const child = spawn(options.command, [...options.args], { cwd: repoRoot, env: options.env ?? process.env, stdio: ["ignore", fd, fd] });
  closeSync(fd);
  started.add(child);
  let ending: string | undefined;
  const exited = new Promise<number>((resolve) => {
    child.once("exit", (code, signal) => {
      started.delete(child);
      ending = childEnding(code, signal);
      resolve(code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : 1));
    });
    child.once("error", (err) => {
      ending = childEnding(null, null, err);
      resolve(127);
    });
  });
  if (child.pid === undefined) throw new Error(`${options.name}: could not start ${options.command}`);
  return {
    name: options.name,
    pid: child.pid,
    child,
    logFile,
    exited,
    ending: () => ending,
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Node with the TypeScript loader (`node --import tsx <script>`): load generators, workers and the bare server. */
export function nodeArgs(script: string, extra: readonly string[] = []): string[] {
  return [...extra, "--import", "tsx", script];
}

/** Message a worker sends back: its result, or the error that stopped it. */
type WorkerReply<R> = { type: "result"; result: R } | { type: "error"; message: string } | { type: "event"; name: string; data?: unknown };

/**
 * runWorker, metering the CPU time (ms) each of `pids` spends over the
 * measured window the worker reports ("window-start" to "window-end"), and
 * then each of `trees` with its children (treeCpuTimeMs); zeros when it
 * reports none.
 */
export async function runMeteredWorker<R>(script: string, config: unknown, pids: readonly number[], trees: readonly number[] = []): Promise<{ result: R; cpuMs: number[] }> {
  let meter: (() => number[]) | undefined;
  let cpuMs: number[] = [...pids, ...trees].map(() => 0);
  const result = await runWorker<R>(script, config, {
    onEvent: (name) => {
      if (name === "window-start") {
        const own = cpuMeter(pids);
        const start = trees.map(treeCpuTimeMs);
        meter = () => [...own(), ...trees.map((root, i) => treeCpuTimeMs(root) - start[i])];
      }
      if (name === "window-end" && meter) cpuMs = meter();
    },
  });
  return { result, cpuMs };
}

/**
 * Runs a load generator (or other worker) in its own Node process: sends it
 * `config` and resolves with the result it reports. `onEvent` hears the
 * worker's progress messages (such as "measuring" when its window opens).
 */
export function runWorker<R>(
  script: string,
  config: unknown,
  options: { onEvent?: (name: string, data?: unknown) => void; timeoutMs?: number; profileDir?: string } = {},
): Promise<R> {
  const { onEvent, timeoutMs = 180_000, profileDir } = options;
  refuseWhenStopping(script);
  const execArgv = [...(profileDir ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : []), "--import", "tsx"];
  const child = fork(join(repoRoot, script), [], { cwd: repoRoot, execArgv, stdio: ["ignore", "inherit", "inherit", "ipc"] });
  started.add(child);
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    child.once("error", () => resolve());
  });
  return new Promise<R>((resolve, reject) => {
    let done = false;
    const finish = (err: Error | undefined, result?: R) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      // Wait for the worker to exit (it does so right after reporting), so a
      // CPU profile is on disk before anyone reads it; kill it if it hangs.
      const kill = setTimeout(() => child.kill("SIGKILL"), 5_000);
      void exited.then(() => {
        clearTimeout(kill);
        started.delete(child);
        if (err) reject(err);
        else resolve(result as R);
      });
    };
    const timer = setTimeout(() => finish(new Error(`${script} did not finish within ${timeoutMs} ms`)), timeoutMs);
    child.on("message", (msg: WorkerReply<R>) => {
      if (msg.type === "result") finish(undefined, msg.result);
      else if (msg.type === "error") finish(new Error(`${script}: ${msg.message}`));
      else onEvent?.(msg.name, msg.data);
    });
    child.once("exit", (code, signal) => finish(new Error(`${script} exited (${childEnding(code, signal)}) before reporting a result`)));
    child.once("error", (err) => finish(err));
    child.send(config as object);
  });
}

/**
 * Sets a process's VmHWM back to its VmRSS (Linux's clear_refs "5"), so that
 * VmHWM then gives the peak since this moment, between samples included;
 * false where that is not allowed.
 */
export function resetPeakMemory(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/**
 * The peak VmRSS of some processes from `start()` to `stop()`: VmHWM, set
 * back at `start()` (VmHWM alone would count start-up, module loading,
 * which is not what "under load" means), and VmRSS sampled every
 * `intervalMs` where VmHWM cannot be set back.
 */
export class MemorySampler {
  private readonly peaks = new Map<number, number>();
  private readonly reset = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly pids: readonly number[], private readonly intervalMs = 100) {}
  start(): this {
    for (const pid of this.pids) if (resetPeakMemory(pid)) this.reset.add(pid);
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    return this;
  }
  private sample(): void {
    for (const pid of this.pids) {
      const m = readMemory(pid);
      if (m) this.peaks.set(pid, Math.max(this.peaks.get(pid) ?? 0, m.rssMiB, this.reset.has(pid) ? m.hwmMiB : 0));
    }
  }
  /** Stops sampling; the peak resident memory (MiB) of each pid. */
  stop(): Map<number, number> {
    if (this.timer) clearInterval(this.timer);
    this.sample();
    return this.peaks;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
