import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, nkeyAuthenticator, type NatsConnection } from "nats";
import { afterAll, beforeAll } from "vitest";
import { ensureStreams, type StreamSpec } from "../../platform/events/index.js";
import { ensureNatsCredentials, seedFileOf, writeAuthorizationConfig } from "../../tools/nats/authorization.js";
import { findNatsServer, type FoundNatsServer } from "../../tools/nats/find-nats-server.mjs";
import { freePort } from "../../tools/free-port.js";
import { type ClusterRoutes, natsServerEnv, writeNatsServerConfig } from "../../tools/nats/server-config.js";
import { connectNats } from "../../tools/event-watch.js";
import { provisionStreams } from "../../tools/concord/provision.js";

export { freePort };

export interface NatsServerOptions {
  /** JetStream store directory, kept after `stop`. Default: a fresh temp dir, removed by `stop`. */
  readonly storeDir?: string;
  /** Port to listen on. Default: a free port. */
  readonly port?: number;
  /** `sync_interval: always` (every write fsynced before its ack). Default false: the server's 2-minute default, as nothing here outlives the machine. */
  readonly syncAlways?: boolean;
  /**
   * Runs with the generated authorization (gen/ts/concord_nats.ts): the
   * users' nkey seeds are made in this directory (`seedFile(user)`), and
   * clients without credentials are refused; the streams are provisioned
   * as the operator once the server is up, as `npm start` does, since the
   * services' users may not create them. Default: no authorization.
   */
  readonly credentialsDir?: string;
  /** With `credentialsDir`: provision the streams as the operator at start. Default true. */
  readonly provision?: boolean;
  /**
   * Lines added to the end of the server's configuration: accounts with JetStream limits, say
   * (`no_auth_user` then puts clients without credentials in one of them). Default none.
   */
  readonly extraConfig?: string;
  /** Serves the monitoring endpoints (`/connz`, `/healthz`) on 127.0.0.1 at a free port, `monitorPort`. Default false. */
  readonly monitor?: boolean;
}

/** A real nats-server with JetStream, owned by one test suite. */
export interface NatsServerHandle {
  /** "nats://127.0.0.1:PORT". */
  readonly url: string;
  readonly port: number;
  /** The seed file of a user of the generated authorization ("orders", "observer", ...); throws without `credentialsDir`. */
  seedFile(user: string): string;
  readonly storeDir: string;
  /** Its monitoring port on 127.0.0.1, with `monitor`. */
  readonly monitorPort?: number;
  /** SIGTERM, waits for exit, and removes the store dir unless it was given. Final: no restart after it. */
  stop(): Promise<void>;
  /** Stops (when running) and starts again on the same port and store dir; resolves when JetStream answers. */
  restart(): Promise<void>;
  /** SIGTERM and waits for exit, keeping port and store for `restart`: NATS going away for a while. */
  stopForRestart(): Promise<void>;
  /** SIGKILL, as a crash would; waits for exit and keeps the store for `restart`. */
  kill(): Promise<void>;
  /** SIGSTOP: the server hangs, connections open, as a stalled machine would. */
  pause(): void;
  /** SIGCONT after `pause`. */
  resume(): void;
}

/** One node of a cluster started by `startNatsCluster`. */
export interface NatsClusterNode extends NatsServerHandle {
  /** Its server_name ("n1", "n2", ...): what stream and consumer infos name as leader. */
  readonly name: string;
  /** Its process id while it runs. */
  readonly pid: number | undefined;
  /** Its monitoring port on 127.0.0.1 (`/healthz`, `/connz`, `/jsz`). */
  readonly monitorPort: number;
  /** Resolves once its `/healthz` says JetStream on it is current (streams and consumers caught up). */
  healthy(timeoutMs?: number): Promise<void>;
}

/** A cluster of nats-servers on loopback, JetStream clustered, owned by one test suite. */
export interface NatsClusterHandle {
  /** Every node's URL, comma-separated: what services take as NATS_URL. */
  readonly url: string;
  readonly nodes: readonly NatsClusterNode[];
  /** The node with this server name. */
  node(name: string): NatsClusterNode;
  /** Stops every node and removes the store dirs unless given. */
  stop(): Promise<void>;
}

export interface NatsClusterOptions {
  /** Number of nodes. Default 3. */
  readonly nodes?: number;
  /** Parent of the nodes' store dirs (one sub-directory each), kept after `stop`. Default: a fresh temp dir, removed by `stop`. */
  readonly storeDir?: string;
  /** `sync_interval: always` on every node. Default true: the setting the cluster's promise rests on. */
  readonly syncAlways?: boolean;
}

const readyTimeoutMs = 10_000;
/** A cluster node restarted after a crash catches up with the others before it is healthy. */
const healthyTimeoutMs = 60_000;

