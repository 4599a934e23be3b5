import { mkdirSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { findNatsServer as findServer, natsServerVersionOf, takesSyncInterval } from "../../tools/nats/find-nats-server.mjs";
import { natsServerEnv, writeNatsServerConfig } from "../../tools/nats/server-config.js";
import { freePort, type ManagedProcess, sleep, startProcess } from "./proc.js";

/** Where nats-server is: $NATS_SERVER, else the pinned one in .tools/bin, else one on PATH (tools/nats/find-nats-server.mjs). */
export function findNatsServer(): string | undefined {
  if (process.env.NATS_SERVER) return process.env.NATS_SERVER;
  return findServer()?.path;
}

/** "nats-server 2.15.2", as the binary reports itself. */
export function natsServerVersion(binary: string): string {
  return `nats-server ${natsServerVersionOf(binary) ?? "(version unknown)"}`;
}

export interface RunningNats {
  /** The server's URL; every node's, comma-separated, for a cluster. */
  readonly url: string;
  /** The (first) server process. */
  readonly process: ManagedProcess;
  /** Every server process: one, or the nodes of a cluster. */
  readonly processes: readonly ManagedProcess[];
  readonly storeDir: string;
  /** Stops every server process. */
  stop(): Promise<void>;
}

export interface BenchNatsOptions {
  /** `sync_interval: always` (every write fsynced before its ack). Default false: the server's default, fsync every 2 minutes. */
  readonly syncAlways?: boolean;
  /** Names the store, config and log (several servers in one run). Default "nats". */
  readonly name?: string;
  /** Go's own number of scheduler threads (one a core), not `npm start`'s one (natsServerEnv). Default false. */
  readonly everyCore?: boolean;
}

async function waitListening(port: number, proc: ManagedProcess): Promise<void> {
  const until = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => (s.destroy(), resolve(false)));
    });
    if (ok) return;
    // Ended by a signal too: it then has no exit code.
    if (proc.ending() !== undefined) throw new Error(`nats-server exited at start (${proc.ending()}); see ${proc.logFile}`);
    if (Date.now() > until) throw new Error(`nats-server did not listen on ${port} within 10 s; see ${proc.logFile}`);
    await sleep(50);
  }
}

function binary(): string {
  const found = findNatsServer();
  if (!found) throw new Error("nats-server is not installed (node tools/setup.mjs builds the pinned one, or set NATS_SERVER)");
  return found;
}

/** `sync_interval: always` only where the server takes it (2.10 and later): the fallback 2.9 refuses the whole config. */
function syncAlwaysIf(wanted: boolean): boolean {
  const version = natsServerVersionOf(binary());
  return wanted && version !== undefined && takesSyncInterval(version);
}

function serverEnv(options: BenchNatsOptions): NodeJS.ProcessEnv {
  if (!options.everyCore) return natsServerEnv();
  const { GOMAXPROCS: _, ...env } = process.env;
  return env;
}

/** A nats-server of our own with JetStream, on a free loopback port, its store and config in `dir`. */
export async function startNatsServer(dir: string, options: BenchNatsOptions = {}): Promise<RunningNats> {
  const name = options.name ?? "nats";
  const port = await freePort();
  const storeDir = join(dir, name === "nats" ? "jetstream" : `${name}-jetstream`);
  mkdirSync(storeDir, { recursive: true });
  const args = writeNatsServerConfig(join(dir, `${name}.conf`), { serverName: name, port, storeDir, syncAlways: syncAlwaysIf(options.syncAlways ?? false) });
  const proc = startProcess({ name: name === "nats" ? "nats-server" : name, command: binary(), args, logDir: dir, env: serverEnv(options) });
  await waitListening(port, proc);
  return { url: `nats://127.0.0.1:${port}`, process: proc, processes: [proc], storeDir, stop: async () => void (await proc.stop()) };
}

/**
 * Three nats-servers in a cluster on loopback (`sync_interval: always` unless
 * told otherwise), resolved once each reports healthy, so streams of 3
 * replicas can be placed.
 */
export async function startNatsCluster(dir: string, options: BenchNatsOptions = {}): Promise<RunningNats> {
  const name = options.name ?? "cluster";
  const ports = await Promise.all(Array.from({ length: 9 }, () => freePort()));
  if (new Set(ports).size < ports.length) return startNatsCluster(dir, options);
  const [clientPorts, routePorts, monitorPorts] = [ports.slice(0, 3), ports.slice(3, 6), ports.slice(6)];
  const processes = clientPorts.map((port, i) => {
    const node = `${name}-n${i + 1}`;
    const storeDir = join(dir, `${node}-jetstream`);
    mkdirSync(storeDir, { recursive: true });
    const args = writeNatsServerConfig(join(dir, `${node}.conf`), {
      serverName: node,
      port,
      storeDir,
      syncAlways: syncAlwaysIf(options.syncAlways ?? true),
      monitorPort: monitorPorts[i],
      cluster: { name, port: routePorts[i], routePorts },
    });
    return startProcess({ name: node, command: binary(), args, logDir: dir, env: natsServerEnv() });
  });
  const stop = async () => {
    await Promise.all(processes.map((p) => p.stop()));
  };
  try {
    await Promise.all(clientPorts.map((port, i) => waitListening(port, processes[i])));
    const until = Date.now() + 30_000;
    for (const monitorPort of monitorPorts) {
      while (!(await fetch(`http://127.0.0.1:${monitorPort}/healthz`).then((r) => r.ok, () => false))) {
        if (Date.now() > until) throw new Error(`the cluster's nodes did not report healthy within 30 s; see ${processes[0].logFile}`);
        await sleep(100);
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: clientPorts.map((p) => `nats://127.0.0.1:${p}`).join(","), process: processes[0], processes, storeDir: dir, stop };
}
