import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "nats";
import { findBinary } from "../../tools/find-binary.mjs";

export interface NatsServerOptions {
  /** JetStream store directory, kept after `stop`. Default: a fresh temp dir, removed by `stop`. */
  readonly storeDir?: string;
  /** Port to listen on. Default: a free port. */
  readonly port?: number;
}

/** A real nats-server with JetStream, owned by one test suite. */
export interface NatsServerHandle {
  /** "nats://127.0.0.1:PORT". */
  readonly url: string;
  readonly port: number;
  readonly storeDir: string;
  /** SIGTERM, waits for exit, and removes the store dir unless it was given. Final: no restart after it. */
  stop(): Promise<void>;
  /** Stops (when running) and starts again on the same port and store dir; resolves when JetStream answers. */
  restart(): Promise<void>;
  /** SIGTERM and waits for exit, keeping port and store for `restart`: NATS going away for a while. */
  stopForRestart(): Promise<void>;
  /** SIGKILL, as a crash would; waits for exit and keeps the store for `restart`. */
  kill(): Promise<void>;
}

const readyTimeoutMs = 10_000;

/**
 * Starts `nats-server -js` on 127.0.0.1 and resolves once clients can connect
 * and JetStream answers, so tests never race the server's start-up.
 */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const known = new Set(["storeDir", "port"]);
  for (const key of Object.keys(options)) if (!known.has(key)) throw new Error(`startNatsServer: unknown option ${key}`);
  const binary = findBinary("nats-server");
  if (!binary) throw new Error("nats-server is not installed (looked on PATH and in /usr/sbin); install it with: apt-get install -y nats-server");
  const ownsStore = options.storeDir === undefined;
  const storeDir = options.storeDir ?? mkdtempSync(join(tmpdir(), "concord-nats-"));
  const port = options.port ?? (await freePort());
  const url = `nats://127.0.0.1:${port}`;

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stopped = false;
  // A crashed test run must not leave servers behind.
  const killOnExit = () => child?.kill("SIGKILL");
  process.on("exit", killOnExit);

  const launch = async (): Promise<void> => {
    const output: string[] = [];
    const proc = spawn(binary, ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", storeDir], { stdio: ["ignore", "pipe", "pipe"] });
    const keep = (chunk: Buffer) => {
      output.push(...chunk.toString().split("\n").filter(Boolean));
      if (output.length > 40) output.splice(0, output.length - 40);
    };
    proc.stdout?.on("data", keep);
    proc.stderr?.on("data", keep);
    let exitCode: number | string | null | undefined;
    exited = new Promise((resolve) =>
      proc.once("exit", (code, signal) => {
        exitCode = code ?? signal;
        resolve();
      }),
    );
    proc.once("error", (err) => output.push(`spawn failed: ${err.message}`));
    child = proc;
    const deadline = Date.now() + readyTimeoutMs;
    let lastError = "";
    while (Date.now() < deadline) {
      if (exitCode !== undefined) break;
      try {
        await tcpConnect(port);
        await jetStreamAnswers(url);
        return;
      } catch (err) {
        lastError = (err as Error).message;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    proc.kill("SIGKILL");
    await exited;
    throw new Error(
      `nats-server on port ${port} did not become ready (${exitCode !== undefined ? `exited with ${exitCode}` : `timed out after ${readyTimeoutMs} ms: ${lastError}`}); its output:\n${output.join("\n")}`,
    );
  };

  const halt = async (signal: NodeJS.Signals): Promise<void> => {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return exited;
    proc.kill(signal);
    await exited;
  };

  await launch();
  return {
    url,
    port,
    storeDir,
    async stop() {
      stopped = true;
      await halt("SIGTERM");
      process.off("exit", killOnExit);
      if (ownsStore) rmSync(storeDir, { recursive: true, force: true });
    },
    async restart() {
      if (stopped) throw new Error(`nats-server on port ${port} was stopped for good; start a new one`);
      await halt("SIGTERM");
      await launch();
    },
    async stopForRestart() {
      await halt("SIGTERM");
    },
    async kill() {
      await halt("SIGKILL");
    },
  };
}

/** A port that was free a moment ago: the OS picks it for a listener on port 0. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error("could not find a free port"))));
    });
  });
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

async function jetStreamAnswers(url: string): Promise<void> {
  const nc = await connect({ servers: url, reconnect: false, timeout: 2_000 });
  try {
    await (await nc.jetstreamManager()).getAccountInfo();
  } finally {
    await nc.close();
  }
}