interface NodeSpec {
  readonly binary: string;
  readonly serverName: string;
  readonly port: number;
  readonly storeDir: string;
  readonly configPath: string;
  readonly syncAlways: boolean;
  readonly monitorPort?: number;
  readonly cluster?: ClusterRoutes;
  /** The authorization block's file name next to `configPath`, and a seed that may ask JetStream whether it answers. */
  readonly authorization?: { readonly include: string; readonly readinessSeed: string };
  /** Added to the end of the configuration (NatsServerOptions.extraConfig). */
  readonly extraConfig?: string;
}

interface Node {
  launch(waitReady: boolean): Promise<void>;
  halt(signal: NodeJS.Signals): Promise<void>;
  signal(signal: NodeJS.Signals): void;
  readonly pid: number | undefined;
  /** Resolves when `ready` answers; fails with the server's last output lines. */
  waitUntil(what: string, ready: () => Promise<void>, timeoutMs: number): Promise<void>;
  forget(): void;
}

function serverBinary(): FoundNatsServer {
  const found = findNatsServer();
  if (!found) throw new Error("nats-server is not installed: run `node tools/setup.mjs`, which builds the pinned one into .tools/bin");
  if (found.warning) warnOnce(found.warning);
  return found;
}

let warned = false;
function warnOnce(message: string): void {
  if (!warned) console.warn(`test harness: ${message}`);
  warned = true;
}

