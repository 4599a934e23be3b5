import { type ChildProcess, spawn } from "node:child_process";

/** What a `concord` run ended with. */
export interface ConcordRun {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs the `concord` bin (tools/concord.mjs) to its end with `env` on top of
 * this process's environment (a name set to undefined is removed), and
 * kills it after `timeoutMs`; `started` is handed the process (to signal it).
 */
export function runConcord(env: Record<string, string | undefined>, args: readonly string[], timeoutMs = 60_000, started?: (child: ChildProcess) => void): Promise<ConcordRun> {
  return runTool(["tools/concord.mjs"], env, args, timeoutMs, started);
}

/** As runConcord, for the tool that `node` runs with `script` (its path, after any flags: `--import`, `tsx`). */
export function runTool(script: readonly string[], env: Record<string, string | undefined>, args: readonly string[], timeoutMs = 60_000, started?: (child: ChildProcess) => void): Promise<ConcordRun> {
  const merged: NodeJS.ProcessEnv = { ...process.env };
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) delete merged[name];
    else merged[name] = value;
  }
  const child = spawn(process.execPath, [...script, ...args], { stdio: ["ignore", "pipe", "pipe"], env: merged });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  started?.(child);
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  return new Promise((resolve) =>
    child.once("exit", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    }),
  );
}
