/**
 * One run of the `postgres` program, as a child process to signal, kill
 * outright (with its backends) and read the log of.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, constants, fchmodSync, openSync, readdirSync, readFileSync } from "node:fs";
import { logFileProblem } from "../nats/server-config.js";

const logLinesKept = 60;

/** One run of the `postgres` program. */
export interface ServerProcess {
  /** Resolves when it has exited; `exitStatus` then says how. */
  readonly exited: Promise<void>;
  exitStatus(): string | undefined;
  /** Sends `signal` while it runs. */
  signal(signal: NodeJS.Signals): void;
  /**
   * SIGKILL to the postmaster and every backend it forked, as a crash would.
   * Each backend leads a process group of its own (PostgreSQL calls setsid),
   * so a signal to the postmaster's group would miss them: they are found by
   * parent pid.
   */
  kill(): void;
  /** Its latest log lines. */
  log(): string[];
}

/**
 * Starts `program` (postgres) in `dataDir`, in a process group of its own and
 * as `user` when given, its output appended to `logFile` or kept in memory.
 */
export function spawnServer(program: string, args: string[], dataDir: string, logFile: string | undefined, user: { uid?: number; gid?: number }): ServerProcess {
  const output: string[] = [];
  // Its owner's alone, as PostgreSQL's own log files are (log_file_mode 0600): a failing statement's entry quotes the
  // values of its row or key, customers' data among them. A log an earlier start left readable is narrowed too.
  // Never through a symbolic link put there, which would have the server append to (and narrow) the file it names.
  const problem = logFile === undefined ? undefined : logFileProblem(logFile, "PostgreSQL");
  if (problem !== undefined) throw new Error(problem);
  const logFd = logFile === undefined ? undefined : openSync(logFile, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  if (logFd !== undefined) fchmodSync(logFd, 0o600);
  let proc: ChildProcess;
  try {
    // Its own process group: a Ctrl-C meant for the parent does not reach it, the parent decides when it stops.
    proc = spawn(program, args, { cwd: dataDir, detached: true, stdio: ["ignore", logFd ?? "pipe", logFd ?? "pipe"], ...user });
  } finally {
    if (logFd !== undefined) closeSync(logFd);
  }
  const keep = (chunk: Buffer) => {
    output.push(...chunk.toString().split("\n").filter(Boolean));
    if (output.length > logLinesKept) output.splice(0, output.length - logLinesKept);
  };
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);
  let status: string | undefined;
  const exited = new Promise<void>((resolve) =>
    proc.once("exit", (code, signal) => {
      status = code !== null ? `exited with status ${code}` : `ended by ${signal}`;
      resolve();
    }),
  );
  proc.once("error", (err) => output.push(`could not start ${program}: ${err.message}`));
  const running = () => proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null;
  return {
    exited,
    exitStatus: () => status,
    signal(signal) {
      if (running()) proc.kill(signal);
    },
    kill() {
      if (!running()) return;
      // Stopped, the postmaster can neither fork a backend nor notice one die,
      // and the backends do not see it gone: all go at once, none says goodbye.
      proc.kill("SIGSTOP");
      for (const pid of childrenOf(proc.pid!)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone already
        }
      }
      proc.kill("SIGKILL");
    },
    log: () => (logFile === undefined ? [...output] : lastLines(logFile, logLinesKept)),
  };
}

/** Pids whose parent is `pid` (Linux /proc); empty where /proc cannot be read. */
function childrenOf(pid: number): number[] {
  let entries: string[];
  try {
    entries = readdirSync("/proc").filter((name) => /^\d+$/.test(name));
  } catch {
    return [];
  }
  return entries
    .filter((entry) => {
      try {
        // The command name in parentheses may hold spaces; the parent pid is the second field after it.
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid;
      } catch {
        return false; // exited meanwhile
      }
    })
    .map(Number);
}

function lastLines(file: string, count: number): string[] {
  try {
    return readFileSync(file, "utf8").split("\n").filter(Boolean).slice(-count);
  } catch {
    return [`(could not read ${file})`];
  }
}
