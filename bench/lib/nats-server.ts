import { existsSync, mkdirSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { freePort, type ManagedProcess, sleep, startProcess } from "./proc.js";

/** Where nats-server is: $NATS_SERVER, PATH, or Debian's /usr/sbin. */
export function findNatsServer(): string | undefined {
  if (process.env.NATS_SERVER && existsSync(process.env.NATS_SERVER)) return process.env.NATS_SERVER;
  for (const dir of [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/local/sbin", "/sbin"]) {
    if (dir && existsSync(join(dir, "nats-server"))) return join(dir, "nats-server");
  }
  return undefined;
}

export function natsServerVersion(binary: string): string {
  try {
    return execFileSync(binary, ["--version"], { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

export interface RunningNats {
  readonly url: string;
  readonly process: ManagedProcess;
  readonly storeDir: string;
}

/** A nats-server of our own with JetStream, on a free loopback port, its store in `dir`. */
export async function startNatsServer(dir: string): Promise<RunningNats> {
  const binary = findNatsServer();
  if (!binary) throw new Error("nats-server is not installed (apt-get install -y nats-server, or set NATS_SERVER)");
  const port = await freePort();
  const storeDir = join(dir, "jetstream");
  mkdirSync(storeDir, { recursive: true });
  const proc = startProcess({ name: "nats-server", command: binary, args: ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", storeDir], logDir: dir });
  const until = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => (s.destroy(), resolve(false)));
    });
    if (ok) break;
    if (proc.child.exitCode !== null) throw new Error(`nats-server exited at start; see ${proc.logFile}`);
    if (Date.now() > until) throw new Error(`nats-server did not listen on ${port} within 10 s; see ${proc.logFile}`);
    await sleep(50);
  }
  return { url: `nats://127.0.0.1:${port}`, process: proc, storeDir };
}
