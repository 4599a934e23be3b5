/**
 * Stops a local PostgreSQL server when the process that started it is gone,
 * however it went. A process 'exit' handler runs only when Node exits on its
 * own; a SIGTERM without a listener (vitest ends its workers so) or a SIGKILL
 * skips it and would leave the server running, its temp dir behind.
 */
import { spawn } from "node:child_process";
import { realpathSync } from "node:fs";
import type { Socket } from "node:net";

/**
 * Waits for end of file on its standard input, which comes when the last
 * holder of the pipe's other end, the starting process, has exited. Then it
 * asks the postmaster of the data dir ($1) for a fast shutdown, SIGKILL after
 * 10 s, and removes the dir when $2 says so. The pid comes from
 * postmaster.pid, so a restarted server is found too, and counts only if that
 * process works in this data dir: a stale file's pid may belong to another
 * process by now. Signals meant for its parent's process group are ignored.
 */
const script = `
trap '' INT TERM HUP
while read -r _; do :; done
pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$1" ]; then
  kill -INT "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "$pid" 2>/dev/null
fi
if [ "$2" = remove ]; then rm -rf "$1"; fi
`;

/** A watchdog on duty; `release` stands it down once the server has been stopped as intended. */
export interface Watchdog {
  release(): void;
}

/**
 * Starts a small `sh` process that stops the server of `dataDir` (and removes
 * the dir when `removeDir`) once this process has exited. It keeps nothing
 * alive: this process may exit while it waits.
 */
export function startWatchdog(dataDir: string, removeDir: boolean): Watchdog {
  const child = spawn("sh", ["-c", script, "postgres-watchdog", realpathSync(dataDir), removeDir ? "remove" : "keep"], {
    stdio: ["pipe", "ignore", "ignore"],
    detached: true,
  });
  child.once("error", () => {}); // no sh: the exit handler alone remains
  child.stdin?.on("error", () => {});
  child.unref();
  (child.stdin as Socket | null)?.unref();
  return {
    release() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL"); // it ignores the polite signals
      child.stdin?.destroy();
    },
  };
}
