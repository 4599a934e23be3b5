/**
 * `npm start`: the whole system on one machine. Starts nats-server with
 * JetStream (store under .data/nats) unless NATS_URL points at one, then the
 * product and order services, each as its own process with its own database
 * under .data/. Prints where everything listens; Ctrl-C, SIGTERM or SIGHUP (a
 * closed terminal) stops everything cleanly; if any process dies, says which
 * and stops the rest.
 *
 * Should this script itself die without stopping them (SIGKILL, a crash),
 * its children still stop, through pipes rather than signals: each service
 * gets a pipe on its standard input from this script and stops as on SIGTERM
 * when it closes (STOP_ON_STDIN_CLOSE=1, platform/runtime/run-service.ts).
 * nats-server runs under tools/run-tethered.mjs, which stops it when its
 * standard input closes; the write end of that pipe is held by this script
 * and, as file descriptor 3, by every service, so the broker stops only
 * after the services that drain into it have exited. Pipes close however a
 * process ends and work wherever Node does, unlike a parent-death signal
 * (Linux's PR_SET_PDEATHSIG), which would also stop the broker and the
 * services at the same moment.
 */
import { type ChildProcess, spawn, type StdioOptions } from "node:child_process";
import { mkdirSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { waitForServing } from "../platform/grpc/index.js";
import { stopOnStdinCloseVariable } from "../platform/runtime/index.js";
import { repoRoot } from "./repo-root.js";
import { findBinary } from "./find-binary.mjs";
import { serviceCommand } from "./service-launch.js";

const tetherScript = join(repoRoot, "tools", "run-tethered.mjs");

const usage = `Usage: npm start

Starts nats-server (unless NATS_URL is set), the product service and the order
service. Environment (all optional):
  DATA_DIR          where databases and the JetStream store live (default .data)
  NATS_URL          use this NATS server instead of starting one
  NATS_PORT         port of the local nats-server (default 4222)
  PRODUCTS_LISTEN   product service address (default 127.0.0.1:50051)
  ORDERS_LISTEN     order service address (default 127.0.0.1:50052)
  LOG_LEVEL         services' log level (default info)

Ctrl-C, SIGTERM or SIGHUP stops the services, then nats-server. If this
script is killed outright, the services stop on their own when their
standard input closes, and nats-server after them.`;

interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  readonly exited: Promise<number | null>;
}

const children: Child[] = [];
let stopping = false;

/**
 * Starts a child in its own process group (Ctrl-C reaches only this script,
 * which stops the services before the broker they drain into), with a pipe
 * from this script on its standard input, and `extraFds` from fd 3 on.
 */
function launch(name: string, command: string, args: string[], env: NodeJS.ProcessEnv, extraFds: StdioOptions = []): Child {
  if (stopping) throw new Error(`not starting ${name}: stopping`);
  const proc = spawn(command, args, { cwd: repoRoot, env, stdio: ["pipe", "inherit", "inherit", ...(extraFds as [])], detached: true });
  const exited = new Promise<number | null>((resolve) => {
    proc.once("exit", (code, signal) => resolve(code ?? (signal ? 128 : null)));
    proc.once("error", (err) => {
      console.error(`start: ${name} could not be started: ${err.message}`);
      resolve(127);
    });
  });
  proc.stdin?.on("error", () => {}); // never written to; only its closing counts
  const child = { name, process: proc, exited };
  children.push(child);
  void exited.then((code) => {
    if (stopping) return;
    console.error(`start: ${name} exited unexpectedly (code ${code}); stopping everything`);
    void stopAll(1);
  });
  return child;
}

function isRunning(child: Child): boolean {
  return child.process.exitCode === null && child.process.signalCode === null;
}

/** SIGKILL to the child's whole process group: nats-server as well as the script that runs it. */
function killGroup(child: Child): void {
  if (!isRunning(child) || child.process.pid === undefined) return;
  try {
    process.kill(-child.process.pid, "SIGKILL");
  } catch {
    child.process.kill("SIGKILL");
  }
}