/** A nats-server process that can be started again on the same port, store and configuration. */
function createNode(spec: NodeSpec): Node {
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let exitCode: number | string | null | undefined;
  const output: string[] = [];
  // A crashed test run must not leave servers behind.
  const killOnExit = () => child?.kill("SIGKILL");
  process.on("exit", killOnExit);
  const args = writeNatsServerConfig(spec.configPath, {
    serverName: spec.serverName,
    port: spec.port,
    storeDir: spec.storeDir,
    syncAlways: spec.syncAlways,
    ...(spec.monitorPort !== undefined && { monitorPort: spec.monitorPort }),
    ...(spec.cluster && { cluster: spec.cluster }),
    ...(spec.authorization && { authorizationInclude: spec.authorization.include }),
  });
  if (spec.extraConfig !== undefined) appendFileSync(spec.configPath, `${spec.extraConfig}\n`);

  const node: Node = {
    get pid() {
      return child && child.exitCode === null && child.signalCode === null ? child.pid : undefined;
    },
    async launch(waitReady) {
      output.length = 0;
      exitCode = undefined;
      const proc = spawn(spec.binary, args, { env: natsServerEnv(), stdio: ["ignore", "pipe", "pipe"] });
      const keep = (chunk: Buffer) => {
        output.push(...chunk.toString().split("\n").filter(Boolean));
        if (output.length > 40) output.splice(0, output.length - 40);
      };
      proc.stdout?.on("data", keep);
      proc.stderr?.on("data", keep);
      exited = new Promise((resolve) =>
        proc.once("exit", (code, signal) => {
          exitCode = code ?? signal;
          resolve();
        }),
      );
      proc.once("error", (err) => output.push(`spawn failed: ${err.message}`));
      child = proc;
      await node.waitUntil("listen", () => tcpConnect(spec.port), readyTimeoutMs);
      if (waitReady) await node.waitUntil("answer JetStream requests", () => jetStreamAnswers(`nats://127.0.0.1:${spec.port}`, spec.authorization?.readinessSeed), readyTimeoutMs);
    },
    async waitUntil(what, ready, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      let lastError = "";
      while (Date.now() < deadline) {
        if (exitCode !== undefined) break;
        try {
          await ready();
          return;
        } catch (err) {
          lastError = (err as Error).message;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      const how = exitCode !== undefined ? `exited with ${exitCode}` : `timed out after ${timeoutMs} ms: ${lastError}`;
      if (exitCode === undefined && what === "listen") {
        child?.kill("SIGKILL");
        await exited;
      }
      throw new Error(`nats-server ${spec.serverName} on port ${spec.port} did not ${what} (${how}); its output:\n${output.join("\n")}`);
    },
    async halt(signal) {
      const proc = child;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return exited;
      // A paused process takes no signal but SIGKILL until it runs again.
      proc.kill("SIGCONT");
      proc.kill(signal);
      await exited;
    },
    signal(signal) {
      if (node.pid !== undefined) child!.kill(signal);
    },
    forget() {
      process.off("exit", killOnExit);
    },
  };
  return node;
}

/**
 * Starts a standalone nats-server with JetStream on 127.0.0.1 (the pinned
 * one, tools/nats/find-nats-server.mjs) and resolves once clients can
 * connect and JetStream answers, so tests never race the server's start-up.
 */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const known = new Set(["storeDir", "port", "syncAlways", "credentialsDir", "provision", "extraConfig", "monitor"]);
  for (const key of Object.keys(options)) if (!known.has(key)) throw new Error(`startNatsServer: unknown option ${key}`);
  const server = serverBinary();
  const ownsStore = options.storeDir === undefined;
  const storeDir = options.storeDir ?? mkdtempSync(join(tmpdir(), "concord-nats-"));
  mkdirSync(storeDir, { recursive: true });
  const port = options.port ?? (await freePort());
  const monitorPort = options.monitor === true ? await freePort() : undefined;
  const configDir = mkdtempSync(join(tmpdir(), "concord-nats-conf-"));
  const syncAlways = (options.syncAlways ?? false) && server.syncInterval;
  const { credentialsDir } = options;
  let authorization: NodeSpec["authorization"];
  if (credentialsDir !== undefined) {
    writeAuthorizationConfig(join(configDir, "authorization.conf"), ensureNatsCredentials(credentialsDir));
    authorization = { include: "authorization.conf", readinessSeed: seedFileOf(credentialsDir, "observer") };
  }
  const node = createNode({
    binary: server.path,
    serverName: `concord-${port}`,
    port,
    storeDir,
    configPath: join(configDir, "nats-server.conf"),
    syncAlways,
    ...(monitorPort !== undefined && { monitorPort }),
    ...(authorization && { authorization }),
    ...(options.extraConfig !== undefined && { extraConfig: options.extraConfig }),
  });
  let stopped = false;
  await node.launch(true);
  if (credentialsDir !== undefined && options.provision !== false) {
    try {
      const operator = await connectNats(`nats://127.0.0.1:${port}`, "test-provision", seedFileOf(credentialsDir, "operator"));
      try {
        await provisionStreams(operator);
      } finally {
        await operator.close();
      }
    } catch (err) {
      // The server is the test's to stop only once it is handed over.
      await node.halt("SIGTERM");
      node.forget();
      rmSync(configDir, { recursive: true, force: true });
      if (ownsStore) rmSync(storeDir, { recursive: true, force: true });
      throw err;
    }
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    ...(monitorPort !== undefined && { monitorPort }),
    seedFile(user) {
      if (credentialsDir === undefined) throw new Error("this nats-server runs without authorization (no credentialsDir)");
      return seedFileOf(credentialsDir, user);
    },
    async stop() {
      stopped = true;
      await node.halt("SIGTERM");
      node.forget();
      rmSync(configDir, { recursive: true, force: true });
      if (ownsStore) rmSync(storeDir, { recursive: true, force: true });
    },
    async restart() {
      if (stopped) throw new Error(`nats-server on port ${port} was stopped for good; start a new one`);
      await node.halt("SIGTERM");
      await node.launch(true);
    },
    stopForRestart: () => node.halt("SIGTERM"),
    kill: () => node.halt("SIGKILL"),
    pause: () => node.signal("SIGSTOP"),
    resume: () => node.signal("SIGCONT"),
  };
}

/**
 * A nats-server for the enclosing `describe` block: started before its tests
 * (and before the hooks registered after this call), stopped after them. The
 * returned function gives the server inside a test or such a hook.
 */
export function useNatsServer(options: NatsServerOptions = {}): () => NatsServerHandle {
  let server: NatsServerHandle | undefined;
  beforeAll(async () => {
    server = await startNatsServer(options);
  });
  afterAll(async () => {
    await server?.stop();
  });
  return () => {
    if (!server) throw new Error("useNatsServer: the server is there only inside the block's tests");
    return server;
  };
}

export interface NatsConnectionOptions {
  /** Streams ensured (created, or checked against their specs) through the connection once it is open. Default none. */
  readonly streams?: readonly StreamSpec[];
  /** Connect as this user of the generated authorization ("observer", ...), with its seed, on the default inbox. Default: no credentials. */
  readonly user?: string;
  /** The inbox prefix: a service's user may only subscribe to its own ("_INBOX_orders"). Default "_INBOX". */
  readonly inboxPrefix?: string;
}

/**
 * A nats.js connection, without credentials unless `user` names whose, to
 * the `useNatsServer` server of the enclosing block: opened (and `streams`
 * ensured) before its tests, closed after them, before the server stops.
 * The returned function gives it.
 */
export function useNatsConnection(server: () => NatsServerHandle, options: NatsConnectionOptions = {}): () => NatsConnection {
  for (const key of Object.keys(options)) if (!["streams", "user", "inboxPrefix"].includes(key)) throw new Error(`useNatsConnection: unknown option ${key}`);
  let nc: NatsConnection | undefined;
  beforeAll(async () => {
    const seed = options.user === undefined ? undefined : new TextEncoder().encode(readFileSync(server().seedFile(options.user), "utf8").trim());
    nc = await connect({ servers: server().url, ...(seed && { authenticator: nkeyAuthenticator(seed) }), ...(options.inboxPrefix !== undefined && { inboxPrefix: options.inboxPrefix }) });
    if (options.streams) await ensureStreams(await nc.jetstreamManager(), options.streams);
  });
  afterAll(async () => {
    await nc?.close();
  });
  return () => {
    if (!nc) throw new Error("useNatsConnection: the connection is there only inside the block's tests");
    return nc;
  };
}

/**
 * Starts a cluster of `nodes` nats-servers (default 3) on loopback, each with
 * its client, route and monitoring ports and its own store, routes to all the
 * others, JetStream clustered and (by default) `sync_interval: always`.
 * Resolves once every node reports healthy, so a stream of 3 replicas can be
 * created at once.
 */
export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsClusterHandle> {
  const known = new Set(["nodes", "storeDir", "syncAlways"]);
  for (const key of Object.keys(options)) if (!known.has(key)) throw new Error(`startNatsCluster: unknown option ${key}`);
  const count = options.nodes ?? 3;
  if (!Number.isInteger(count) || count < 1) throw new Error(`startNatsCluster: nodes ${count} is not a whole number >= 1`);
  const server = serverBinary();
  const ownsStore = options.storeDir === undefined;
  const parent = options.storeDir ?? mkdtempSync(join(tmpdir(), "concord-nats-cluster-"));
  const ports = await distinctFreePorts(count * 3);
  const routePorts = ports.slice(count, 2 * count);
  // As `npm start -- --cluster`: the routes take only nodes that know this run's secret.
  const routeSecret = randomBytes(24).toString("hex");
  let stopped = false;
  const processes: Node[] = [];
  const nodes: NatsClusterNode[] = Array.from({ length: count }, (_, i) => {
    const name = `n${i + 1}`;
    const port = ports[i];
    const monitorPort = ports[2 * count + i];
    const storeDir = join(parent, name);
    mkdirSync(storeDir, { recursive: true });
    const node = createNode({
      binary: server.path,
      serverName: name,
      port,
      storeDir,
      configPath: join(parent, `${name}.conf`),
      syncAlways: (options.syncAlways ?? true) && server.syncInterval,
      monitorPort,
      cluster: { name: "concord", port: routePorts[i], routePorts, secret: routeSecret },
    });
    processes.push(node);
    const healthy = (timeoutMs = healthyTimeoutMs) => node.waitUntil("report healthy", () => healthz(monitorPort), timeoutMs);
    return {
      name,
      url: `nats://127.0.0.1:${port}`,
      port,
      monitorPort,
      seedFile() {
        throw new Error("cluster nodes run without authorization");
      },
      storeDir,
      get pid() {
        return node.pid;
      },
      async stop() {
        await node.halt("SIGTERM");
        node.forget();
      },
      async restart() {
        if (stopped) throw new Error(`the cluster was stopped for good; start a new one`);
        await node.halt("SIGTERM");
        await node.launch(false);
        await healthy();
      },
      stopForRestart: () => node.halt("SIGTERM"),
      kill: () => node.halt("SIGKILL"),
      pause: () => node.signal("SIGSTOP"),
      resume: () => node.signal("SIGCONT"),
      healthy,
    };
  });
  const stopAll = async () => {
    stopped = true;
    await Promise.all(nodes.map((n) => n.stop()));
    if (ownsStore) rmSync(parent, { recursive: true, force: true });
  };
  try {
    await Promise.all(processes.map((p) => p.launch(false)));
    await Promise.all(nodes.map((n) => n.healthy()));
    await jetStreamAnswers(nodes.map((n) => n.url).join(","));
  } catch (err) {
    await stopAll();
    throw err;
  }
  return {
    url: nodes.map((n) => n.url).join(","),
    nodes,
    node(name) {
      const found = nodes.find((n) => n.name === name);
      if (!found) throw new Error(`no node ${name} in the cluster (${nodes.map((n) => n.name).join(", ")})`);
      return found;
    },
    stop: stopAll,
  };
}

async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

function tcpConnect(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve();
    });
    socket.once("error", (err) => {
      socket.destroy();
      reject(err);
    });
  });
}

async function healthz(monitorPort: number): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${monitorPort}/healthz`, { signal: AbortSignal.timeout(2_000) });
  if (!res.ok) throw new Error(`/healthz: ${res.status} ${await res.text()}`);
}

async function jetStreamAnswers(servers: string, seedFile?: string): Promise<void> {
  const authenticator = seedFile === undefined ? undefined : nkeyAuthenticator(new TextEncoder().encode(readFileSync(seedFile, "utf8").trim()));
  const nc = await connect({ servers: servers.split(","), reconnect: false, timeout: 2_000, ...(authenticator && { authenticator }) });
  try {
    await (await nc.jetstreamManager()).getAccountInfo();
  } finally {
    await nc.close();
  }
}
