import { spawn, type ChildProcess } from "node:child_process";
import { serviceCommand, type ServiceName } from "../../tools/service-launch.js";

/** A service running as production runs it: its own Node process on the compiled code in dist/. */
export interface ServiceProcess {
  readonly name: ServiceName;
  readonly process: ChildProcess;
  /** Every line it has written so far, standard output and error. */
  lines(): string[];
  /** Its JSON log lines so far, parsed; other lines are left out. */
  logs(): Array<Record<string, unknown>>;
  /** Resolves with the exit code, or the signal that ended it. */
  readonly exited: Promise<number | NodeJS.Signals | null>;
  /** SIGKILL, as a crash would; resolves once it is gone. */
  kill(): Promise<void>;
  /** SIGTERM (SIGKILL if it is still there after 20 s); resolves with how it ended. */
  stop(): Promise<number | NodeJS.Signals | null>;
}

/**
 * Starts `dist/services/<name>/main.js` with `env` on top of this process's
 * environment (`npm run build` first; `npm test` does it). It serves in
 * plaintext and checks no tokens unless `env` says otherwise (GRPC_INSECURE,
 * GRPC_AUTH). A test run that ends early does not leave it behind.
 */
export function startServiceProcess(name: ServiceName, env: Record<string, string>): ServiceProcess {
  const { command, args } = serviceCommand(name);
  const child = spawn(command, args, { env: { ...process.env, GRPC_INSECURE: "1", GRPC_AUTH: "none", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  let partial = "";
  const collect = (chunk: Buffer) => {
    const parts = (partial + chunk.toString()).split("\n");
    partial = parts.pop() ?? "";
    lines.push(...parts.filter(Boolean));
  };
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  const killOnExit = () => child.kill("SIGKILL");
  process.on("exit", killOnExit);
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) =>
    child.once("exit", (code, signal) => {
      process.off("exit", killOnExit);
      resolve(code ?? signal);
    }),
  );
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  return {
    name,
    process: child,
    lines: () => [...lines, ...(partial ? [partial] : [])],
    logs: () =>
      lines.flatMap((line) => {
        try {
          return [JSON.parse(line) as Record<string, unknown>];
        } catch {
          return [];
        }
      }),
    exited,
    async kill() {
      if (!gone()) child.kill("SIGKILL");
      await exited;
    },
    async stop() {
      if (!gone()) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const how = await exited;
      clearTimeout(timer);
      return how;
    },
  };
}

/**
 * The environment under which a service process's `names` do not resolve
 * until the file `once` exists, and then resolve to 127.0.0.1 (see
 * resolve-later.mjs): a dependency whose name appears only once its
 * container or pod exists, without touching the machine's resolver.
 * `silent`: a lookup gets no answer until then, as from a name server that
 * does not answer, rather than ENOTFOUND.
 */
export function resolvingLater(names: string, once: string, { silent = false } = {}): Record<string, string> {
  return {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import ${new URL("./resolve-later.mjs", import.meta.url).href}`,
    RESOLVE_LATER_NAMES: names,
    RESOLVE_LATER_ONCE: once,
    ...(silent && { RESOLVE_LATER_SILENT: "1" }),
  };
}