async function stopAll(exitCode: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  // Services first, all at once, then the broker they drain into.
  const stop = async (group: Child[]): Promise<void> => {
    await Promise.all(
      group.map(async (child) => {
        if (isRunning(child)) child.process.kill("SIGTERM");
        const timer = setTimeout(() => killGroup(child), 15_000);
        await child.exited;
        clearTimeout(timer);
      }),
    );
  };
  await stop(children.filter((c) => c.name !== "nats-server"));
  await stop(children.filter((c) => c.name === "nats-server"));
  console.error("start: everything stopped");
  process.exit(exitCode);
}

function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => {
      socket.destroy();
      resolve(false);
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await isListening(port))) {
    if (Date.now() > until) throw new Error(`nothing listens on port ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  if (process.argv.includes("--help")) {
    console.log(usage);
    return;
  }
  process.once("exit", () => children.forEach(killGroup));
  // A closed terminal still gets everything stopped: its SIGHUP is a request
  // to stop, and writes to it fail from then on, which must not end this
  // script half-way.
  for (const stream of [process.stdout, process.stderr]) stream.on("error", () => {});
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(signal, () => void stopAll(0));
  const dataDir = process.env.DATA_DIR || join(repoRoot, ".data");
  mkdirSync(dataDir, { recursive: true });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PRODUCTS_DATABASE_URL: process.env.PRODUCTS_DATABASE_URL || join(dataDir, "products.db"),
    ORDERS_DATABASE_URL: process.env.ORDERS_DATABASE_URL || join(dataDir, "orders.db"),
  };
  const productsListen = process.env.PRODUCTS_LISTEN || "127.0.0.1:50051";
  const ordersListen = process.env.ORDERS_LISTEN || "127.0.0.1:50052";
  env.PRODUCTS_LISTEN = productsListen;
  env.ORDERS_LISTEN = ordersListen;
  env.PRODUCTS_ADDRESS = process.env.PRODUCTS_ADDRESS || productsListen;
  env[stopOnStdinCloseVariable] = "1";
  let natsTether: StdioOptions = [];

  let natsUrl = process.env.NATS_URL;
  if (!natsUrl) {
    const port = Number(process.env.NATS_PORT || 4222);
    const storeDir = join(dataDir, "nats");
    mkdirSync(storeDir, { recursive: true });
    const binary = findBinary("nats-server");
    if (!binary) throw new Error("nats-server is not installed; `npm start` installs it, or run: apt-get install -y nats-server");
    if (await isListening(port)) throw new Error(`port ${port} is already in use; set NATS_PORT to another port, or NATS_URL to use the NATS server there`);
    const nats = launch("nats-server", process.execPath, [tetherScript, binary, "-js", "-a", "127.0.0.1", "-p", String(port), "-sd", storeDir, "-l", join(dataDir, "nats-server.log")], env);
    natsTether = [nats.process.stdin!];
    await waitForPort(port, 10_000);
    natsUrl = `nats://127.0.0.1:${port}`;
    console.log(`nats-server (JetStream) on ${natsUrl}, store in ${storeDir}, log in ${join(dataDir, "nats-server.log")}`);
  }
  env.NATS_URL = natsUrl;

  const productsCommand = serviceCommand("products");
  const products = launch("products", productsCommand.command, productsCommand.args, env, natsTether);
  await waitForServing(productsListen, 20_000);
  const ordersCommand = serviceCommand("orders");
  const orders = launch("orders", ordersCommand.command, ordersCommand.args, env, natsTether);
  await waitForServing(ordersListen, 20_000);
  console.log(`products: gRPC on ${productsListen} (database ${env.PRODUCTS_DATABASE_URL}, pid ${products.process.pid})`);
  console.log(`orders:   gRPC on ${ordersListen} (database ${env.ORDERS_DATABASE_URL}, pid ${orders.process.pid})`);
  console.log("Concord is up. Try: grpcurl -plaintext " + ordersListen + " list    (Ctrl-C stops everything)");
}

main().catch((err) => {
  console.error(`start: ${err instanceof Error ? err.message : err}`);
  void stopAll(1);
});
