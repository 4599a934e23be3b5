import { type ChildProcess, execFileSync, spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { basename, join, relative } from "node:path";
import { X509Certificate } from "node:crypto";
import { connect as connectTls } from "node:tls";
import { pathToFileURL } from "node:url";
import { connect as natsConnect, type JetStreamManager, nkeyAuthenticator, RetentionPolicy } from "nats";
import { createUser } from "nkeys.js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { OrderServiceService, OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { Code } from "../platform/errors/index.js";
import { clientTlsCredentials, createClient } from "../platform/grpc/index.js";
import { openDatabase } from "../platform/sql/index.js";
import { repoRoot } from "../tools/repo-root.js";
import { toolClientSecurity } from "../tools/client-security.js";
import { ensureDevCredentials } from "../tools/dev-credentials.js";
import { ensureNatsCredentials } from "../tools/nats/authorization.js";
import { freePort, startNatsServer } from "./support/nats-server.js";
import { runConcord } from "./support/concord.js";
import { readmeBlock, readmeProse } from "./support/readme.js";
import { address, grpcError, tempDir } from "./support/shop.js";

const isListening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });

/**
 * Every process that belongs to a system started with DATA_DIR `dataDir`:
 * whose arguments or environment name it (start.ts, nats-server and the
 * script that runs it, the services). Reads /proc, so Linux only.
 */
function processesOf(dataDir: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const text = readFileSync(`/proc/${entry}/cmdline`, "utf8") + "\0" + readFileSync(`/proc/${entry}/environ`, "utf8");
      if (text.split("\0").some((field) => field === `DATA_DIR=${dataDir}` || field.startsWith(dataDir))) found.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

/** Every descendant of `pid` now, children first, from the parent pids in /proc (Linux only). */
function descendantsOf(pid: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // Fields after the command's closing parenthesis: state, parent pid, ...
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // gone meanwhile
    }
  }
  const found: number[] = [];
  for (let i = -1; i < found.length; i++) {
    const parent = i < 0 ? pid : found[i];
    for (const [child, ppid] of parents) if (ppid === parent) found.push(child);
  }
  return found;
}

/** Whether `pid` is a live process (a zombie is not). */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** The environment of process `pid`, one variable an entry; none when it is gone. */
function environOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
  } catch {
    return [];
  }
}

/** The pid of the nats-server (not the script that tethers it) whose configuration file is `conf`, among `dataDir`'s processes. */
function natsServerPid(dataDir: string, conf: string): number | undefined {
  return processesOf(dataDir).find((pid) => {
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      return basename(args[0]) === "nats-server" && args.some((a) => a.endsWith(conf));
    } catch {
      return false;
    }
  });
}

/** The pids `npm start` gave, in order, for `name` ("orders#2") each time it said it was running again. */
function pidsRunningAgain(output: string, name: string): number[] {
  return [...output.matchAll(new RegExp(`start: ${name} is running again \\(pid (\\d+)\\)`, "g"))].map((m) => Number(m[1]));
}

/** The variables that hold `service`'s processes, before they run, while the file `until` is missing (test/support/hold-start.mjs). */
function holdStart(service: string, until: string): Record<string, string> {
  return {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import ${pathToFileURL(join(repoRoot, "test", "support", "hold-start.mjs")).href}`,
    HOLD_START_SCRIPT: join("services", service, "main.js"),
    HOLD_START_UNTIL: until,
  };
}

/** The pid of `service`'s process (one running services/<service>/main.js) among `dataDir`'s processes, but `except`. */
function servicePid(dataDir: string, service: string, except?: number): number | undefined {
  return processesOf(dataDir).find((pid) => {
    try {
      return pid !== except && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(join("services", service, "main.js"));
    } catch {
      return false; // gone meanwhile
    }
  });
}

/** A listener of this process's on 127.0.0.1:`port`, as another process holding it would be. */
function holdPort(port: number): Promise<ReturnType<typeof createServer>> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

/** Ports of a system's own, all free now. */
interface StartPorts {
  readonly nats: number;
  readonly products: number;
  readonly orders: number;
  readonly productsMetrics: number;
  readonly ordersMetrics: number;
}

/**
 * `npm start -- --postgres-only` with `env` (handed to `started` at once, for a
 * failed test to kill it), once it says PostgreSQL alone runs: the process,
 * what it has printed so far, and its exit status.
 */
async function startPostgresOnly(env: NodeJS.ProcessEnv, started: (child: ChildProcess) => void): Promise<{ child: ChildProcess; output: () => string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, ["--import", "tsx", "tools/start.ts", "--postgres-only"], { env, stdio: ["ignore", "pipe", "pipe"] });
  started(child);
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  await expect.poll(() => output, { timeout: 90_000, interval: 100 }).toContain("Only PostgreSQL runs (--postgres-only)");
  return { child, output: () => output, exited };
}

/** The environment of a start with DATA_DIR `dataDir` on `ports`, LOG_LEVEL warn, starting a nats-server of its own. */
function startEnv(dataDir: string, ports: StartPorts): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATA_DIR: dataDir,
    NATS_PORT: String(ports.nats),
    PRODUCTS_LISTEN: `127.0.0.1:${ports.products}`,
    ORDERS_LISTEN: `127.0.0.1:${ports.orders}`,
    PRODUCTS_METRICS_LISTEN: `127.0.0.1:${ports.productsMetrics}`,
    ORDERS_METRICS_LISTEN: `127.0.0.1:${ports.ordersMetrics}`,
    LOG_LEVEL: "warn",
    NATS_URL: "",
  };
}

/**
 * Runs `tools/start.ts` to its end with DATA_DIR `dataDir`, every port a
 * free one, LOG_LEVEL warn, its own nats-server, and the variables `extra`
 * gives for those ports; for a start that is to fail.
 */
async function startOnFreePorts(dataDir: string, extra: (ports: StartPorts) => NodeJS.ProcessEnv): Promise<{ ports: StartPorts; result: SpawnSyncReturns<string> }> {
  const ports = { nats: await freePort(), products: await freePort(), orders: await freePort(), productsMetrics: await freePort(), ordersMetrics: await freePort() };
  const result = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], {
    env: { ...startEnv(dataDir, ports), ...extra(ports) },
    encoding: "utf8",
    timeout: 100_000,
  });
  return { ports, result };
}

/**
 * Starts on DATA_DIR `dataDir` with `env`, once with nothing there and once with its development credentials made,
 * each to be refused (exit 2) with the line `refusal` gives for the development CA as it is then named ("<its file>,
 * not made yet", then its file), the first making nothing.
 */
async function refusedFreshAndMade(dataDir: string, env: NodeJS.ProcessEnv, refusal: (devCa: string) => string): Promise<void> {
  const fresh = await startOnFreePorts(dataDir, () => env);
  expect(fresh.result.status, fresh.result.stderr).toBe(2);
  expect(fresh.result.stderr).toBe(refusal(`${join(dataDir, "tls", "ca.pem")}, not made yet`));
  expect(existsSync(dataDir)).toBe(false);
  ensureDevCredentials(dataDir, ["products", "orders", "client"]);
  const made = await startOnFreePorts(dataDir, () => env);
  expect(made.result.status, made.result.stderr).toBe(2);
  expect(made.result.stderr).toBe(refusal(join(dataDir, "tls", "ca.pem")));
}

/**
 * A directory `pki` made under `parent`, openssl run in it, and the options of a new P-256 key without a passphrase
 * and of a CA's extensions, for certificates of a test's own.
 */
function pkiDir(parent: string) {
  const pki = join(parent, "pki");
  mkdirSync(pki);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: pki, stdio: "pipe" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const caExt = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"];
  return { pki, openssl, ec, caExt };
}

/** Places an order for a new product and waits until the saga has confirmed it. */
async function orderConfirmed(dataDir: string, ports: { products: number; orders: number }, timeout: number): Promise<void> {
  const admin = toolClientSecurity({ subject: "ops", roles: ["admin"] }, { DATA_DIR: dataDir });
  const products = createClient(ProductServiceService, { address: `127.0.0.1:${ports.products}`, ...admin });
  const orders = createClient(OrderServiceService, { address: `127.0.0.1:${ports.orders}`, ...admin });
  try {
    const { product } = await products.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 2 });
    const { order } = await orders.createOrder({ customerId: "c-1", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address });
    await expect.poll(async () => (await orders.getOrder({ id: order!.id })).order!.state, { timeout }).toBe(OrderState.ORDER_STATE_CONFIRMED);
  } finally {
    products.close();
    orders.close();
  }
}

interface SystemOptions {
  readonly ports?: { nats: number; products: number; orders: number; productsMetrics?: number; ordersMetrics?: number };
  /** In a process group of its own, as `npm start` in a terminal is. */
  readonly detached?: boolean;
  readonly logLevel?: string;
  /** Arguments after `npm start --`. */
  readonly args?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly upTimeoutMs?: number;
  /** Through `npm start` (its pre-scripts left out: they install and build), rather than node running start.ts. */
  readonly npm?: boolean;
}

/** A first client port for `--cluster` whose neighbours and route and monitoring ports (+2000, +4000) are free too. */
const freeClusterPort = () => freePort({ alsoFree: [1, 2, 2000, 2001, 2002, 4000, 4001, 4002] });

/** The observer's credentials `npm start` made in `dataDir`, for a client of the local nats-server. */
const observerAuth = (dataDir: string) => ({ authenticator: nkeyAuthenticator(new TextEncoder().encode(readFileSync(join(dataDir, "nats-credentials", "observer.nk"), "utf8").trim())) });

/** Runs `npm start`'s script and collects what it prints. */
async function startSystem(dataDir: string, options: SystemOptions = {}) {
  const given = options.ports ?? { nats: await freePort(), products: await freePort(), orders: await freePort() };
  const ports = { ...given, productsMetrics: given.productsMetrics ?? (await freePort()), ordersMetrics: given.ordersMetrics ?? (await freePort()) };
  const env = { ...startEnv(dataDir, ports), LOG_LEVEL: options.logLevel ?? "warn", ...options.env };
  const [command, args] = options.npm ? ["npm", ["start", "--ignore-scripts", "--", ...(options.args ?? [])]] : [process.execPath, ["--import", "tsx", "tools/start.ts", ...(options.args ?? [])]];
  const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"], detached: options.detached ?? false });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  await expect.poll(() => output, { timeout: options.upTimeoutMs ?? 40_000, interval: 100 }).toContain("Concord is up");
  return { child, exited, output: () => output, ports, productsAddress: `127.0.0.1:${ports.products}` };
}

/**
 * Brings a system up whose product service, started again, waits before it
 * runs until the file `go` exists, and kills its product service: the test
 * acts while the one started again waits, and writes `go` to let it run.
 */
async function killProductsHeldAtRestart(dataDir: string) {
  const go = join(dataDir, "let-products-start");
  writeFileSync(go, "");
  const system = await startSystem(dataDir, { env: holdStart("products", go) });
  rmSync(go);
  const pid = Number(/products: .*pid (\d+)/.exec(system.output())![1]);
  process.kill(pid, "SIGKILL");
  return { system, go, pid };
}

/**
 * Waits until `npm start` says its product service, started again, is running again, places an order through it,
 * checks that nothing stopped meanwhile, and stops the system with Ctrl-C (exit 0).
 */
async function productsBackThenCtrlC(dataDir: string, system: Awaited<ReturnType<typeof startSystem>>): Promise<void> {
  await expect.poll(() => pidsRunningAgain(system.output(), "products"), { timeout: 40_000, interval: 100 }).toHaveLength(1);
  await orderConfirmed(dataDir, system.ports, 30_000);
  expect(system.output()).not.toContain("stopping everything");
  system.child.kill("SIGINT");
  expect(await system.exited).toBe(0);
}

describe("npm start", () => {
  const dir = tempDir();
  let child: ChildProcess | undefined;
  // Each test gets the directory empty and present (the one before removed it).
  beforeEach(() => {
    mkdirSync(dir.path, { recursive: true });
  });
  afterEach(() => {
    // Whatever a failed test left running, so the next one starts clean.
    child?.kill("SIGKILL");
    for (const pid of processesOf(dir.path)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    child = undefined;
    dir.remove();
  });

  it("brings the system up over TLS with tokens, serves calls and metrics, and stops everything cleanly on Ctrl-C", { timeout: 90_000 }, async () => {
    // DATABASE_URL left over in a shell is said to go unused, rather than silently.
    const system = await startSystem(dir.path, { env: { DATABASE_URL: "postgres://db.example.invalid/shop" } });
    child = system.child;
    expect(system.output()).toContain(
      "start: DATABASE_URL is not used: the two services need a database each; set PRODUCTS_DATABASE_URL and ORDERS_DATABASE_URL (or add --postgres). Going on with SQLite files in DATA_DIR where those are unset",
    );
    expect(system.output()).toMatch(/products: gRPC on .*\(database .*products\.db,/);
    const { productsMetrics, ordersMetrics } = system.ports;
    expect(system.output()).toMatch(new RegExp(`products: gRPC on 127\\.0\\.0\\.1:\\d+, metrics on http://127\\.0\\.0\\.1:${productsMetrics}/metrics`));
    expect(system.output()).toMatch(new RegExp(`orders: {3}gRPC on 127\\.0\\.0\\.1:\\d+, metrics on http://127\\.0\\.0\\.1:${ordersMetrics}/metrics`));
    // TLS with the CA and token key made under DATA_DIR on this first run; plaintext and token-less calls are refused.
    // A DATA_DIR outside the working directory is shown by its absolute path, not as ../../tmp/... .
    // It named the files alone (ca.pem, ...), which are not in DATA_DIR but in its tls and auth folders.
    expect(system.output()).toContain(`made the development CA, certificates and token key under ${dir.path}: tls/ca.pem, tls/products.pem, tls/orders.pem, tls/client.pem, auth/token-hs256.key\n`);
    expect(system.output()).toContain(`store in ${join(dir.path, "nats")}, log in ${join(dir.path, "nats-server.log")}`);
    expect(system.output()).toContain(`Concord is up. Try: grpcurl -cacert ${join(dir.path, "tls", "ca.pem")} `);
    expect(statSync(join(dir.path, "auth", "token-hs256.key")).mode & 0o777).toBe(0o600);
    // Database URLs may hold passwords: each service is handed its own alone, nats-server none.
    const databaseVariables = (pid: number | undefined) =>
      readFileSync(`/proc/${pid}/environ`, "utf8")
        .split("\0")
        .filter((v) => /^(\w+_)?DATABASE_URL=/.test(v))
        .map((v) => v.slice(0, v.indexOf("=")));
    expect(databaseVariables(natsServerPid(dir.path, "nats-server.conf"))).toEqual([]);
    expect(databaseVariables(Number(/products: .*pid (\d+)\)/.exec(system.output())?.[1]))).toEqual(["PRODUCTS_DATABASE_URL"]);
    expect(databaseVariables(Number(/orders: .*pid (\d+)\)/.exec(system.output())?.[1]))).toEqual(["ORDERS_DATABASE_URL"]);
    const client = createClient(ProductServiceService, { address: system.productsAddress, ...toolClientSecurity({ subject: "ops", roles: ["admin"] }, { DATA_DIR: dir.path }) });
    const { product } = await client.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 1 });
    expect(product?.name).toBe("Teapot");
    client.close();
    const scraped = await (await fetch(`http://127.0.0.1:${productsMetrics}/metrics`)).text();
    expect(scraped).toContain('grpc_server_handled_total{grpc_service="shop.products.v1.ProductService",grpc_method="CreateProduct",grpc_code="OK"} 1');
    expect(await (await fetch(`http://127.0.0.1:${ordersMetrics}/metrics`)).text()).toContain("concord_outbox_depth");
    const plaintext = createClient(ProductServiceService, { address: system.productsAddress, maxAttempts: 1 });
    expect((await grpcError(plaintext.getProduct({ id: product!.id }))).code).toBe(Code.UNAVAILABLE);
    plaintext.close();
    const noToken = createClient(ProductServiceService, { address: system.productsAddress, maxAttempts: 1, credentials: clientTlsCredentials({ caFile: join(dir.path, "tls", "ca.pem") }) });
    expect((await grpcError(noToken.getProduct({ id: product!.id }))).code).toBe(Code.UNAUTHENTICATED);
    noToken.close();
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    expect(system.output()).toContain("everything stopped");
  });

  it("is found by try-order with DATA_DIR alone, where PRODUCTS_LISTEN and ORDERS_LISTEN put it; those and the flags still win", { timeout: 120_000 }, async () => {
    // Ports other than the defaults, given to this start only: another shell knows DATA_DIR and nothing else.
    const system = await startSystem(dir.path);
    child = system.child;
    const tryOrder = (args: string[], env: Record<string, string | undefined>) => {
      const merged: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dir.path };
      for (const name of ["PRODUCTS_LISTEN", "ORDERS_LISTEN", "GRPC_INSECURE", "GRPC_AUTH"]) delete merged[name];
      return spawnSync(process.execPath, ["--import", "tsx", "tools/try-order.ts", ...args], { env: { ...merged, ...env }, encoding: "utf8", timeout: 60_000 });
    };
    const found = tryOrder([], {});
    expect(found.stderr).toBe("");
    expect(found.status).toBe(0);
    expect(found.stdout).toMatch(/order \S+ is ORDER_STATE_CONFIRMED/);
    // A variable, and a flag over it, still say where to look.
    const closed = `127.0.0.1:${await freePort()}`;
    const told = tryOrder([], { PRODUCTS_LISTEN: closed });
    expect(told.status).toBe(1);
    expect(told.stderr).toContain(`try-order: the product service at ${closed} is not serving`);
    expect(told.stderr).not.toContain("order service");
    const flagged = tryOrder(["--orders", closed], { ORDERS_LISTEN: `127.0.0.1:${system.ports.orders}` });
    expect(flagged.status).toBe(1);
    expect(flagged.stderr).toContain(`try-order: the order service at ${closed} is not serving`);
    expect(flagged.stderr).not.toContain("product service");
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
  });

  it("runs nats-server with the generated authorization: a seed per user under DATA_DIR (0600), kept across starts, never printed; no credentials, no connection", { timeout: 90_000 }, async () => {
    const system = await startSystem(dir.path);
    child = system.child;
    const credentials = join(dir.path, "nats-credentials");
    expect(statSync(credentials).mode & 0o777).toBe(0o700);
    const seeds = Object.fromEntries(["orders", "products", "observer", "operator"].map((user) => [user, readFileSync(join(credentials, `${user}.nk`), "utf8").trim()]));
    for (const user of Object.keys(seeds)) {
      expect(statSync(join(credentials, `${user}.nk`)).mode & 0o777).toBe(0o600);
      expect(seeds[user]).toMatch(/^SU[A-Z2-7]+$/);
      expect(system.output()).not.toContain(seeds[user]);
    }
    const url = `nats://127.0.0.1:${system.ports.nats}`;
    await expect(natsConnect({ servers: url, reconnect: false })).rejects.toThrow(/authorization violation/i);
    const nc = await natsConnect({ servers: url, ...observerAuth(dir.path) });
    expect((await (await nc.jetstreamManager()).streams.names().next()).sort()).toEqual(["CONCORD_DLQ", "SHOP_ORDERS", "SHOP_PRODUCTS"]);
    await nc.close();
    // One Go scheduler thread (tools/nats/server-config.ts, natsServerEnv): the server shares the machine with the services.
    expect(readFileSync(`/proc/${natsServerPid(dir.path, "nats-server.conf")}/environ`, "utf8").split("\0")).toContain("GOMAXPROCS=1");
    // The saga runs: each service publishes and consumes with its own user.
    const admin = toolClientSecurity({ subject: "ops", roles: ["admin"] }, { DATA_DIR: dir.path });
    const products = createClient(ProductServiceService, { address: system.productsAddress, ...admin });
    const orders = createClient(OrderServiceService, { address: `127.0.0.1:${system.ports.orders}`, ...admin });
    const { product } = await products.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 2 });
    const { order } = await orders.createOrder({ customerId: "c-1", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address });
    await expect.poll(async () => (await orders.getOrder({ id: order!.id })).order!.state, { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    products.close();
    orders.close();
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    // A second start keeps the keys.
    const again = await startSystem(dir.path);
    child = again.child;
    for (const user of Object.keys(seeds)) expect(readFileSync(join(credentials, `${user}.nk`), "utf8").trim()).toBe(seeds[user]);
    again.child.kill("SIGINT");
    expect(await again.exited).toBe(0);
  });

  it("starts a cluster of three nats-servers with --cluster: streams of 3 replicas, every service given all three, and the tools find them", { timeout: 90_000 }, async () => {
    const natsPort = await freeClusterPort();
    const system = await startSystem(dir.path, { args: ["--cluster"], ports: { nats: natsPort, products: await freePort(), orders: await freePort() } });
    child = system.child;
    const urls = [0, 1, 2].map((i) => `nats://127.0.0.1:${natsPort + i}`).join(",");
    expect(system.output()).toContain(`cluster of 3 (JetStream, streams with 3 replicas, sync_interval always) on ${urls}`);
    const nc = await natsConnect({ servers: urls.split(","), ...observerAuth(dir.path) });
    const jsm = await nc.jetstreamManager();
    for (const stream of ["SHOP_ORDERS", "SHOP_PRODUCTS", "CONCORD_DLQ"]) {
      const info = await jsm.streams.info(stream);
      expect(info.config.num_replicas).toBe(3);
      expect(info.cluster?.replicas).toHaveLength(2);
    }
    await nc.close();
    for (const service of ["products", "orders"]) {
      const pid = new RegExp(`${service}: .*pid (\\d+)`).exec(system.output())![1];
      expect(readFileSync(`/proc/${pid}/environ`, "utf8").split("\0")).toContain(`NATS_URL=${urls}`);
    }
    // The tools, given DATA_DIR alone (no NATS_URL, NATS_PORT or --nats), find the three servers this start runs.
    const found = await runConcord({ DATA_DIR: dir.path, NATS_URL: undefined, NATS_PORT: undefined, NATS_NKEY_SEED: undefined, GRPC_INSECURE: undefined }, ["status"]);
    expect(found.status, found.stdout + found.stderr).toBe(0);
    expect(found.stdout).toContain(`NATS ${urls}: connected to n`);
    const listed = await runConcord({ DATA_DIR: dir.path, NATS_URL: undefined, NATS_PORT: undefined, NATS_NKEY_SEED: undefined }, ["dlq", "list"]);
    expect(listed.status, listed.stderr).toBe(0);
    expect(listed.stderr).toContain("concord dlq list: 0 dead letter(s)");
    // NATS_PORT given still wins over what the start recorded.
    const told = await runConcord({ DATA_DIR: dir.path, NATS_URL: undefined, NATS_PORT: String(natsPort + 1), NATS_NKEY_SEED: undefined, GRPC_INSECURE: undefined }, ["status"]);
    expect(told.stdout).toContain(`NATS nats://127.0.0.1:${natsPort + 1}: connected to n2 `);
    expect(readFileSync(join(dir.path, "nats-cluster", "n2.conf"), "utf8")).toMatch(/sync_interval: always[\s\S]*cluster \{/);
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    expect(processesOf(dir.path)).toEqual([]);
  });

  it("starts a killed nats-server of the cluster again while the services run on, and gives up after 5 exits within a minute", { timeout: 120_000 }, async () => {
    const natsPort = await freeClusterPort();
    const system = await startSystem(dir.path, { args: ["--cluster"], ports: { nats: natsPort, products: await freePort(), orders: await freePort() } });
    child = system.child;
    const servicePids = ["products", "orders"].map((service) => Number(new RegExp(`${service}: .*pid (\\d+)`).exec(system.output())![1]));
    let killed = natsServerPid(dir.path, "n1.conf")!;
    process.kill(killed, "SIGKILL");
    await expect.poll(() => system.output(), { timeout: 40_000, interval: 100 }).toContain("start: nats-server n1 is running again");
    expect(system.output()).toContain("start: nats-server n1 exited (killed by SIGKILL); starting it again in 1 s");
    for (const pid of servicePids) expect(() => process.kill(pid, 0)).not.toThrow();
    await orderConfirmed(dir.path, system.ports, 30_000);
    // Four more exits within the minute: a crash loop, which stops everything.
    for (let exit = 2; exit <= 5; exit++) {
      const previous = killed;
      await expect.poll(() => natsServerPid(dir.path, "n1.conf") ?? previous, { timeout: 10_000, interval: 50 }).not.toBe(previous);
      killed = natsServerPid(dir.path, "n1.conf")!;
      process.kill(killed, "SIGKILL");
    }
    expect(await system.exited).toBe(1);
    expect(system.output()).toContain("start: nats-server n1 exited (killed by SIGKILL), 5 times within 60 s; not starting it again; stopping everything");
    expect(system.output()).toContain("everything stopped");
    expect(processesOf(dir.path)).toEqual([]);
  });

  it("starts its one nats-server again when it is killed, and the services carry on with it", { timeout: 90_000 }, async () => {
    const system = await startSystem(dir.path);
    child = system.child;
    process.kill(natsServerPid(dir.path, "nats-server.conf")!, "SIGKILL");
    await expect.poll(() => system.output(), { timeout: 20_000, interval: 100 }).toContain("start: nats-server is running again");
    expect(system.output()).toContain("start: nats-server exited (killed by SIGKILL); starting it again in 1 s");
    await orderConfirmed(dir.path, system.ports, 30_000);
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    expect(processesOf(dir.path)).toEqual([]);
  });

  it("starts its PostgreSQL server again when it is killed (--postgres), and the services carry on with it", { timeout: 120_000 }, async () => {
    chmodSync(dir.path, 0o755); // the postgres user runs the server (as root), and needs to reach its data dir
    const postgresPort = await freePort();
    const system = await startSystem(dir.path, { args: ["--postgres"], env: { POSTGRES_PORT: String(postgresPort) }, upTimeoutMs: 90_000 });
    child = system.child;
    const postmaster = Number(readFileSync(join(dir.path, "postgres", "postmaster.pid"), "utf8").split("\n")[0]);
    process.kill(postmaster, "SIGKILL");
    await expect.poll(() => system.output(), { timeout: 40_000, interval: 100 }).toContain("start: PostgreSQL is running again");
    expect(system.output()).toContain("start: PostgreSQL ended by SIGKILL; starting it again in 1 s");
    expect(system.output()).not.toContain("stopping everything");
    // The services' pools find the old connections broken and make new ones: a call may meet one first.
    await expect.poll(() => orderConfirmed(dir.path, system.ports, 20_000).then(() => true, () => false), { timeout: 60_000, interval: 500 }).toBe(true);
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    expect(await isListening(postgresPort)).toBe(false);
    expect(processesOf(dir.path)).toEqual([]);
  });

  it("with --instances 2, starts a killed instance again on its ports while the other answers meanwhile (--postgres)", { timeout: 180_000 }, async () => {
    chmodSync(dir.path, 0o755); // the postgres user runs the server (as root), and needs to reach its data dir
    /** A port p with p + 2 free too, for the second instance. */
    const pairOfPorts = () => freePort({ alsoFree: [2] });
    const ports = { nats: await freePort(), products: await pairOfPorts(), orders: await pairOfPorts(), productsMetrics: await pairOfPorts(), ordersMetrics: await pairOfPorts() };
    // An order service started once the test has removed this file waits, before it runs, until the file is back.
    const go = join(dir.path, "let-orders-start");
    writeFileSync(go, "");
    const hold = { ...holdStart("orders", go), POSTGRES_PORT: String(await freePort()) };
    const system = await startSystem(dir.path, { ports, args: ["--postgres", "--instances", "2"], env: hold, upTimeoutMs: 90_000 });
    child = system.child;
    const killed = Number(/orders#2: .*pid (\d+)/.exec(system.output())![1]);
    rmSync(go);
    process.kill(killed, "SIGKILL");
    // Away (started again, and held before it listens), orders#2 leaves orders#1 to answer: an order placed through it is confirmed.
    await expect.poll(() => system.output(), { timeout: 20_000, interval: 100 }).toContain("start: orders#2 exited (killed by SIGKILL); starting it again in 1 s");
    const orders2 = () => processesOf(dir.path).filter((pid) => pid !== killed && isAlive(pid) && environOf(pid).includes(`ORDERS_LISTEN=127.0.0.1:${ports.orders + 2}`));
    await expect.poll(() => orders2().length, { timeout: 20_000, interval: 100 }).toBe(1);
    expect(await isListening(ports.orders + 2)).toBe(false);
    await orderConfirmed(dir.path, { products: ports.products, orders: ports.orders }, 30_000);
    expect(system.output()).not.toContain("orders#2 is running again");
    // Let go, it serves on its port again, and an order placed through it is confirmed.
    writeFileSync(go, "");
    await expect.poll(() => pidsRunningAgain(system.output(), "orders#2"), { timeout: 40_000, interval: 100 }).toHaveLength(1);
    await orderConfirmed(dir.path, { products: ports.products + 2, orders: ports.orders + 2 }, 30_000);
    const metrics = await fetch(`http://127.0.0.1:${ports.ordersMetrics + 2}/metrics`);
    expect(metrics.status).toBe(200);
    expect(system.output()).not.toContain("stopping everything");
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    expect(processesOf(dir.path)).toEqual([]);
  });

  it("says at start when the store of the other mode, one server or --cluster, holds streams it does not see", { timeout: 120_000 }, async () => {
    const ports = { nats: await freeClusterPort(), products: await freePort(), orders: await freePort() };
    const oneServer = await startSystem(dir.path, { ports });
    child = oneServer.child;
    expect(oneServer.output()).not.toContain("holds the streams");
    oneServer.child.kill("SIGINT");
    expect(await oneServer.exited).toBe(0);
    const cluster = await startSystem(dir.path, { ports, args: ["--cluster"] });
    child = cluster.child;
    expect(cluster.output()).toContain(`  ${join(dir.path, "nats")} holds the streams (events, dead letters) of \`npm start\` without --cluster, which this cluster does not see`);
    cluster.child.kill("SIGINT");
    expect(await cluster.exited).toBe(0);
    const again = await startSystem(dir.path, { ports });
    child = again.child;
    expect(again.output()).toContain(`  ${join(dir.path, "nats-cluster")} holds the streams (events, dead letters) of \`npm start -- --cluster\`, which this server does not see`);
    again.child.kill("SIGINT");
    expect(await again.exited).toBe(0);
  });

  it("runs two instances of each service on a PostgreSQL server of its own with --postgres --instances 2, names the one relaying each outbox, and stops it all", { timeout: 180_000 }, async () => {
    // The postgres user runs the server (as root), and needs to reach its data dir.
    chmodSync(dir.path, 0o755);
    /** A port p with p + 2 free too, for the second instance. */
    const pairOfPorts = () => freePort({ alsoFree: [2] });
    const ports = { nats: await freePort(), products: await pairOfPorts(), orders: await pairOfPorts(), productsMetrics: await pairOfPorts(), ordersMetrics: await pairOfPorts() };
    const postgresPort = await freePort();
    const system = await startSystem(dir.path, { ports, args: ["--postgres", "--instances", "2"], env: { POSTGRES_PORT: String(postgresPort) }, upTimeoutMs: 90_000 });
    child = system.child;
    const out = system.output();
    expect(out).toContain(`PostgreSQL on 127.0.0.1:${postgresPort}`);
    for (const [name, port] of [["products#1", ports.products], ["products#2", ports.products + 2], ["orders#1", ports.orders], ["orders#2", ports.orders + 2]] as const) {
      expect(out).toMatch(new RegExp(`${name}: +gRPC on 127\\.0\\.0\\.1:${port}, metrics on http://127\\.0\\.0\\.1:\\d+/metrics \\(database postgres://`));
    }
    // The instances of a service write lines alike: each line says which wrote it, by the name above.
    const logged = () =>
      system.output().split("\n").flatMap((line) => {
        try {
          return [JSON.parse(line) as Record<string, unknown>];
        } catch {
          return [];
        }
      });
    // At warn, as this start logs: a standalone server keeps each stream 1 replica, not the contract's 3.
    const notClustered = (name: string) => logged().filter((l) => l.instance === name && String(l.msg).startsWith("nats-server is not clustered")).length;
    for (const name of ["products#1", "products#2", "orders#1", "orders#2"]) await expect.poll(() => notClustered(name), { message: name }).toBeGreaterThan(0);
    expect(logged().filter((l) => l.instance === undefined)).toEqual([]);
    const products = createClient(ProductServiceService, { address: `127.0.0.1:${ports.products + 2}`, ...toolClientSecurity({ subject: "ops", roles: ["admin"] }, { DATA_DIR: dir.path }) });
    const { product } = await products.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 5 });
    // Both order instances know it and place orders that the saga confirms.
    const placed: string[] = [];
    for (const port of [ports.orders, ports.orders + 2]) {
      const orders = createClient(OrderServiceService, { address: `127.0.0.1:${port}`, ...toolClientSecurity({ subject: "c", roles: ["customer"] }, { DATA_DIR: dir.path }) });
      await expect.poll(async () => orders.createOrder({ customerId: "c", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address }).then((r) => (placed.push(r.order!.id), true), () => false), { timeout: 20_000 }).toBe(true);
      orders.close();
    }
    await expect.poll(async () => (await products.getProduct({ id: product!.id })).product!.stock, { timeout: 20_000 }).toBe(3);
    products.close();
    // `concord status`, with the system's variables and no flags, finds every instance from what the start recorded.
    const statusEnv = { DATA_DIR: dir.path, NATS_PORT: String(ports.nats), NATS_URL: undefined, GRPC_INSECURE: undefined };
    const status = await runConcord(statusEnv, ["status"]);
    expect(status.status, status.stdout + status.stderr).toBe(0);
    for (const [name, port] of [["products#1", ports.products], ["products#2", ports.products + 2], ["orders#1", ports.orders], ["orders#2", ports.orders + 2]] as const) {
      expect(status.stdout).toContain(`${name}  gRPC 127.0.0.1:${port}: SERVING\n`);
    }
    expect(status.stdout).toContain("orders  consumers, shared by its 2 instances:\n  consumer orders-stock-reserved on SHOP_PRODUCTS: pending");
    // Each service's instances share its database, so one outbox: shown once a service, not once an instance.
    const outboxLines = status.stdout.split("\n").filter((line) => line.includes("outbox"));
    expect(outboxLines, status.stdout).toEqual([
      expect.stringMatching(/^products {2}outbox, one in the database its 2 instances share: depth \d+, oldest [\d.]+s, parked 0 \(read through products#1\)$/),
      expect.stringMatching(/^orders {2}outbox, one in the database its 2 instances share: depth \d+, oldest [\d.]+s, parked 0 \(read through orders#1\)$/),
    ]);
    // One instance of each relays its outbox, the one holding the relay's lock, and is named.
    expect(status.stdout).toMatch(/\nproducts {2}relayed by products#[12]\n/);
    expect(status.stdout).toMatch(/\norders {2}relayed by orders#[12]\n/);
    // One instance stopped (it holds its connections and answers nothing): named, and the status fails.
    const stopped = Number(/orders#2: .*, pid (\d+)\)/.exec(out)![1]);
    process.kill(stopped, "SIGSTOP");
    try {
      const down = await runConcord(statusEnv, ["status"]);
      expect(down.status, down.stdout + down.stderr).toBe(1);
      expect(down.stdout).toContain(`orders#2  gRPC 127.0.0.1:${ports.orders + 2}: unreachable (no answer within 2 s)\n  outbox not read through it: metrics at 127.0.0.1:${ports.ordersMetrics + 2}: no answer within 3 s\n`);
      expect(down.stdout).toMatch(/\norders {2}outbox, one in the database its 2 instances share: depth \d+, oldest [\d.]+s, parked 0 \(read through orders#1\)\n/);
      expect(down.stdout).toContain(`orders#1  gRPC 127.0.0.1:${ports.orders}: SERVING\n`);
      expect(down.stdout).toContain(`products#2  gRPC 127.0.0.1:${ports.products + 2}: SERVING\n`);
      // Stopped, orders#2 relays nothing: orders#1 holds the relay, at once or once the server has ended the stopped
      // holder's session (15 s without a statement), and is named.
      await expect
        .poll(async () => (await runConcord(statusEnv, ["status"])).stdout.split("\n").find((line) => line.startsWith("orders  relayed by")), { timeout: 40_000, interval: 1_000 })
        .toBe("orders  relayed by orders#1");
    } finally {
      process.kill(stopped, "SIGCONT");
    }
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    expect(system.output()).toContain("everything stopped");
    expect(await isListening(postgresPort)).toBe(false);
    expect(existsSync(join(dir.path, "start-services.json"))).toBe(false);
  });

  it("backs up and restores a service's database on PostgreSQL with README Backups and restores' commands: concord database backup while it runs, restore with --postgres-only's server alone, redelivery from the floors", { timeout: 300_000 }, async () => {
    chmodSync(dir.path, 0o755); // the postgres user runs the server (as root), and needs to reach its data dir
    const postgresPort = String(await freePort());
    const backups = join(dir.path, "backups");
    /** The words of the README's `npx concord database COMMAND` after `marker`, on this test's backup folder. */
    const readmeConcord = (marker: string, command: string) => {
      const found = readmeBlock(marker).find((c) => c.argv.slice(0, 3).join(" ") === `npx concord database` && c.argv[3] === command);
      expect(found, `concord database ${command} after ${marker}`).toBeDefined();
      return found!.argv.slice(2).map((word) => word.replace("/var/backups", backups));
    };
    const onPostgres = "On PostgreSQL (`npm start -- --postgres`";
    const restoreSteps = "so start that server again alone";
    expect(readmeBlock(restoreSteps).map((c) => c.text)).toEqual(["npm start -- --postgres-only", "npx concord database restore orders /var/backups/orders.dump", "npm start -- --postgres"]);
    const withCluster = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", "--postgres-only", "--cluster"], { env: { ...process.env, DATA_DIR: join(dir.path, "never-made") }, encoding: "utf8", timeout: 20_000 });
    expect(withCluster.status).toBe(2);
    expect(withCluster.stderr).toContain("start: --postgres-only starts the PostgreSQL server alone; --instances and --cluster are for the services and nats-server, which it does not start (`npm start -- --help` shows the usage)\n");

    let system = await startSystem(dir.path, { args: ["--postgres"], env: { POSTGRES_PORT: postgresPort }, upTimeoutMs: 90_000 });
    child = system.child;
    // The tools as the README runs them: the database, NATS and the seeds found from what the start recorded in DATA_DIR.
    const toolEnv = { DATA_DIR: dir.path, NATS_PORT: String(system.ports.nats), NATS_URL: undefined, ORDERS_DATABASE_URL: undefined, DATABASE_URL: undefined };
    const security = (subject: string, roles: string[]) => toolClientSecurity({ subject, roles }, { DATA_DIR: dir.path });
    const products = createClient(ProductServiceService, { address: system.productsAddress, ...security("ops", ["admin"]) });
    const { product } = await products.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 5 });
    products.close();
    const stock = async () => {
      const client = createClient(ProductServiceService, { address: system.productsAddress, ...security("ops", ["admin"]) });
      try {
        return (await client.getProduct({ id: product!.id })).product!.stock;
      } finally {
        client.close();
      }
    };
    const place = async (port: number) => {
      const orders = createClient(OrderServiceService, { address: `127.0.0.1:${port}`, ...security("c", ["customer"]) });
      try {
        let id: string | undefined;
        await expect.poll(async () => orders.createOrder({ customerId: "c", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address }).then((r) => ((id = r.order!.id), true), () => false), { timeout: 20_000 }).toBe(true);
        return id!;
      } finally {
        orders.close();
      }
    };
    const before = await place(system.ports.orders);
    const backupArgs = readmeConcord(onPostgres, "backup");
    const dump = backupArgs.at(-1)!;
    const backup = await runConcord(toolEnv, backupArgs);
    expect(backup.status, backup.stderr).toBe(0);
    const record = JSON.parse(readFileSync(`${dump}.json`, "utf8")) as { database: string; positions: Array<{ durable: string; ackFloor: number }> };
    expect(record.database).toBe(`postgres://postgres@127.0.0.1:${postgresPort}/orders`);
    expect(record.positions.map((p) => p.durable).sort()).toEqual(["orders-product-created", "orders-product-updated", "orders-stock-reservation-failed", "orders-stock-reserved"]);
    const after = await place(system.ports.orders);
    await expect.poll(stock, { timeout: 20_000 }).toBe(3);
    // While the order service runs, its sessions are on the database: the restore is refused, and changes nothing.
    const running = await runConcord(toolEnv, readmeConcord(restoreSteps, "restore"));
    expect(running.status).toBe(1);
    expect(running.stderr).toMatch(/^concord database restore: postgres:\/\/postgres@127\.0\.0\.1:\d+\/orders is in use: \d+ other session\(s\) on it, "concord pid \d+" .*nothing was restored\n$/);
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);

    // The services stopped, their PostgreSQL server alone again, as the README has it.
    const alone = await startPostgresOnly({ ...startEnv(dir.path, system.ports), POSTGRES_PORT: postgresPort }, (started) => (child = started));
    expect(alone.output()).toContain(`postgres://postgres@127.0.0.1:${postgresPort}/orders; no nats-server, no service. Ctrl-C stops it.`);
    expect(await isListening(system.ports.orders)).toBe(false);
    expect(await isListening(system.ports.nats)).toBe(false);
    const restored = await runConcord(toolEnv, readmeConcord(restoreSteps, "restore"));
    expect(restored.status, restored.stderr).toBe(0);
    expect(restored.stderr).toContain(`concord database restore: ${dump} restored into postgres://postgres@127.0.0.1:${postgresPort}/orders\n`);
    // One command per consumer, from one past its floor at the backup.
    const commands = restored.stdout.trim().split("\n");
    expect(commands).toEqual(record.positions.map((p) => `npx concord consumer redeliver ${p.durable} --from ${p.ackFloor + 1}`));
    alone.child.kill("SIGINT");
    expect(await alone.exited).toBe(0);
    expect(alone.output()).toContain("start: everything stopped");
    expect(await isListening(Number(postgresPort))).toBe(false);

    system = await startSystem(dir.path, { ports: system.ports, args: ["--postgres"], env: { POSTGRES_PORT: postgresPort }, upTimeoutMs: 90_000 });
    child = system.child;
    const orders = createClient(OrderServiceService, { address: `127.0.0.1:${system.ports.orders}`, ...security("c", ["customer"]) });
    try {
      expect((await orders.getOrder({ id: before })).order!.id).toBe(before);
      expect(await grpcError(orders.getOrder({ id: after }))).toMatchObject({ code: Code.NOT_FOUND });
    } finally {
      orders.close();
    }
    // The commands it printed, run once the service runs again: the lost order's StockReserved, delivered again, is
    // about an order the service no longer has, and the product service gives its unit back.
    for (const command of commands) {
      const ran = await runConcord(toolEnv, command.split(" ").slice(2));
      expect(ran.status, `${command}: ${ran.stderr}`).toBe(0);
    }
    await expect.poll(stock, { timeout: 30_000 }).toBe(4);
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
  });

  it("records a --postgres-only start as running PostgreSQL alone: `concord status` says so in one line, exit 1, where it asked the default ports whether the system was running", { timeout: 120_000 }, async () => {
    chmodSync(dir.path, 0o755); // the postgres user runs the server (as root), and needs to reach its data dir
    const postgresPort = String(await freePort());
    const alone = await startPostgresOnly({ ...process.env, DATA_DIR: dir.path, POSTGRES_PORT: postgresPort, NATS_URL: "", LOG_LEVEL: "warn" }, (started) => (child = started));
    const statusEnv = { DATA_DIR: dir.path, NATS_URL: undefined, NATS_PORT: undefined, GRPC_INSECURE: undefined };
    const said = await runConcord(statusEnv, ["status"]);
    expect([said.status, said.stdout, said.stderr]).toEqual([1, `npm start -- --postgres-only runs PostgreSQL alone on DATA_DIR ${dir.path}; the services and NATS are not running\n`, ""]);
    // Told where to look, it looks there, as before.
    const elsewhere = await runConcord(statusEnv, ["status", "--nats", `nats://127.0.0.1:${await freePort()}`]);
    expect(elsewhere.status).toBe(1);
    expect(elsewhere.stdout).toContain("is the system running?");
    // So do the variables that name where the services and NATS are (run by hand beside that PostgreSQL, say): they were passed over.
    const natsPort = String(await freePort());
    for (const variables of [{ NATS_URL: `nats://127.0.0.1:${natsPort}` }, { NATS_PORT: natsPort }, { PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}` }, { ORDERS_METRICS_LISTEN: `127.0.0.1:${await freePort()}` }]) {
      const named = await runConcord({ ...statusEnv, ...variables }, ["status"]);
      expect(named.status, JSON.stringify(variables)).toBe(1);
      expect(named.stdout, JSON.stringify(variables)).not.toContain("--postgres-only");
      expect(named.stdout, JSON.stringify(variables)).toContain(`${Object.keys(variables)[0]!.startsWith("NATS") ? `127.0.0.1:${natsPort}` : Object.values(variables)[0]}`);
    }
    alone.child.kill("SIGINT");
    expect(await alone.exited).toBe(0);
    expect(existsSync(join(dir.path, "start-services.json"))).toBe(false);
    const after = await runConcord(statusEnv, ["status"]);
    expect(after.stdout).not.toContain("--postgres-only");
  });

  it("records its services as starting until they serve: `concord status` meanwhile says so, rather than that they failed", { timeout: 120_000 }, async () => {
    const ports = { nats: await freePort(), products: await freePort(), orders: await freePort(), productsMetrics: await freePort(), ordersMetrics: await freePort() };
    // The product service waits, before it runs, until the test lets it go; the order service starts after it.
    const go = join(dir.path, "let-products-start");
    const hold = holdStart("products", go);
    const starting = startSystem(dir.path, { ports, env: hold, upTimeoutMs: 90_000 });
    starting.catch(() => {});
    await expect.poll(() => existsSync(join(dir.path, "start-services.json")), { timeout: 30_000, interval: 100 }).toBe(true);
    const statusEnv = { DATA_DIR: dir.path, NATS_PORT: String(ports.nats), NATS_URL: undefined, GRPC_INSECURE: undefined };
    const early = await runConcord(statusEnv, ["status"]);
    // Not serving yet, so not a pass; but said to be starting, not unreachable as if it had failed.
    expect(early.status, early.stdout + early.stderr).toBe(1);
    for (const [name, port, metrics] of [["products", ports.products, ports.productsMetrics], ["orders", ports.orders, ports.ordersMetrics]] as const) {
      expect(early.stdout).toContain(`${name}  gRPC 127.0.0.1:${port}: starting: \`npm start\` has not brought it up yet (unreachable (connect ECONNREFUSED 127.0.0.1:${port}))\n`);
      expect(early.stdout).toContain(`  outbox: unknown (starting: \`npm start\` has not brought it up yet; metrics at 127.0.0.1:${metrics}: connect ECONNREFUSED 127.0.0.1:${metrics})\n`);
    }
    writeFileSync(go, "");
    const system = await starting;
    child = system.child;
    const up = await runConcord(statusEnv, ["status"]);
    expect(up.status, up.stdout + up.stderr).toBe(0);
    expect(up.stdout).not.toContain("starting");
    expect(up.stdout).toContain(`orders  gRPC 127.0.0.1:${ports.orders}: SERVING\n`);
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
  });

  it("names POSTGRES_PORT when another server takes the port while PostgreSQL is being set up (two systems started at once)", { timeout: 90_000 }, async () => {
    chmodSync(dir.path, 0o755);
    const postgresPort = await freePort();
    const env = {
      ...process.env,
      DATA_DIR: dir.path,
      NATS_URL: "",
      NATS_PORT: String(await freePort()),
      PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`,
      ORDERS_LISTEN: `127.0.0.1:${await freePort()}`,
      PRODUCTS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`,
      ORDERS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`,
      POSTGRES_PORT: String(postgresPort),
    };
    const start = spawn(process.execPath, ["--import", "tsx", "tools/start.ts", "--postgres"], { env, stdio: ["ignore", "pipe", "pipe"] });
    child = start;
    let output = "";
    start.stdout!.on("data", (d) => (output += d));
    start.stderr!.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => start.once("exit", (code) => resolve(code)));
    // The port was free when the start checked it; another system's server takes it while initdb runs.
    const blocker = createServer();
    try {
      await expect.poll(() => existsSync(join(dir.path, "postgres")), { timeout: 30_000, interval: 10 }).toBe(true);
      await new Promise<void>((resolve) => blocker.listen(postgresPort, "127.0.0.1", resolve));
      expect(await exited, output).toBe(2);
      expect(output).toContain(`start: 127.0.0.1:${postgresPort} (POSTGRES_PORT) was taken while PostgreSQL was being set up (another system started at the same time, say); set POSTGRES_PORT to another port. postgres on port ${postgresPort}`);
    } finally {
      blocker.close();
    }
  });

  it("refuses several instances on SQLite", async () => {
    const result = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", "--instances", "2"], { env: { ...process.env, DATA_DIR: dir.path, NATS_URL: "" }, encoding: "utf8", timeout: 20_000 });
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/several instances of a service share its database, which takes PostgreSQL: add --postgres/);
  });

  it("refuses a mistyped option in one line, naming the one it likely meant and where its usage is, starting nothing (exit 2)", () => {
    const result = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", "--instance", "2"], { env: { ...process.env, DATA_DIR: dir.path, NATS_URL: "" }, encoding: "utf8", timeout: 20_000 });
    expect(result.status).toBe(2);
    expect(result.stderr).toBe("start: unknown option --instance; did you mean --instances? (`npm start -- --help` shows the usage)\n");
    expect(readdirSync(dir.path)).toEqual([]);
  });

  it("takes its options after one --, as its usage says, and says so when a second -- reached it", () => {
    const result = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", "--postgres", "--", "--instances", "2"], { env: { ...process.env, DATA_DIR: dir.path, NATS_URL: "" }, encoding: "utf8", timeout: 20_000 });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("(the options all go after one --: npm start -- --postgres --instances 2)");
    expect(result.stderr.trimEnd().split("\n")).toHaveLength(1);
  });

  it("refuses options npm took as its own, given before its -- (npm start --postgres), saying to put them after it", () => {
    // npm passes such options to no script, only as npm_config_* variables, and warns: the system would start without them.
    // A setting start refuses (exit 2, starting nothing) keeps a start that let them through from running a system.
    const npmStart = (...args: string[]) =>
      spawnSync("npm", ["start", "--ignore-scripts", ...args], { env: { ...process.env, DATA_DIR: dir.path, NATS_URL: "", ORDERS_PENDING_TIMEOUT: "1m" }, encoding: "utf8", timeout: 30_000 });
    const postgres = npmStart("--postgres");
    expect(postgres.status).toBe(2);
    expect(postgres.stderr).toContain("start: npm took --postgres as its own configuration, given before its --, and passed it to no script; put the options after one --: npm start -- --postgres (`npm start -- --help` shows the usage)\n");
    const both = npmStart("--cluster", "--instances=2");
    expect(both.status).toBe(2);
    expect(both.stderr).toContain("start: npm took --instances --cluster as its own configuration, given before its --, and passed them to no script; put the options after one --: npm start -- --instances 2 --cluster (`npm start -- --help` shows the usage)\n");
  });

  it("refuses a contract edited since `npm run gen` last ran, naming it, before making anything (exit 2); once gen has run, goes on", { timeout: 120_000 }, () => {
    // A copy of this work tree, its contracts edited; gen/ as it was.
    const copy = join(dir.path, "repo");
    cpSync(repoRoot, copy, { recursive: true, filter: (path) => ![".git", "node_modules", "dist", ".data", ".tools", ".venv"].some((skip) => path === join(repoRoot, skip)) });
    for (const linked of ["node_modules", ".tools", ".venv"]) if (existsSync(join(repoRoot, linked))) symlinkSync(join(repoRoot, linked), join(copy, linked));
    const events = join(copy, "proto", "shop", "orders", "v1", "order_events.proto");
    writeFileSync(events, readFileSync(events, "utf8").replace("// Who placed it.", "// The customer who placed it."));
    const dataDir = join(dir.path, "never-made");
    // A setting the order service refuses, which start checks after the contracts: the start ends there once they match.
    const start = () => spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { cwd: copy, env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "", ORDERS_PENDING_TIMEOUT: "1m" }, encoding: "utf8", timeout: 30_000 });
    const edited = start();
    expect(edited.stderr).toBe("start: proto/ differs from what gen/ was generated from (shop/orders/v1/order_events.proto (changed)): run `npm run gen`, then npm start again\n");
    expect(edited.status).toBe(2);
    expect(existsSync(dataDir)).toBe(false);
    const gen = spawnSync(process.execPath, ["--import", "tsx", "tools/gen.ts"], { cwd: copy, encoding: "utf8", timeout: 90_000 });
    expect(gen.status, gen.stderr).toBe(0);
    const generated = start();
    expect(generated.stderr).not.toContain("proto/ differs");
    expect(generated.stderr).toContain('ORDERS_PENDING_TIMEOUT="1m" is invalid');
    expect(generated.status).toBe(2);
  });

  it("refuses a setting the services would refuse before starting anything, naming the service and the variable", () => {
    const dataDir = join(dir.path, "never-made");
    const result = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], {
      env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "", GRPC_AUTH_MAX_TOKEN_TTL: "30s", ORDERS_PENDING_TIMEOUT: "1m" },
      encoding: "utf8",
      timeout: 20_000,
    });
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/the products service would refuse its bad configuration:\n {2}GRPC_AUTH_MAX_TOKEN_TTL="30s" is invalid/);
    expect(result.stderr).not.toContain("ORDERS_PENDING_TIMEOUT");
    expect(existsSync(dataDir)).toBe(false);
    // The order service's own setting, once the shared one is good.
    const orders = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "", ORDERS_PENDING_TIMEOUT: "1m" }, encoding: "utf8", timeout: 20_000 });
    expect(orders.status).toBe(2);
    expect(orders.stderr).toMatch(/the orders service would refuse its bad configuration:\n {2}ORDERS_PENDING_TIMEOUT="1m" is invalid: expected at least 2m/);
    expect(existsSync(dataDir)).toBe(false);
    // Several instances by host name, which the order service's client refused once it had reached NATS, and the start waited 30 s for it.
    const names = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "", PRODUCTS_ADDRESS: "localhost:50051,localhost:50053" }, encoding: "utf8", timeout: 20_000 });
    expect(names.status).toBe(2);
    expect(names.stderr).toMatch(/the orders service would refuse its bad configuration:\n {2}PRODUCTS_ADDRESS="localhost:50051,localhost:50053" is invalid: several addresses must all be IPv4 or all IPv6 host:port; for host names give one DNS name/);
    expect(existsSync(dataDir)).toBe(false);
    // A NATS URL of the operator's, which the services would have failed on once started.
    const nats = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "nats://nats:notaport" }, encoding: "utf8", timeout: 20_000 });
    expect(nats.status).toBe(2);
    expect(nats.stderr).toMatch(/the products service would refuse its bad configuration:\n {2}NATS_URL="nats:\/\/nats:notaport" is invalid: the port "notaport" is not a number/);
    expect(existsSync(dataDir)).toBe(false);
    // An OTLP endpoint the services' exporter would not take for one (no scheme): it sent their spans to localhost:4318 instead.
    const otlp = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "", OTEL_EXPORTER_OTLP_ENDPOINT: "127.0.0.1:47318" }, encoding: "utf8", timeout: 20_000 });
    expect(otlp.status).toBe(2);
    expect(otlp.stderr).toContain('start: the services would refuse OTEL_EXPORTER_OTLP_ENDPOINT="127.0.0.1:47318" is not an http:// or https:// URL');
    expect(otlp.stderr.trim().split("\n")).toHaveLength(1);
    expect(existsSync(dataDir)).toBe(false);
    // A batch delay past the longest timer, which the SDK's timer would fire after 1 ms.
    const delay = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], {
      env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:47318", OTEL_BSP_SCHEDULE_DELAY: "3e9" },
      encoding: "utf8",
      timeout: 20_000,
    });
    expect(delay.status).toBe(2);
    expect(delay.stderr).toBe('start: the services would refuse OTEL_BSP_SCHEDULE_DELAY="3e9" is more than 2147483647 ms (about 24.8 days), the longest a Node.js timer waits: give at most 2147483647 (24d is 2073600000)\n');
    expect(existsSync(dataDir)).toBe(false);
  });

  it("refuses, given NATS_URL, a seed file <SERVICE>_NATS_NKEY_SEED names that the service would refuse, naming the variable, before anything is made (exit 2)", () => {
    const dataDir = join(dir.path, "never-made");
    const seedsDir = join(dir.path, "given-seeds");
    mkdirSync(seedsDir, { recursive: true });
    const seed = (name: string, mode: number, text = new TextDecoder().decode(createUser().getSeed())) => {
      const file = join(seedsDir, name);
      writeFileSync(file, `${text}\n`, { mode });
      chmodSync(file, mode);
      return file;
    };
    const good = seed("good.nk", 0o600);
    const open = seed("open.nk", 0o644);
    const theirs = seed("theirs.nk", 0o600);
    chownSync(theirs, 12345, 12345);
    const goodText = readFileSync(good, "utf8").trim();
    const damaged = seed("damaged.nk", 0o600, `${goodText.slice(0, 20)}${goodText[20] === "A" ? "B" : "A"}${goodText.slice(21)}`);
    const missing = join(seedsDir, "missing.nk");
    // Nothing listens on NATS_URL's port: each is refused before the start would look for it.
    const startWith = (env: NodeJS.ProcessEnv) =>
      spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "nats://127.0.0.1:1", PRODUCTS_NATS_NKEY_SEED: good, ORDERS_NATS_NKEY_SEED: good, ...env }, encoding: "utf8", timeout: 20_000 });
    for (const [env, said] of [
      // The product service refused it once the start had made DATA_DIR and the development CA, and everything stopped.
      [{ PRODUCTS_NATS_NKEY_SEED: open }, `start: the NATS nkey seed file ${open} is readable by others (mode 644), who could connect to NATS as this service's user with it; chmod 600 it (PRODUCTS_NATS_NKEY_SEED names it)\n`],
      // The order service's, once the product service had started.
      [{ ORDERS_NATS_NKEY_SEED: theirs }, `start: the NATS nkey seed file ${theirs} is owned by uid 12345, not by this user (uid ${process.getuid!()}) or root: its owner may know it, and connect to NATS as this service's user with it; make one of this user's own (ORDERS_NATS_NKEY_SEED names it)\n`],
      [{ ORDERS_NATS_NKEY_SEED: damaged }, expect.stringMatching(/^start: .*damaged\.nk does not hold a valid NATS user nkey seed: its checksum does not match .* \(ORDERS_NATS_NKEY_SEED names it\)\n$/)],
      [{ PRODUCTS_NATS_NKEY_SEED: missing }, expect.stringMatching(/^start: the products service would refuse its bad configuration:\n {2}PRODUCTS_NATS_NKEY_SEED=".*missing\.nk" is invalid: no such file \(/)],
    ] as const) {
      const result = startWith(env);
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr).toEqual(said);
      expect(existsSync(dataDir)).toBe(false);
    }
  });

  it("refuses a NATS_PORT or POSTGRES_PORT that is not a port, and a NATS port already taken, before making anything", { timeout: 60_000 }, async () => {
    const dataDir = join(dir.path, "never-made");
    const startWith = (env: NodeJS.ProcessEnv, ...args: string[]) =>
      spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", ...args], { env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "", ...env }, encoding: "utf8", timeout: 20_000 });
    // Node refused "abc" and 70000 once the development CA was made, "0" was waited on for 10 s, and "1e3" was port 1000.
    for (const [value, args, highest] of [["abc", [], 65535], ["70000", [], 65535], ["0", [], 65535], ["1e3", [], 65535], ["62000", ["--cluster"], 61533]] as const) {
      const result = startWith({ NATS_PORT: value }, ...args);
      expect(result.status).toBe(2);
      expect(result.stderr).toContain(`start: NATS_PORT=${JSON.stringify(value)} is not a port: give a whole number from 1 to ${highest}`);
      expect(existsSync(dataDir)).toBe(false);
    }
    const postgres = startWith({ POSTGRES_PORT: "5432x" }, "--postgres");
    expect(postgres.status).toBe(2);
    expect(postgres.stderr).toContain('start: POSTGRES_PORT="5432x" is not a port: give a whole number from 1 to 65535');
    expect(existsSync(dataDir)).toBe(false);
    // A NATS port taken, the cluster's route port say, was found once the CA, certificates and token key were made.
    const natsPort = await freeClusterPort();
    const blocker = createServer();
    try {
      await new Promise<void>((resolve) => blocker.listen(natsPort + 2000, "127.0.0.1", resolve));
      const ports = { PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_LISTEN: `127.0.0.1:${await freePort()}`, PRODUCTS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_METRICS_LISTEN: `127.0.0.1:${await freePort()}` };
      const taken = startWith({ ...ports, NATS_PORT: String(natsPort) }, "--cluster");
      expect(taken.status).toBe(2);
      expect(taken.stderr).toContain(`start: port ${natsPort + 2000} (NATS_PORT+2000, which --cluster takes for its routes) is already in use; set NATS_ROUTE_PORT to another port (the first of three)`);
      expect(readmeProse()).toContain("`start: port 6222 (NATS_PORT+2000, which --cluster takes for its routes) is already in use; set NATS_ROUTE_PORT to another port (the first of three)`");
      expect(taken.stdout).not.toContain("made the development CA");
      expect(existsSync(dataDir)).toBe(false);
    } finally {
      blocker.close();
    }
  });

  it("refuses every port it would listen on that is taken in one line (a second system on the default ports), before making anything", { timeout: 60_000 }, async () => {
    const dataDir = join(dir.path, "never-made");
    const [products, ordersMetrics, nats] = [await freePort(), await freePort(), await freePort()];
    const blockers = [products, ordersMetrics, nats].map(() => createServer());
    try {
      await Promise.all(blockers.map((b, i) => new Promise<void>((resolve) => b.listen([products, ordersMetrics, nats][i], "127.0.0.1", resolve))));
      const env = {
        ...process.env,
        DATA_DIR: dataDir,
        NATS_URL: "",
        NATS_PORT: String(nats),
        PRODUCTS_LISTEN: `127.0.0.1:${products}`,
        ORDERS_LISTEN: `127.0.0.1:${await freePort()}`,
        PRODUCTS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`,
        ORDERS_METRICS_LISTEN: `127.0.0.1:${ordersMetrics}`,
      };
      // It named PRODUCTS_LISTEN alone; set apart, the next start named ORDERS_METRICS_LISTEN, and the one after NATS_PORT.
      const taken = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env, encoding: "utf8", timeout: 20_000 });
      expect(taken.status).toBe(2);
      expect(taken.stderr).toBe(
        `start: 127.0.0.1:${products} (PRODUCTS_LISTEN), 127.0.0.1:${ordersMetrics} (ORDERS_METRICS_LISTEN) and port ${nats} are already in use; set PRODUCTS_LISTEN, ORDERS_METRICS_LISTEN and NATS_PORT to others (or NATS_URL to use the NATS server there): a second system takes a DATA_DIR and ports of its own\n`,
      );
      expect(taken.stdout).toBe("");
      expect(existsSync(dataDir)).toBe(false);
    } finally {
      for (const b of blockers) b.close();
    }
  });

  it.each([
    ["ORDERS_METRICS_LISTEN", (held: number) => `127\\.0\\.0\\.1:${held} \\(ORDERS_METRICS_LISTEN\\)`, "set ORDERS_METRICS_LISTEN to another address"],
    // nats-server met it, and the start said only `nats-server exited unexpectedly (code 1)`, its log saying why.
    ["NATS_PORT", (held: number) => `port ${held}`, "set NATS_PORT to another port"],
  ] as const)("says, of a port for %s that a socket that does not listen holds (an outgoing connection's), what holds it, before making anything", { timeout: 60_000 }, async (variable, said, advice) => {
    const dataDir = join(dir.path, "never-made");
    const held = await freePort();
    // Bound without SO_REUSEADDR and never listening, as the kernel binds a connection's own port: `ss -ltn` shows
    // nothing there, and the refusal left the user to guess what was in the way.
    const holder = spawn("python3", ["-c", `import socket, sys\ns = socket.socket()\ns.bind(("127.0.0.1", ${held}))\nprint("bound", flush=True)\nsys.stdin.read()`], { stdio: ["pipe", "pipe", "inherit"] });
    try {
      let bound = "";
      holder.stdout!.on("data", (d) => (bound += d));
      await expect.poll(() => bound, { timeout: 10_000, interval: 50 }).toContain("bound");
      const { result: taken } = await startOnFreePorts(dataDir, () => ({ [variable]: variable === "NATS_PORT" ? String(held) : `127.0.0.1:${held}` }));
      expect(taken.status).toBe(2);
      expect(taken.stderr).toMatch(
        new RegExp(`^start: ${said(held)} is already in use: a socket that does not listen holds it(, most likely an outgoing connection [^;]*)?; ${advice}, or start again once that socket has closed\n$`),
      );
      expect(existsSync(dataDir)).toBe(false);
    } finally {
      holder.kill();
    }
  });

  it("quotes the fatal line nats-server logged when it exits at start-up for another reason than a port (a JetStream store it cannot use), not an earlier run's", { timeout: 60_000 }, async () => {
    const dataDir = join(dir.path, "bad-store");
    mkdirSync(join(dataDir, "nats"), { recursive: true, mode: 0o700 });
    // A file where the store's jetstream directory goes: nats-server refuses it, exit 1.
    writeFileSync(join(dataDir, "nats", "jetstream"), "not a directory\n");
    const log = join(dataDir, "nats-server.log");
    writeFileSync(log, "[1] 2026/01/01 00:00:00.000000 [FTL] an earlier run's reason\n", { mode: 0o600 });
    const { result } = await startOnFreePorts(dataDir, () => ({}));
    expect(result.status).toBe(1);
    // It said only `start: nats-server exited unexpectedly (code 1); stopping everything`, the log saying why.
    expect(result.stderr).toContain(`start: nats-server exited unexpectedly (code 1); its log (${log}) says "Can't start JetStream: storage directory is not a directory"; stopping everything\n`);
    expect(result.stderr).not.toContain("earlier run");
  });

  it("refuses an address no process could listen on, a host that does not resolve or one not this machine's, before making anything", { timeout: 60_000 }, async () => {
    const dataDir = join(dir.path, "never-made");
    const env = {
      ...process.env,
      DATA_DIR: dataDir,
      NATS_URL: "",
      NATS_PORT: String(await freePort()),
      PRODUCTS_LISTEN: "nosuchhost.invalid:50051",
      ORDERS_LISTEN: `127.0.0.1:${await freePort()}`,
      PRODUCTS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`,
      ORDERS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`,
    };
    // The product service met it once nats-server was up and the streams provisioned, and failed with a stack trace; the start stopped everything (exit 1).
    const unresolved = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env, encoding: "utf8", timeout: 20_000 });
    expect(unresolved.status).toBe(2);
    expect(unresolved.stderr).toMatch(/^start: the address nosuchhost\.invalid:50051 cannot be listened on: its host does not resolve \(.*\); set PRODUCTS_LISTEN to an address this machine may listen on, such as 127\.0\.0\.1:<port>\n$/);
    expect(unresolved.stdout).toBe("");
    expect(existsSync(dataDir)).toBe(false);
    // 203.0.113.0/24 is for documentation (RFC 5737): no machine's own.
    const elsewhere = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...env, PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_METRICS_LISTEN: "203.0.113.9:9102" }, encoding: "utf8", timeout: 20_000 });
    expect(elsewhere.status).toBe(2);
    expect(elsewhere.stderr).toMatch(/^start: the address 203\.0\.113\.9:9102 cannot be listened on: it is not an address of this machine \(listen EADDRNOTAVAIL: .*\); set ORDERS_METRICS_LISTEN to an address/);
    expect(existsSync(dataDir)).toBe(false);
  });

  // A machine with a nats-server in an sbin directory (Debian's package, say) has one to find whatever PATH says.
  const sbinNatsServer = ["/usr/sbin", "/usr/local/sbin", "/sbin"].some((d) => existsSync(join(d, "nats-server")));
  it.skipIf(sbinNatsServer)("refuses a start with no nats-server to run before making anything: DATA_DIR, the CA, PostgreSQL's data (exit 1)", { timeout: 120_000 }, async () => {
    // A copy of this work tree without its .tools (so without the pinned nats-server), on a PATH without one.
    const copy = join(dir.path, "repo");
    cpSync(repoRoot, copy, { recursive: true, filter: (path) => ![".git", "node_modules", "dist", ".data", ".tools"].some((skip) => path === join(repoRoot, skip)) });
    symlinkSync(join(repoRoot, "node_modules"), join(copy, "node_modules"));
    const path = (process.env.PATH ?? "").split(":").filter((d) => d !== "" && !existsSync(join(d, "nats-server"))).join(":");
    const ports = { PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_LISTEN: `127.0.0.1:${await freePort()}`, PRODUCTS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`, NATS_PORT: String(await freePort()), POSTGRES_PORT: String(await freePort()) };
    // It made DATA_DIR, the development CA, certificates and token key (and with --postgres, PostgreSQL's data) first.
    for (const args of [[], ["--postgres"]]) {
      const dataDir = join(dir.path, `data${args.join("")}`);
      const result = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", ...args], { cwd: copy, env: { ...process.env, ...ports, PATH: path, DATA_DIR: dataDir, NATS_URL: "" }, encoding: "utf8", timeout: 60_000 });
      expect(result.status, result.stderr).toBe(1);
      expect(result.stderr).toBe("start: nats-server is not installed; `npm start` builds the pinned one (node tools/setup.mjs)\n");
      expect(result.stdout).toBe("");
      expect(existsSync(dataDir), args.join(" ")).toBe(false);
    }
  });

  it("refuses a DATA_DIR it cannot write, naming DATA_DIR, and writes nothing (exit 2)", { timeout: 60_000 }, async () => {
    const ports = { PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_LISTEN: `127.0.0.1:${await freePort()}`, PRODUCTS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`, NATS_PORT: String(await freePort()) };
    const startOn = (dataDir: string) => spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...process.env, ...ports, DATA_DIR: dataDir, NATS_URL: "" }, encoding: "utf8", timeout: 20_000 });
    const file = join(dir.path, "a-file");
    writeFileSync(file, "kept\n");
    // Said as "start: EEXIST: file already exists, mkdir '...'" or ENOTDIR, or EROFS for start.pid on a read-only file system (exit 1).
    const cases: Array<[string, string]> = [
      [file, "it is a file, not a directory"],
      [join(file, "data"), "a part of its path is a file, not a directory"],
    ];
    // Root writes whatever the mode says; another user may not.
    if (process.getuid?.() !== 0) {
      const locked = join(dir.path, "locked");
      mkdirSync(locked, { mode: 0o555 });
      cases.push([locked, "this user may not write there"], [join(locked, "data"), "this user may not write there"]);
    }
    for (const [dataDir, why] of cases) {
      const result = startOn(dataDir);
      expect(result.status, dataDir).toBe(2);
      expect(result.stderr).toBe(`start: DATA_DIR ${dataDir} cannot be written: ${why}; set DATA_DIR to a directory this user may write (default .data)\n`);
      expect(result.stdout).toBe("");
    }
    expect(readFileSync(file, "utf8")).toBe("kept\n");
    expect(readmeProse()).toContain("`start: DATA_DIR /mnt/ro/concord cannot be written: it is on a read-only file system; set DATA_DIR to a directory this user may write (default .data)`");
    if (process.getuid?.() !== 0) expect(readdirSync(join(dir.path, "locked"))).toEqual([]);
  });

  it("refuses a symbolic link where nats-server's log goes, before any nats-server starts (exit 2), the file it names left as it was", { timeout: 60_000 }, async () => {
    const dataDir = join(dir.path, "linked-log");
    mkdirSync(dataDir, { mode: 0o700 });
    const victim = join(dir.path, "victim");
    writeFileSync(victim, "the user's\n");
    symlinkSync(victim, join(dataDir, "nats-server.log"));
    const { result } = await startOnFreePorts(dataDir, () => ({}));
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr).toContain(
      `start: ${join(dataDir, "nats-server.log")} is a symbolic link (to ${victim}), which nats-server would follow, writing its log into the file it names; remove the link (the log is made anew there)\n`,
    );
    expect(result.stdout).not.toContain("nats-server v");
    expect(readFileSync(victim, "utf8")).toBe("the user's\n");
  });

  it("refuses a symbolic link where PostgreSQL's log goes (--postgres), before PostgreSQL starts (exit 2), the file it names left as it was", { timeout: 60_000 }, async () => {
    const dataDir = join(dir.path, "linked-postgres-log");
    mkdirSync(dataDir, { mode: 0o700 });
    const victim = join(dir.path, "postgres-victim");
    writeFileSync(victim, "the user's\n", { mode: 0o644 });
    symlinkSync(victim, join(dataDir, "postgres.log"));
    const ports = { nats: await freePort(), products: await freePort(), orders: await freePort(), productsMetrics: await freePort(), ordersMetrics: await freePort() };
    const result = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", "--postgres"], {
      env: { ...startEnv(dataDir, ports), POSTGRES_PORT: String(await freePort()) },
      encoding: "utf8",
      timeout: 100_000,
    });
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr).toContain(
      `start: ${join(dataDir, "postgres.log")} is a symbolic link (to ${victim}), which PostgreSQL would follow, writing its log into the file it names; remove the link (the log is made anew there)\n`,
    );
    expect(result.stdout).not.toContain("PostgreSQL on");
    expect(existsSync(join(dataDir, "postgres"))).toBe(false);
    expect(readFileSync(victim, "utf8")).toBe("the user's\n");
    expect(statSync(victim).mode & 0o777).toBe(0o644);
  });

  it("refuses a DATA_DIR other users may write, writing nothing (exit 2), and narrows one they may read to its owner's, saying so", { timeout: 60_000 }, async () => {
    const mode = process.getuid?.() === 0 ? 0o711 : 0o700;
    const open = join(dir.path, "open-to-all");
    mkdirSync(open);
    chmodSync(open, 0o777);
    const refused = await startOnFreePorts(open, () => ({}));
    expect([refused.result.status, refused.result.stdout, refused.result.stderr]).toEqual([
      2,
      "",
      `start: DATA_DIR ${open} is writable by other users (mode 0777): they could put a symbolic link or a file of theirs where the start writes its databases, logs and keys; make it yours alone (chmod 0${mode.toString(8)} ${open}), or set DATA_DIR to a directory of your own (default .data)\n`,
    ]);
    expect(readdirSync(open)).toEqual([]);
    expect(statSync(open).mode & 0o777).toBe(0o777);
    // 0755, as starts made it before; a directory where nats-server's log goes stops this start once it has narrowed it.
    const readable = join(dir.path, "readable-by-all");
    mkdirSync(join(readable, "nats-server.log"), { recursive: true });
    chmodSync(readable, 0o755);
    const narrowed = await startOnFreePorts(readable, () => ({}));
    expect(narrowed.result.status, narrowed.result.stderr).toBe(2);
    expect(narrowed.result.stdout).toContain(`DATA_DIR ${readable} was mode 0755, which let other users read it; made it 0${mode.toString(8)}, as a start makes it\n`);
    expect(narrowed.result.stderr).toContain(`start: ${join(readable, "nats-server.log")} is a directory, not a log file nats-server can append to`);
    expect(statSync(readable).mode & 0o777).toBe(mode);
  });

  it.skipIf(process.getuid?.() !== 0)("refuses, as root, a DATA_DIR another user owns, or a key in it another user owns, writing nothing (exit 2)", { timeout: 60_000 }, async () => {
    // The other user's own token key: a start took it, and that user signed itself admin tokens the services accepted.
    const theirs = join(dir.path, "theirs");
    mkdirSync(join(theirs, "auth"), { recursive: true, mode: 0o700 });
    chmodSync(theirs, 0o755);
    writeFileSync(join(theirs, "auth", "token-hs256.key"), `${"07".repeat(32)}\n`, { mode: 0o600 });
    for (const path of [theirs, join(theirs, "auth"), join(theirs, "auth", "token-hs256.key")]) chownSync(path, 12345, 12345);
    const refused = await startOnFreePorts(theirs, () => ({}));
    expect([refused.result.status, refused.result.stdout]).toEqual([2, ""]);
    expect(refused.result.stderr).toBe(
      `start: DATA_DIR ${theirs} is owned by uid 12345, not by this user (uid 0): that user could have put a token key, NATS seed or CA key of its own there, which the start would take, and so sign itself any role's tokens and connect as any NATS user; set DATA_DIR to a directory of your own (default .data), or, if all in it is yours, chown -R 0 ${theirs}\n`,
    );
    // DATA_DIR made ours, its key still the other user's.
    chownSync(theirs, 0, 0);
    chmodSync(theirs, 0o711);
    const keyRefused = await startOnFreePorts(theirs, () => ({}));
    expect([keyRefused.result.status, keyRefused.result.stdout]).toEqual([2, ""]);
    expect(keyRefused.result.stderr).toContain(`start: DATA_DIR ${theirs} holds ${join(theirs, "auth")} (uid 12345), ${join(theirs, "auth", "token-hs256.key")} (uid 12345), owned by another user than this one (uid 0)`);
    expect(readdirSync(theirs).sort()).toEqual(["auth"]);
  });

  it("narrows NATS seeds and their folder that other users may read to their owner's, saying so, and keeps them", { timeout: 60_000 }, async () => {
    const dataDir = join(dir.path, "open-seeds");
    const credentials = ensureNatsCredentials(join(dataDir, "nats-credentials"));
    const seedFile = credentials.find((c) => c.name === "operator")!.seedFile;
    const seed = readFileSync(seedFile, "utf8");
    chmodSync(join(dataDir, "nats-credentials"), 0o755);
    chmodSync(seedFile, 0o644);
    // A directory where nats-server's log goes stops the start once the seeds are read, before any server starts.
    mkdirSync(join(dataDir, "nats-server.log"));
    const { result } = await startOnFreePorts(dataDir, () => ({}));
    expect(result.status, result.stderr).toBe(2);
    expect(result.stdout).toContain(
      `${join(dataDir, "nats-credentials")} was mode 0755, which let other users read it; made it 0700 (if they may have read the keys in it, stop, delete it and start again to have new ones made)\n` +
        `${seedFile} was mode 0644, which let other users read it; made it 0600 (if they may have read it, stop, delete it and start again to have a new one made)\n`,
    );
    expect(statSync(seedFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(seedFile, "utf8")).toBe(seed);
  });

  it("refuses a seed file under DATA_DIR/nats-credentials with a character changed (its checksum wrong), naming it, in one line, before nats-server starts (exit 2)", { timeout: 60_000 }, async () => {
    const dataDir = join(dir.path, "damaged-seed");
    const credentials = ensureNatsCredentials(join(dataDir, "nats-credentials"));
    const damaged = credentials.find((c) => c.name === "orders")!.seedFile;
    const seed = readFileSync(damaged, "utf8").trim();
    // Still one line of the seed's form: only its checksum tells.
    const changed = `${seed.slice(0, 10)}${seed[10] === "A" ? "B" : "A"}${seed.slice(11)}\n`;
    writeFileSync(damaged, changed);
    const { result } = await startOnFreePorts(dataDir, () => ({}));
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr).toBe(
      `start: ${damaged} does not hold a valid NATS user nkey seed: its checksum does not match (the file is damaged, or was edited); put the seed back from a backup, or, with the system stopped, delete the file and start again to have a new one made\n`,
    );
    expect(readFileSync(damaged, "utf8")).toBe(changed);
    // Nothing written: the CA, certificates and token key, start.pid and the NATS store were made before the refusal.
    expect(readdirSync(dataDir)).toEqual(["nats-credentials"]);
  });

  it("refuses a seed file that holds no seed, writing nothing, not even the other users' seeds; corrected, the next start makes what is missing and comes up", { timeout: 90_000 }, async () => {
    const dataDir = join(dir.path, "seedless");
    const credentials = join(dataDir, "nats-credentials");
    mkdirSync(credentials, { recursive: true });
    const emptied = join(credentials, "products.nk");
    writeFileSync(emptied, "\n");
    const { ports, result } = await startOnFreePorts(dataDir, () => ({}));
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr).toBe(`start: ${emptied} does not hold a NATS user nkey seed (a line starting with SU); delete it and start again to have a new one made\n`);
    expect(result.stdout).toBe("");
    expect(readdirSync(dataDir)).toEqual(["nats-credentials"]);
    expect(readdirSync(credentials)).toEqual(["products.nk"]);
    // Done as the message says: the file deleted, the same start again.
    rmSync(emptied);
    const system = await startSystem(dataDir, { ports });
    child = system.child;
    expect(system.output()).toContain("made the development CA, certificates and token key");
    expect(readdirSync(credentials).sort()).toEqual(["observer.nk", "operator.nk", "orders.nk", "products.nk"]);
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    expect(readdirSync(dataDir)).not.toContain("start.pid");
  });

  it("refuses, in the one line `concord streams provision` gives and exit 2, streams its nats-server has no room for, starting no service", { timeout: 90_000 }, async () => {
    const dataDir = join(dir.path, "reserved");
    const storeDir = join(dataDir, "nats");
    // A stream made by hand in the store npm start's server will run on, reserving 32 PiB (max_bytes): more than any
    // disk's three quarters, which nats-server takes for its file storage when its configuration sets no max_file_store.
    // The server that makes it is told of an exbibyte, in a jetstream block that stands for the one written first.
    const maker = await startNatsServer({ storeDir, extraConfig: `jetstream { store_dir: ${JSON.stringify(storeDir)}, max_file_store: ${2 ** 60} }` });
    try {
      const nc = await natsConnect({ servers: maker.url });
      await (await nc.jetstreamManager()).streams.add({ name: "HOARD", subjects: ["hoard.>"], max_bytes: 2 ** 55 });
      await nc.close();
    } finally {
      await maker.stop();
    }
    const { result } = await startOnFreePorts(dataDir, () => ({}));
    // It ended with "start: stream SHOP_ORDERS does not exist, ..." and exit 1, as for a failure.
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr.split("\n")).toEqual([
      "start: stream SHOP_ORDERS does not exist, and nats-server refuses to create it: insufficient storage resources available (err_code 10047): JetStream's file storage has no room for it: " +
        "raise the server's jetstream { max_file_store }, or the account's max_file (none set), whichever binds, or free space on the disk of the server's store; " +
        `the account's streams reserve ${2 ** 55} bytes of it by their max_bytes: lower the max_bytes of those that reserve more than they need; SHOP_ORDERS, SHOP_PRODUCTS, CONCORD_DLQ not provisioned`,
      "start: everything stopped",
      "",
    ]);
    expect(result.stdout).not.toMatch(/gRPC on|Concord is up/);
    expect(processesOf(dataDir)).toEqual([]);
  });

  it("refuses, in the one line `concord streams provision` gives and exit 2, a stream made by hand whose retention conflicts with its contract, or that holds another's subjects, starting no service", { timeout: 90_000 }, async () => {
    const dataDir = join(dir.path, "by-hand");
    const storeDir = join(dataDir, "nats");
    /** Runs `change` against a server on the store npm start's server will run on, stopped after. */
    const byHand = async (change: (jsm: JetStreamManager) => Promise<unknown>) => {
      const maker = await startNatsServer({ storeDir, extraConfig: `jetstream { store_dir: ${JSON.stringify(storeDir)} }` });
      try {
        const nc = await natsConnect({ servers: maker.url });
        await change(await nc.jetstreamManager());
        await nc.close();
      } finally {
        await maker.stop();
      }
    };
    // A retention nats-server does not change in place, and a stream holding some of SHOP_PRODUCTS's subjects.
    await byHand(async (jsm) => {
      await jsm.streams.add({ name: "SHOP_ORDERS", subjects: ["shop.orders.v1.>"], retention: RetentionPolicy.Workqueue });
      await jsm.streams.add({ name: "BY_HAND", subjects: ["shop.products.v1.reservation.>"] });
    });
    /** Starts on `dataDir`, which refuses in `line` alone, exit 2, with no service started and nothing left running. */
    const refusedIn = async (line: string) => {
      const { result } = await startOnFreePorts(dataDir, () => ({}));
      // It ended with "start: <the same words>" and exit 1, as for a failure.
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr.split("\n")).toEqual([`start: ${line}`, "start: everything stopped", ""]);
      expect(result.stdout).not.toMatch(/gRPC on|Concord is up/);
      expect(processesOf(dataDir)).toEqual([]);
    };
    await refusedIn(
      'stream SHOP_ORDERS exists with settings that conflict with its spec (retention: existing "workqueue", wanted "limits"): left as it is, and SHOP_PRODUCTS, CONCORD_DLQ not provisioned; ' +
        "change the contract back to what the stream has, or migrate the stream deliberately (for example with the nats CLI), then run `npx concord streams provision` (or `npm start`) again",
    );
    await byHand((jsm) => jsm.streams.delete("SHOP_ORDERS"));
    await refusedIn(
      "stream SHOP_PRODUCTS does not exist, and nats-server refuses to create it: subjects overlap with an existing stream (stream BY_HAND holds shop.products.v1.reservation.>); " +
        "a subject belongs to one stream only: where a contract moved these subjects from that stream, it keeps them until the operator narrows it by hand (nats stream edit), " +
        'once nothing needs them there (README "Breaking changes"); SHOP_PRODUCTS, CONCORD_DLQ not provisioned',
    );
  });

  it("refuses a certificate file under DATA_DIR/tls that holds no certificate, naming it, before PostgreSQL or nats-server starts (exit 2)", { timeout: 60_000 }, async () => {
    const ports = { PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_LISTEN: `127.0.0.1:${await freePort()}`, PRODUCTS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`, NATS_PORT: String(await freePort()), POSTGRES_PORT: String(await freePort()) };
    const tls = join(dir.path, "tls");
    mkdirSync(tls);
    const certFile = join(tls, "products.pem");
    writeFileSync(certFile, "not a certificate\n");
    // Exited 1, the status of a failure once started; with --postgres, once initdb had written DATA_DIR/postgres.
    for (const args of [[], ["--postgres"]]) {
      const result = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", ...args], { env: { ...process.env, ...ports, DATA_DIR: dir.path, NATS_URL: "" }, encoding: "utf8", timeout: 30_000 });
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr).toMatch(new RegExp(`^start: ${certFile.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} holds no certificate that can be read \\(.*\\); move it away, or delete it to have a new one made\\n$`));
      expect(readdirSync(dir.path).sort(), args.join(" ")).toEqual(["tls"]);
      expect(readdirSync(tls)).toEqual(["products.pem"]);
      expect(readFileSync(certFile, "utf8")).toBe("not a certificate\n");
    }
    expect(readmeProse()).toContain("A certificate file that holds no certificate is refused, naming it, with nothing written (exit 2).");
  });

  it("refuses a GRPC_TLS_CERT, GRPC_TLS_KEY or GRPC_TLS_CA that is no certificate, no key, a directory or another certificate's key, a key others may read or a CA file others may write, or a certificate without its key, naming the variable, before anything is made (exit 2)", { timeout: 90_000 }, async () => {
    const garbage = join(dir.path, "garbage.pem");
    writeFileSync(garbage, "not pem at all\n", { mode: 0o600 });
    // Development files as a first start makes them: the orders key is no key of products.pem.
    ensureDevCredentials(join(dir.path, "dev"), ["products", "orders"]);
    const tls = join(dir.path, "dev", "tls");
    // A key others may read, and a CA file others may write: each service refused them only once nats-server had started.
    const openKey = join(dir.path, "open-key.pem");
    const openCa = join(dir.path, "open-ca.pem");
    cpSync(join(tls, "products-key.pem"), openKey);
    cpSync(join(tls, "ca.pem"), openCa);
    chmodSync(openKey, 0o644);
    chmodSync(openCa, 0o664);
    for (const [variable, file, why] of [
      ["GRPC_TLS_CERT", garbage, `the TLS certificate ${garbage} holds no PEM certificate`],
      ["GRPC_TLS_KEY", garbage, `the TLS key ${garbage} holds no PEM private key that can be read (`],
      ["GRPC_TLS_KEY", tls, `cannot read the TLS key ${tls}: it is a directory, not a regular file`],
      ["GRPC_TLS_CA", garbage, `the TLS CA certificate ${garbage} holds no PEM certificate`],
      ["GRPC_TLS_KEY", openKey, `the TLS key ${openKey} is readable by others (mode 644), who could pose as the holder of its certificate with it; chmod 600 it`],
      ["GRPC_TLS_CA", openCa, `the TLS CA certificate ${openCa} may be written by others (mode 664), who could add a CA of theirs, whose certificates would then be trusted; chmod go-w it`],
    ] as const) {
      const dataDir = join(dir.path, `${variable}-${basename(file)}`);
      const { result } = await startOnFreePorts(dataDir, () => ({ [variable]: file }));
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr).toMatch(new RegExp(`^start: [^\n]*\\(${variable} names it\\)\\n$`));
      expect(result.stderr).toContain(`start: ${why}`);
      // It had made DATA_DIR, the development CA, certificates and token key first.
      expect(existsSync(dataDir)).toBe(false);
    }
    const { result } = await startOnFreePorts(join(dir.path, "mismatch"), () => ({ GRPC_TLS_CERT: join(tls, "products.pem"), GRPC_TLS_KEY: join(tls, "orders-key.pem") }));
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr).toBe(`start: the TLS key ${join(tls, "orders-key.pem")} is not the key of the certificate ${join(tls, "products.pem")} (GRPC_TLS_KEY names it)\n`);
    expect(existsSync(join(dir.path, "mismatch"))).toBe(false);
    // A good certificate without its key: each service paired it with a development key of its own, which it is not the key of.
    const alone = await startOnFreePorts(join(dir.path, "alone"), () => ({ GRPC_TLS_CERT: join(tls, "products.pem") }));
    expect(alone.result.status, alone.result.stderr).toBe(2);
    expect(alone.result.stderr).toBe(
      "start: GRPC_TLS_CERT is set and GRPC_TLS_KEY is not: each service would pair the file it names with a development key of its own, which cannot match; set both, or neither (the development ones, made under DATA_DIR/tls)\n",
    );
    expect(existsSync(join(dir.path, "alone"))).toBe(false);
  });

  it("refuses a GRPC_TLS_CA without GRPC_TLS_CERT and GRPC_TLS_KEY that does not hold the development CA, at once, before anything is made (exit 2); one that holds it is taken", { timeout: 90_000 }, async () => {
    // Another CA: the services presented development certificates it did not issue, and the start waited 30 s for them.
    ensureDevCredentials(join(dir.path, "other"), ["client"]);
    const otherCa = join(dir.path, "other", "tls", "ca.pem");
    const fresh = join(dir.path, "fresh");
    const refusal = (devCa: string) =>
      `start: GRPC_TLS_CA is set and GRPC_TLS_CERT and GRPC_TLS_KEY are not, and the file it names does not hold the development CA (${devCa}): ` +
      "the services would present development certificates it did not issue, which neither this start nor a service calling another would trust; " +
      "set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate of that CA and its key, add the development CA to that file, or unset GRPC_TLS_CA\n";
    const { result } = await startOnFreePorts(fresh, () => ({ GRPC_TLS_CA: otherCa }));
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr).toBe(refusal(`${join(fresh, "tls", "ca.pem")}, not made yet`));
    expect(existsSync(fresh)).toBe(false);
    // A DATA_DIR whose development CA is made already: the other CA's file is still refused.
    const made = join(dir.path, "made");
    ensureDevCredentials(made, ["products", "orders", "client"]);
    const again = await startOnFreePorts(made, () => ({ GRPC_TLS_CA: otherCa }));
    expect(again.result.status, again.result.stderr).toBe(2);
    expect(again.result.stderr).toBe(refusal(join(made, "tls", "ca.pem")));
    // The development CA and another in one file (clients with certificates of their own CA, say): taken, and up.
    const both = join(dir.path, "both-cas.pem");
    writeFileSync(both, readFileSync(otherCa, "utf8") + readFileSync(join(made, "tls", "ca.pem"), "utf8"));
    const system = await startSystem(made, { env: { GRPC_TLS_CA: both } });
    child = system.child;
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
  });

  it("refuses GRPC_TLS_CERT, GRPC_TLS_KEY and GRPC_TLS_CA together where no CA of that file issued the certificate, at once, before anything is made (exit 2); a file holding its CA is taken", { timeout: 90_000 }, async () => {
    ensureDevCredentials(join(dir.path, "own"), ["products"]);
    ensureDevCredentials(join(dir.path, "other"), ["client"]);
    const certFile = join(dir.path, "own", "tls", "products.pem");
    const given = { GRPC_TLS_CERT: certFile, GRPC_TLS_KEY: join(dir.path, "own", "tls", "products-key.pem") };
    const otherCa = join(dir.path, "other", "tls", "ca.pem");
    const dataDir = join(dir.path, "data");
    // The services presented a certificate this start did not trust, and it ended 30 s on with products not SERVING (exit 1).
    const { result } = await startOnFreePorts(dataDir, () => ({ ...given, GRPC_TLS_CA: otherCa }));
    expect(result.status, result.stderr).toBe(2);
    expect(result.stderr).toBe(
      `start: GRPC_TLS_CERT names a certificate (${certFile}, issued by CN=Concord development CA) that no CA in the file GRPC_TLS_CA names (${otherCa}) issued: ` +
        "the services would present it, and neither this start nor a service calling another would trust it; " +
        "set GRPC_TLS_CA to the file of the CA that issued it (or add that CA to the file), or GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate of that file's CA and its key\n",
    );
    expect(existsSync(dataDir)).toBe(false);
    // Its CA beside the other in one file: taken, and up.
    const both = join(dir.path, "both-cas.pem");
    writeFileSync(both, readFileSync(otherCa, "utf8") + readFileSync(join(dir.path, "own", "tls", "ca.pem"), "utf8"));
    const system = await startSystem(dataDir, { env: { ...given, GRPC_TLS_CA: both } });
    child = system.child;
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
  });

  it("refuses GRPC_TLS_CERT and GRPC_TLS_KEY without GRPC_TLS_CA where the development CA, which the services then trust, did not issue the certificate, at once (exit 2); one it issued is taken", { timeout: 90_000 }, async () => {
    ensureDevCredentials(join(dir.path, "own"), ["products"]);
    const certFile = join(dir.path, "own", "tls", "products.pem");
    const given = { GRPC_TLS_CERT: certFile, GRPC_TLS_KEY: join(dir.path, "own", "tls", "products-key.pem") };
    const dataDir = join(dir.path, "data");
    const refusal = (devCa: string) =>
      `start: GRPC_TLS_CERT and GRPC_TLS_KEY are set and GRPC_TLS_CA is not, and the development CA (${devCa}), which the services and this start's health checks then trust, did not issue the certificate (${certFile}, issued by CN=Concord development CA): ` +
      "neither this start nor a service calling another would trust it; set GRPC_TLS_CA to the file of the CA that issued it\n";
    // The services presented a certificate of another CA than the development one this start and they trusted: it ended 30 s on, products not SERVING (exit 1).
    await refusedFreshAndMade(dataDir, given, refusal);
    // A certificate the development CA issued: taken, and up.
    const system = await startSystem(dataDir, { env: { GRPC_TLS_CERT: join(dataDir, "tls", "products.pem"), GRPC_TLS_KEY: join(dataDir, "tls", "products-key.pem") } });
    child = system.child;
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    // A development CA 5 days from its end, which issued the certificate: this start would make it anew, and trust the new one alone.
    const tls = join(dataDir, "tls");
    const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: tls, stdio: "pipe" });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl("req", "-x509", ...ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "5", "-subj", "/CN=old CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
    writeFileSync(join(dir.path, "leaf.ext"), "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n");
    openssl("req", "-new", ...ec, "-keyout", join(dir.path, "leaf-key.pem"), "-out", join(dir.path, "leaf.csr"), "-subj", "/CN=leaf");
    openssl("x509", "-req", "-in", join(dir.path, "leaf.csr"), "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-set_serial", "1", "-days", "5", "-extfile", join(dir.path, "leaf.ext"), "-out", join(dir.path, "leaf.pem"));
    const before = readdirSync(tls).map((f) => readFileSync(join(tls, f), "utf8"));
    const expiring = await startOnFreePorts(dataDir, () => ({ GRPC_TLS_CERT: join(dir.path, "leaf.pem"), GRPC_TLS_KEY: join(dir.path, "leaf-key.pem") }));
    expect(expiring.result.status, expiring.result.stderr).toBe(2);
    const ends = new Date(Date.parse(new X509Certificate(readFileSync(join(tls, "ca.pem"))).validTo)).toISOString().slice(0, 10);
    expect(expiring.result.stderr).toBe(
      `start: GRPC_TLS_CERT and GRPC_TLS_KEY are set and GRPC_TLS_CA is not, and this start makes the development CA (${join(tls, "ca.pem")}), which issued the certificate (${join(dir.path, "leaf.pem")}), anew, as it expires on ${ends}: ` +
        "the services and this start's health checks would trust the new CA alone, and neither this start nor a service calling another would trust the certificate; set GRPC_TLS_CA to a copy of that CA's file as it is now, kept outside DATA_DIR/tls\n",
    );
    expect(readdirSync(tls).map((f) => readFileSync(join(tls, f), "utf8"))).toEqual(before);
  });

  it("hands the services GRPC_TLS_CERT and GRPC_TLS_KEY as it read and checked them: files changed before the services read them serve no certificate it never checked", { timeout: 120_000 }, async () => {
    const dataDir = join(dir.path, "data");
    ensureDevCredentials(dataDir, ["products", "orders", "client"]);
    const tls = join(dataDir, "tls");
    const { pki, openssl, ec } = pkiDir(dir.path);
    // Two certificates of the development CA for 127.0.0.1; the second's keyUsage lacks digitalSignature, which the start refuses.
    for (const [name, usage] of [["checked", "digitalSignature"], ["unchecked", "keyEncipherment"]]) {
      writeFileSync(join(pki, `${name}.ext`), `basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nkeyUsage=critical,${usage}\n`);
      openssl("req", "-new", ...ec, "-keyout", `${name}-key.pem`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
      openssl("x509", "-req", "-in", `${name}.csr`, "-CA", join(tls, "ca.pem"), "-CAkey", join(tls, "ca-key.pem"), "-set_serial", "1", "-days", "30", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
    }
    const [certFile, keyFile] = [join(dir.path, "cert.pem"), join(dir.path, "key.pem")];
    cpSync(join(pki, "checked.pem"), certFile);
    cpSync(join(pki, "checked-key.pem"), keyFile);
    const go = join(dir.path, "let-products-start");
    const starting = startSystem(dataDir, { env: { ...holdStart("products", go), GRPC_TLS_CERT: certFile, GRPC_TLS_KEY: keyFile } });
    // The product service's process waits before it reads anything, the files checked meanwhile replaced (a renewal, say).
    await expect.poll(() => servicePid(dataDir, "products"), { timeout: 60_000, interval: 100 }).toBeDefined();
    cpSync(join(pki, "unchecked.pem"), certFile);
    cpSync(join(pki, "unchecked-key.pem"), keyFile);
    writeFileSync(go, "");
    const system = await starting;
    child = system.child;
    const presented = (port: number) =>
      new Promise<string>((resolve, reject) => {
        const socket = connectTls({ host: "127.0.0.1", port, rejectUnauthorized: false, ALPNProtocols: ["h2"] }, () => {
          resolve(socket.getPeerCertificate().fingerprint256);
          socket.destroy();
        });
        socket.on("error", reject);
      });
    // Both services read the files once the start had checked them, and served the certificate it never checked.
    const checked = new X509Certificate(readFileSync(join(pki, "checked.pem"))).fingerprint256;
    expect(await presented(system.ports.products)).toBe(checked);
    expect(await presented(system.ports.orders)).toBe(checked);
    expect(statSync(join(dataDir, "tls-given", "key.pem")).mode & 0o777).toBe(0o600);
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    // A start given none takes the copies away.
    const plain = await startSystem(dataDir);
    child = plain.child;
    expect(existsSync(join(dataDir, "tls-given"))).toBe(false);
    plain.child.kill("SIGINT");
    expect(await plain.exited).toBe(0);
  });

  it("refuses a GRPC_TLS_CERT whose extendedKeyUsage, or its CA's, lacks serverAuth, or clientAuth with GRPC_TLS_CLIENT_AUTH=require, at once, before anything is made (exit 2)", { timeout: 60_000 }, async () => {
    const { pki, openssl, ec, caExt } = pkiDir(dir.path);
    openssl("req", "-x509", ...ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "30", "-subj", "/CN=own CA", ...caExt);
    openssl("req", "-x509", ...ec, "-keyout", "clients-ca-key.pem", "-out", "clients-ca.pem", "-days", "30", "-subj", "/CN=clients CA", ...caExt, "-addext", "extendedKeyUsage=clientAuth");
    for (const [name, ca, usage] of [["client-only", "ca", "clientAuth"], ["server-only", "ca", "serverAuth"], ["any", "ca", "anyExtendedKeyUsage"], ["both", "clients-ca", "serverAuth,clientAuth"]]) {
      writeFileSync(join(pki, `${name}.ext`), `basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=${usage}\n`);
      openssl("req", "-new", ...ec, "-keyout", `${name}-key.pem`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
      openssl("x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}-key.pem`, "-set_serial", "1", "-days", "30", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
    }
    // A token key the services would refuse, checked after the TLS files: its refusal says the TLS files were taken.
    const garbage = join(pki, "garbage.key");
    writeFileSync(garbage, "not a key\n", { mode: 0o600 });
    const given = (name: string, ca = "ca") => ({ GRPC_TLS_CERT: join(pki, `${name}.pem`), GRPC_TLS_KEY: join(pki, `${name}-key.pem`), GRPC_TLS_CA: join(pki, `${ca}.pem`), GRPC_AUTH_KEY_FILE: garbage });
    const serverRefusal = (whose: string, usage: string) =>
      `start: GRPC_TLS_CERT names a certificate (${join(pki, whose === "" ? "client-only.pem" : "both.pem")}) ${whose}whose extendedKeyUsage (${usage}) lacks serverAuth, which OpenSSL checks in the handshake: ` +
      "the services present it as servers, and neither this start nor a service calling another would take it; set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate whose extendedKeyUsage, and its CAs', has serverAuth (or that has none), and its key\n";
    // The start's health checks failed every handshake ("unsuitable certificate purpose"), and it ended 30 s on (exit 1).
    const clientOnly = await startOnFreePorts(join(dir.path, "client-only"), () => given("client-only"));
    expect(clientOnly.result.status, clientOnly.result.stderr).toBe(2);
    expect(clientOnly.result.stderr).toBe(serverRefusal("", "clientAuth"));
    expect(existsSync(join(dir.path, "client-only"))).toBe(false);
    // anyExtendedKeyUsage alone is no serverAuth to OpenSSL.
    const any = await startOnFreePorts(join(dir.path, "any"), () => given("any"));
    expect(any.result.status, any.result.stderr).toBe(2);
    expect(any.result.stderr).toContain("(anyExtendedKeyUsage) lacks serverAuth");
    // The certificate may serve both, its CA not: OpenSSL checks the CA's too.
    const throughCa = await startOnFreePorts(join(dir.path, "through-ca"), () => given("both", "clients-ca"));
    expect(throughCa.result.status, throughCa.result.stderr).toBe(2);
    expect(throughCa.result.stderr).toBe(serverRefusal("issued through a CA (CN=clients CA) ", "clientAuth"));
    // serverAuth alone is taken without GRPC_TLS_CLIENT_AUTH=require: the services then ask no client for its certificate.
    const serverOnly = await startOnFreePorts(join(dir.path, "server-only"), () => given("server-only"));
    expect(serverOnly.result.status, serverOnly.result.stderr).toBe(2);
    expect(serverOnly.result.stderr).toMatch(/^start: the token key .* \(GRPC_AUTH_KEY_FILE names it\)\n$/);
    // With it, and a CA file that holds the development CA too (the health checks' client certificate): the system came up, and
    // the product service refused the order service's certificate on every call it made.
    const dataDir = join(dir.path, "require");
    ensureDevCredentials(dataDir, ["products", "orders", "client"]);
    const both = join(pki, "both-cas.pem");
    writeFileSync(both, readFileSync(join(pki, "ca.pem"), "utf8") + readFileSync(join(dataDir, "tls", "ca.pem"), "utf8"));
    const required = await startOnFreePorts(dataDir, () => ({ ...given("server-only"), GRPC_TLS_CA: both, GRPC_TLS_CLIENT_AUTH: "require" }));
    expect(required.result.status, required.result.stderr).toBe(2);
    expect(required.result.stderr).toBe(
      `start: GRPC_TLS_CERT names a certificate (${join(pki, "server-only.pem")}) whose extendedKeyUsage (serverAuth) lacks clientAuth, which OpenSSL checks in the handshake: ` +
        "with GRPC_TLS_CLIENT_AUTH=require the services present it to each other as clients, and every call one made to another would fail its handshake; " +
        "set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate whose extendedKeyUsage, and its CAs', has serverAuth and clientAuth (or that has none), and its key\n",
    );
    expect(existsSync(join(dataDir, "start.pid"))).toBe(false);
  });

  it("refuses a GRPC_TLS_CERT whose keyUsage lacks digitalSignature, an EC key's or an RSA key's, at once, before anything is made (exit 2); one with it, or with no keyUsage, is taken", { timeout: 60_000 }, async () => {
    const { pki, openssl, ec, caExt } = pkiDir(dir.path);
    openssl("req", "-x509", ...ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "30", "-subj", "/CN=own CA", ...caExt);
    const rsa = ["-newkey", "rsa:2048", "-nodes"];
    for (const [name, key, usage] of [["ec-encipher", ec, "keyEncipherment,keyAgreement"], ["rsa-encipher", rsa, "keyEncipherment"], ["ec-none", ec, "nonRepudiation"], ["ec-sign", ec, "digitalSignature"], ["ec-any", ec, ""]] as const) {
      writeFileSync(join(pki, `${name}.ext`), `basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n${usage && `keyUsage=critical,${usage}\n`}`);
      openssl("req", "-new", ...key, "-keyout", `${name}-key.pem`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
      openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-set_serial", "1", "-days", "30", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
    }
    // A token key the services would refuse, checked after the TLS files: its refusal says the TLS files were taken.
    const garbage = join(pki, "garbage.key");
    writeFileSync(garbage, "not a key\n", { mode: 0o600 });
    const given = (name: string) => ({ GRPC_TLS_CERT: join(pki, `${name}.pem`), GRPC_TLS_KEY: join(pki, `${name}-key.pem`), GRPC_TLS_CA: join(pki, "ca.pem"), GRPC_AUTH_KEY_FILE: garbage });
    // The system came up; gRPC's Python client then failed every handshake (KEY_USAGE_BIT_INCORRECT), as did a Node client of TLS 1.2.
    for (const [name, usage] of [["ec-encipher", "keyEncipherment, keyAgreement"], ["rsa-encipher", "keyEncipherment"], ["ec-none", "nonRepudiation"]]) {
      const refused = await startOnFreePorts(join(dir.path, name), () => given(name));
      expect(refused.result.status, refused.result.stderr).toBe(2);
      expect(refused.result.stderr).toBe(
        `start: GRPC_TLS_CERT names a certificate (${join(pki, `${name}.pem`)}) whose keyUsage (${usage}) lacks digitalSignature, which its key needs to sign TLS handshakes: ` +
          "clients that check it, as gRPC's Python client does (KEY_USAGE_BIT_INCORRECT), would refuse the services in every handshake, and TLS 1.2 clients find no cipher they share with an EC key; " +
          "set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate whose keyUsage has digitalSignature (or that has none), and its key\n",
      );
      expect(existsSync(join(dir.path, name))).toBe(false);
    }
    for (const name of ["ec-sign", "ec-any"]) {
      const taken = await startOnFreePorts(join(dir.path, name), () => given(name));
      expect(taken.result.status, taken.result.stderr).toBe(2);
      expect(taken.result.stderr).toMatch(/^start: the token key .* \(GRPC_AUTH_KEY_FILE names it\)\n$/);
    }
  });

  it("takes a GRPC_TLS_CERT issued through an intermediate CA in its own file by the root in GRPC_TLS_CA, and refuses it under another root", { timeout: 60_000 }, async () => {
    const { pki, openssl, ec, caExt } = pkiDir(dir.path);
    for (const root of ["root", "other-root"]) openssl("req", "-x509", ...ec, "-keyout", `${root}-key.pem`, "-out", `${root}.pem`, "-days", "30", "-subj", `/CN=${root}`, ...caExt);
    writeFileSync(join(pki, "ca.ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n");
    writeFileSync(join(pki, "leaf.ext"), "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n");
    openssl("req", "-new", ...ec, "-keyout", "intermediate-key.pem", "-out", "intermediate.csr", "-subj", "/CN=intermediate");
    openssl("x509", "-req", "-in", "intermediate.csr", "-CA", "root.pem", "-CAkey", "root-key.pem", "-set_serial", "1", "-days", "30", "-extfile", "ca.ext", "-out", "intermediate.pem");
    openssl("req", "-new", ...ec, "-keyout", "leaf-key.pem", "-out", "leaf.csr", "-subj", "/CN=leaf");
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "intermediate.pem", "-CAkey", "intermediate-key.pem", "-set_serial", "2", "-days", "30", "-extfile", "leaf.ext", "-out", "leaf.pem");
    const chain = join(pki, "chain.pem");
    writeFileSync(chain, readFileSync(join(pki, "leaf.pem"), "utf8") + readFileSync(join(pki, "intermediate.pem"), "utf8"));
    // A token key the services would refuse, checked after the TLS files: its refusal says the TLS files were taken.
    const garbage = join(pki, "garbage.key");
    writeFileSync(garbage, "not a key\n", { mode: 0o600 });
    const given = (root: string) => ({ GRPC_TLS_CERT: chain, GRPC_TLS_KEY: join(pki, "leaf-key.pem"), GRPC_TLS_CA: join(pki, `${root}.pem`), GRPC_AUTH_KEY_FILE: garbage });
    const taken = await startOnFreePorts(join(dir.path, "taken"), () => given("root"));
    expect(taken.result.status, taken.result.stderr).toBe(2);
    expect(taken.result.stderr).toMatch(/^start: the token key .* \(GRPC_AUTH_KEY_FILE names it\)\n$/);
    const refused = await startOnFreePorts(join(dir.path, "refused"), () => given("other-root"));
    expect(refused.result.status, refused.result.stderr).toBe(2);
    expect(refused.result.stderr).toMatch(/^start: GRPC_TLS_CERT names a certificate \(.*chain\.pem, issued by CN=intermediate\) that no CA in the file GRPC_TLS_CA names \(.*other-root\.pem\) issued: /);
  });

  it("refuses a GRPC_TLS_CERT that does not cover the host the start's health checks or the order service dial, naming the names it covers, at once, before anything is made (exit 2)", { timeout: 60_000 }, async () => {
    const { pki, openssl, ec, caExt } = pkiDir(dir.path);
    openssl("req", "-x509", ...ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "30", "-subj", "/CN=own CA", ...caExt);
    for (const [name, names] of [["elsewhere", "DNS:shop.example.com"], ["loopback", "IP:127.0.0.1"]]) {
      writeFileSync(join(pki, `${name}.ext`), `basicConstraints=CA:FALSE\nsubjectAltName=${names}\n`);
      openssl("req", "-new", ...ec, "-keyout", `${name}-key.pem`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
      openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-set_serial", "1", "-days", "30", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
    }
    const given = (name: string) => ({ GRPC_TLS_CERT: join(pki, `${name}.pem`), GRPC_TLS_KEY: join(pki, `${name}-key.pem`), GRPC_TLS_CA: join(pki, "ca.pem") });
    // Its CA trusted, the certificate for another host: the health checks' TLS handshake failed, and the start ended 30 s on (exit 1).
    const elsewhere = await startOnFreePorts(join(dir.path, "elsewhere"), () => given("elsewhere"));
    expect(elsewhere.result.status, elsewhere.result.stderr).toBe(2);
    expect(elsewhere.result.stderr).toBe(
      `start: GRPC_TLS_CERT names a certificate (${join(pki, "elsewhere.pem")}, for DNS:shop.example.com) that does not cover 127.0.0.1, the host of PRODUCTS_LISTEN, which this start's health checks dial: ` +
        "neither this start nor a service calling another would take it there; set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate for that host and its key, or PRODUCTS_LISTEN to an address on a host the certificate covers\n",
    );
    expect(existsSync(join(dir.path, "elsewhere"))).toBe(false);
    // The listen addresses covered, the order service given the product service by a name the certificate is not for:
    // every call of the order service's to the product service would fail its handshake.
    const byName = await startOnFreePorts(join(dir.path, "by-name"), (ports) => ({ ...given("loopback"), PRODUCTS_ADDRESS: `localhost:${ports.products}` }));
    expect(byName.result.status, byName.result.stderr).toBe(2);
    expect(byName.result.stderr).toBe(
      `start: GRPC_TLS_CERT names a certificate (${join(pki, "loopback.pem")}, for IP Address:127.0.0.1) that does not cover localhost, the host of PRODUCTS_ADDRESS, which the order service dials: ` +
        "neither this start nor a service calling another would take it there; set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate for that host and its key, or PRODUCTS_ADDRESS to an address on a host the certificate covers\n",
    );
    expect(existsSync(join(dir.path, "by-name"))).toBe(false);
    // Several instances' addresses: grpc-js checks every instance's certificate against the first host alone, so that one is checked.
    const garbage = join(pki, "garbage.key");
    writeFileSync(garbage, "not a key\n", { mode: 0o600 });
    const firstElsewhere = await startOnFreePorts(join(dir.path, "first-elsewhere"), (ports) => ({ ...given("loopback"), PRODUCTS_ADDRESS: `127.0.0.2:${ports.products},127.0.0.1:${ports.products}` }));
    expect(firstElsewhere.result.status, firstElsewhere.result.stderr).toBe(2);
    expect(firstElsewhere.result.stderr).toContain("that does not cover 127.0.0.2, the host of PRODUCTS_ADDRESS, which the order service dials: ");
    // The first covered: the TLS files are taken, and the token key the services would refuse, checked after them, is refused.
    const firstCovered = await startOnFreePorts(join(dir.path, "first-covered"), (ports) => ({ ...given("loopback"), GRPC_AUTH_KEY_FILE: garbage, PRODUCTS_ADDRESS: `127.0.0.1:${ports.products},127.0.0.2:${ports.products}` }));
    expect(firstCovered.result.status, firstCovered.result.stderr).toBe(2);
    expect(firstCovered.result.stderr).toMatch(/^start: the token key .* \(GRPC_AUTH_KEY_FILE names it\)\n$/);
  });

  it("refuses GRPC_TLS_CLIENT_AUTH=require with GRPC_TLS_CERT, GRPC_TLS_KEY and GRPC_TLS_CA whose file does not hold the development CA, which issued the client certificate of the start's health checks, at once (exit 2); one holding both CAs is taken", { timeout: 90_000 }, async () => {
    ensureDevCredentials(join(dir.path, "own"), ["products"]);
    const ownCa = join(dir.path, "own", "tls", "ca.pem");
    const given = { GRPC_TLS_CERT: join(dir.path, "own", "tls", "products.pem"), GRPC_TLS_KEY: join(dir.path, "own", "tls", "products-key.pem"), GRPC_TLS_CA: ownCa, GRPC_TLS_CLIENT_AUTH: "require" };
    const dataDir = join(dir.path, "data");
    const refusal = (devCa: string) =>
      `start: GRPC_TLS_CLIENT_AUTH=require, and the file GRPC_TLS_CA names (${ownCa}) does not hold the development CA (${devCa}), which issued the client certificate this start's health checks present (${join(dataDir, "tls", "client.pem")}): ` +
      "the services would refuse it in the handshake; add the development CA to that file (a start without GRPC_TLS_CLIENT_AUTH=require makes it), or unset GRPC_TLS_CLIENT_AUTH\n";
    // The services refused the health checks' client certificate, and the start ended 30 s on (exit 1).
    await refusedFreshAndMade(dataDir, given, refusal);
    // Both CAs in one file: the services' certificate and the development client certificate are trusted, and it comes up.
    const both = join(dir.path, "both-cas.pem");
    writeFileSync(both, readFileSync(ownCa, "utf8") + readFileSync(join(dataDir, "tls", "ca.pem"), "utf8"));
    const system = await startSystem(dataDir, { env: { ...given, GRPC_TLS_CA: both } });
    child = system.child;
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    // A development CA 5 days from its end, in the file: this start would make it anew, and the client certificate from the new one.
    const tls = join(dataDir, "tls");
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", join(tls, "ca-key.pem"), "-out", join(tls, "ca.pem"), "-days", "5", "-subj", "/CN=old CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], { stdio: "pipe" });
    writeFileSync(both, readFileSync(ownCa, "utf8") + readFileSync(join(tls, "ca.pem"), "utf8"));
    const before = readdirSync(tls).map((f) => readFileSync(join(tls, f), "utf8"));
    const expiring = await startOnFreePorts(dataDir, () => ({ ...given, GRPC_TLS_CA: both }));
    expect(expiring.result.status, expiring.result.stderr).toBe(2);
    const ends = new Date(Date.parse(new X509Certificate(readFileSync(join(tls, "ca.pem"))).validTo)).toISOString().slice(0, 10);
    expect(expiring.result.stderr).toBe(
      `start: GRPC_TLS_CLIENT_AUTH=require, and this start makes the development CA (${join(tls, "ca.pem")}) anew, as it expires on ${ends}, with the client certificate its health checks present (${join(tls, "client.pem")}): ` +
        `the file GRPC_TLS_CA names (${both}) cannot hold the new CA yet, and the services would refuse it in the handshake; start once without GRPC_TLS_CLIENT_AUTH=require, then put the new development CA in that file\n`,
    );
    expect(readdirSync(tls).map((f) => readFileSync(join(tls, f), "utf8"))).toEqual(before);
  });

  it("refuses a GRPC_TLS_CA without GRPC_TLS_CERT and GRPC_TLS_KEY that holds the development CA this start makes anew (expiring, or its key gone), before anything is written (exit 2)", { timeout: 60_000 }, async () => {
    const dataDir = join(dir.path, "expiring");
    ensureDevCredentials(dataDir, ["products", "orders", "client"]);
    const tls = join(dataDir, "tls");
    // A development CA 5 days from its end, which the start makes anew, with every certificate, from a new CA.
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", join(tls, "ca-key.pem"), "-out", join(tls, "ca.pem"), "-days", "5", "-subj", "/CN=old CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], { stdio: "pipe" });
    const copy = join(dir.path, "old-ca.pem");
    cpSync(join(tls, "ca.pem"), copy);
    const before = readdirSync(tls).map((f) => readFileSync(join(tls, f), "utf8"));
    const refusal = (why: string) =>
      `start: GRPC_TLS_CA is set and GRPC_TLS_CERT and GRPC_TLS_KEY are not, and this start makes the development CA (${join(tls, "ca.pem")}) anew, as ${why}, with the services' certificates: ` +
      "the file GRPC_TLS_CA names cannot hold the new CA yet, and neither this start nor a service calling another would trust them; " +
      "start once without GRPC_TLS_CA, then put the new development CA in that file; or set GRPC_TLS_CERT and GRPC_TLS_KEY to a certificate of that file's CA and its key\n";
    // The file held the CA as it was before this start renewed it, and was taken: the start ended 30 s on, products not SERVING (exit 1).
    const expiring = await startOnFreePorts(dataDir, () => ({ GRPC_TLS_CA: copy }));
    expect(expiring.result.status, expiring.result.stderr).toBe(2);
    const ends = new Date(Date.parse(new X509Certificate(readFileSync(copy)).validTo)).toISOString().slice(0, 10);
    expect(expiring.result.stderr).toBe(refusal(`it expires on ${ends}`));
    expect(readdirSync(tls).map((f) => readFileSync(join(tls, f), "utf8"))).toEqual(before);
    expect(existsSync(join(dataDir, "start.pid"))).toBe(false);
    rmSync(join(tls, "ca-key.pem"));
    const keyless = await startOnFreePorts(dataDir, () => ({ GRPC_TLS_CA: copy }));
    expect(keyless.result.status, keyless.result.stderr).toBe(2);
    expect(keyless.result.stderr).toBe(refusal("its key, ca-key.pem beside it, is missing"));
  });

  it("takes a GRPC_TLS_CA naming the development CA's own file while this start makes that CA anew: the file then holds the new one", { timeout: 120_000 }, async () => {
    const dataDir = join(dir.path, "renewed-in-place");
    ensureDevCredentials(dataDir, ["products", "orders", "client"]);
    const tls = join(dataDir, "tls");
    // A development CA 5 days from its end, which the start makes anew, with every certificate, in the same file.
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", join(tls, "ca-key.pem"), "-out", join(tls, "ca.pem"), "-days", "5", "-subj", "/CN=old CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], { stdio: "pipe" });
    const system = await startSystem(dataDir, { env: { GRPC_TLS_CA: join(tls, "ca.pem") } });
    expect(system.output()).toContain(`renewing ${join(tls, "ca.pem")}`);
    expect(new X509Certificate(readFileSync(join(tls, "ca.pem"))).subject).not.toContain("old CA");
    system.child.kill("SIGINT");
    expect(await system.exited, system.output()).toBe(0);
  });

  it("refuses a GRPC_AUTH_KEY_FILE or GRPC_AUTH_PUBLIC_KEYS the services would refuse, naming the variable, before anything is made (exit 2)", { timeout: 60_000 }, async () => {
    const garbage = join(dir.path, "garbage.key");
    writeFileSync(garbage, "not a key\n", { mode: 0o600 });
    for (const [variable, why] of [
      ["GRPC_AUTH_KEY_FILE", `the token key ${garbage} must hold at least 32 bytes as hex (64 hex digits)`],
      ["GRPC_AUTH_PUBLIC_KEYS", `${garbage} holds no PEM public key (-----BEGIN PUBLIC KEY-----)`],
    ] as const) {
      const dataDir = join(dir.path, variable);
      // The product service refused it once nats-server had started, and everything stopped (exit 1).
      const { result } = await startOnFreePorts(dataDir, () => ({ [variable]: garbage }));
      expect(result.status, result.stderr).toBe(2);
      expect(result.stderr).toBe(`start: ${why} (${variable} names it)\n`);
      expect(existsSync(dataDir)).toBe(false);
    }
  });

  it("moves --cluster's route and monitoring ports with NATS_ROUTE_PORT and NATS_MONITOR_PORT, refusing one that is not a port or is taken, naming it", { timeout: 120_000 }, async () => {
    const dataDir = join(dir.path, "never-made");
    const startWith = (env: NodeJS.ProcessEnv) =>
      spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", "--cluster"], { env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "", ...env }, encoding: "utf8", timeout: 20_000 });
    for (const [variable, value] of [["NATS_ROUTE_PORT", "abc"], ["NATS_MONITOR_PORT", "65534"]] as const) {
      const bad = startWith({ [variable]: value });
      expect(bad.status, variable).toBe(2);
      expect(bad.stderr).toBe(`start: ${variable}=${JSON.stringify(value)} is not a port: give a whole number from 1 to 65533 (--cluster also takes the ports up to ${variable}+2)\n`);
      expect(existsSync(dataDir)).toBe(false);
    }
    // The route ports NATS_PORT gives taken (another system's, say): the routes could be moved only with NATS_PORT.
    const natsPort = await freeClusterPort();
    const routes = await freePort({ alsoFree: [1, 2] });
    const monitoring = await freePort({ alsoFree: [1, 2] });
    const listening = (port: number) =>
      new Promise<ReturnType<typeof createServer>>((resolve) => {
        const server = createServer();
        server.listen(port, "127.0.0.1", () => resolve(server));
      });
    const defaultRoutes = await listening(natsPort + 2000);
    try {
      const moved = { NATS_PORT: String(natsPort), NATS_ROUTE_PORT: String(routes), NATS_MONITOR_PORT: String(monitoring) };
      const secondTaken = await listening(routes + 1);
      const services = { PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_LISTEN: `127.0.0.1:${await freePort()}`, PRODUCTS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_METRICS_LISTEN: `127.0.0.1:${await freePort()}` };
      const taken = startWith({ ...services, ...moved });
      secondTaken.close();
      expect(taken.status).toBe(2);
      expect(taken.stderr).toContain(`start: port ${routes + 1} (NATS_ROUTE_PORT+1, which --cluster takes for its routes) is already in use; set NATS_ROUTE_PORT to another port (the first of three)`);
      expect(existsSync(dataDir)).toBe(false);
      const system = await startSystem(dir.path, { args: ["--cluster"], ports: { nats: natsPort, products: await freePort(), orders: await freePort() }, env: { NATS_ROUTE_PORT: moved.NATS_ROUTE_PORT, NATS_MONITOR_PORT: moved.NATS_MONITOR_PORT } });
      child = system.child;
      // n1 serves its monitoring on the port given, and is routed to the other two through the route ports given.
      const routez = (await (await fetch(`http://127.0.0.1:${monitoring}/routez`)).json()) as { routes?: { remote_name: string }[] };
      expect([...new Set(routez.routes?.map((r) => r.remote_name))].sort()).toEqual(["n2", "n3"]);
      expect(readFileSync(join(dir.path, "nats-cluster", "n3.conf"), "utf8")).toContain(`127.0.0.1:${routes + 2}`);
      system.child.kill("SIGINT");
      expect(await system.exited).toBe(0);
    } finally {
      defaultRoutes.close();
    }
  });

  it("serves its one nats-server's monitoring on 127.0.0.1:NATS_MONITOR_PORT when that is set, where /connz names each service's connection; refuses one that is not a port or is taken, making nothing", { timeout: 120_000 }, async () => {
    const dataDir = join(dir.path, "never-made");
    const startWith = (env: NodeJS.ProcessEnv) => spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "", ...env }, encoding: "utf8", timeout: 20_000 });
    // It served no monitoring without --cluster, NATS_MONITOR_PORT read by --cluster alone: /connz could not be asked.
    const bad = startWith({ NATS_MONITOR_PORT: "8222x" });
    expect([bad.status, bad.stderr]).toEqual([2, 'start: NATS_MONITOR_PORT="8222x" is not a port: give a whole number from 1 to 65535\n']);
    const held = await freePort();
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(held, "127.0.0.1", resolve));
    try {
      const services = { NATS_PORT: String(await freePort()), PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_LISTEN: `127.0.0.1:${await freePort()}`, PRODUCTS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_METRICS_LISTEN: `127.0.0.1:${await freePort()}` };
      const taken = startWith({ ...services, NATS_MONITOR_PORT: String(held) });
      expect([taken.status, taken.stderr]).toEqual([2, `start: port ${held} (NATS_MONITOR_PORT, nats-server's monitoring) is already in use; set NATS_MONITOR_PORT to another port\n`]);
    } finally {
      holder.close();
    }
    expect(existsSync(dataDir)).toBe(false);
    const monitoring = await freePort();
    const system = await startSystem(dir.path, { env: { NATS_MONITOR_PORT: String(monitoring) } });
    child = system.child;
    expect(system.output()).toContain(`  monitoring on http://127.0.0.1:${monitoring} (NATS_MONITOR_PORT): /connz names each connection by its service and instance\n`);
    const names = async () => ((await (await fetch(`http://127.0.0.1:${monitoring}/connz`)).json()) as { connections?: { name?: string }[] }).connections?.map((c) => c.name ?? "") ?? [];
    await expect.poll(names, { timeout: 20_000 }).toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`^products \\(.*:${system.ports.products}\\)$`)), expect.stringMatching(new RegExp(`^orders \\(.*:${system.ports.orders}\\)$`))]));
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
  });

  it("refuses two of its listeners on one port (an instance's gRPC port on another's metrics port, say), naming both settings, before making anything", async () => {
    const dataDir = join(dir.path, "never-made");
    const products = await freePort();
    const env = {
      ...process.env,
      DATA_DIR: dataDir,
      NATS_URL: "",
      NATS_PORT: String(await freePort()),
      POSTGRES_PORT: String(await freePort()),
      PRODUCTS_LISTEN: `127.0.0.1:${products}`,
      ORDERS_LISTEN: `127.0.0.1:${await freePort()}`,
      PRODUCTS_METRICS_LISTEN: `127.0.0.1:${products + 2}`,
      ORDERS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`,
    };
    // products#2 took products#1's metrics port, and refused to start once PostgreSQL, nats-server and the CA were made,
    // "in use by another process", saying to set PRODUCTS_LISTEN.
    const instances = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", "--postgres", "--instances", "2"], { env, encoding: "utf8", timeout: 20_000 });
    expect(instances.status).toBe(2);
    expect(instances.stderr).toBe(
      `start: PRODUCTS_LISTEN+2 (products#2) and PRODUCTS_METRICS_LISTEN would both listen on 127.0.0.1:${products + 2}: set them apart (with --instances, each instance of a service listens 2 ports above the one before)\n`,
    );
    expect(existsSync(dataDir)).toBe(false);
    // A wildcard address takes the port on every address, the local nats-server's too.
    const wildcard = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...env, ORDERS_METRICS_LISTEN: `0.0.0.0:${env.NATS_PORT}` }, encoding: "utf8", timeout: 20_000 });
    expect(wildcard.status).toBe(2);
    expect(wildcard.stderr).toBe(`start: ORDERS_METRICS_LISTEN and NATS_PORT would both listen on port ${env.NATS_PORT} (0.0.0.0:${env.NATS_PORT} and 127.0.0.1:${env.NATS_PORT}): set them apart\n`);
    expect(existsSync(dataDir)).toBe(false);
  });

  it("refuses one database named for both services before starting anything, where the second to start used to refuse it and stop everything", () => {
    const dataDir = join(dir.path, "never-made");
    const bothOn = (products: string, orders: string, ...args: string[]) =>
      spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", ...args], {
        env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "", PRODUCTS_DATABASE_URL: products, ORDERS_DATABASE_URL: orders },
        encoding: "utf8",
        timeout: 20_000,
      });
    // The same server and database, written two ways (the host's case, the default port).
    const postgres = bothOn("postgres://postgres:secret@db.example:5432/shop", "postgres://postgres@DB.example/shop", "--instances", "2");
    expect(postgres.status).toBe(2);
    expect(postgres.stderr).toContain("start: PRODUCTS_DATABASE_URL and ORDERS_DATABASE_URL name one database (postgres://postgres:***@db.example:5432/shop): each service needs a database of its own\n");
    const sqlite = bothOn(join(dataDir, "shop.db"), `${dataDir}/./shop.db`);
    expect(sqlite.status).toBe(2);
    expect(sqlite.stderr).toContain("name one database");
    expect(existsSync(dataDir)).toBe(false);
  });

  it("refuses --postgres with PRODUCTS_DATABASE_URL or ORDERS_DATABASE_URL set, naming them, before making anything", () => {
    const dataDir = join(dir.path, "never-made-postgres");
    const withPostgres = (named: Record<string, string>) =>
      spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", "--postgres"], {
        env: { ...process.env, DATA_DIR: dataDir, NATS_URL: "", PRODUCTS_DATABASE_URL: "", ORDERS_DATABASE_URL: "", ...named },
        encoding: "utf8",
        timeout: 20_000,
      });
    // The services ran on --postgres's databases, the one named dropped without a word, while the tools read the one named.
    const one = withPostgres({ ORDERS_DATABASE_URL: "postgres://postgres:secret@db.example/orders" });
    expect(one.status).toBe(2);
    expect(one.stderr).toBe("start: --postgres gives each service a database on a PostgreSQL server of its own, and ORDERS_DATABASE_URL names another: use one or the other (unset it, or leave out --postgres to use it)\n");
    const both = withPostgres({ PRODUCTS_DATABASE_URL: join(dataDir, "products.db"), ORDERS_DATABASE_URL: "postgres://db.example/orders" });
    expect(both.status).toBe(2);
    expect(both.stderr).toBe("start: --postgres gives each service a database on a PostgreSQL server of its own, and PRODUCTS_DATABASE_URL and ORDERS_DATABASE_URL name others: use one or the other (unset them, or leave out --postgres to use them)\n");
    expect(existsSync(dataDir)).toBe(false);
    // DATABASE_URL left over is said to go unused, without telling to set the two --postgres refuses (the start then
    // refused for the port POSTGRES_PORT shares with NATS_PORT).
    const leftOver = withPostgres({ DATABASE_URL: "postgres://db.example/shop", NATS_PORT: "4222", POSTGRES_PORT: "4222" });
    expect(leftOver.stderr).toContain("start: DATABASE_URL is not used: the two services need a database each, which --postgres gives them on its PostgreSQL server. Going on with those\n");
    expect(leftOver.stderr).toContain("start: NATS_PORT and POSTGRES_PORT would both listen on 127.0.0.1:4222");
    expect(existsSync(dataDir)).toBe(false);
  });

  it("refuses a second start on the same DATA_DIR while the first runs, and a service address already taken, before starting anything", { timeout: 90_000 }, async () => {
    // A start.pid left by a start killed outright, naming a process that is not a start, is taken over.
    writeFileSync(join(dir.path, "start.pid"), `${process.pid}\n`);
    const system = await startSystem(dir.path);
    child = system.child;
    const pid = readFileSync(join(dir.path, "start.pid"), "utf8").trim();
    expect(pid).toBe(String(system.child.pid));
    const others = { NATS_PORT: String(await freePort()), PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_LISTEN: `127.0.0.1:${await freePort()}`, PRODUCTS_METRICS_LISTEN: `127.0.0.1:${await freePort()}`, ORDERS_METRICS_LISTEN: `127.0.0.1:${await freePort()}` };
    const second = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...process.env, ...others, DATA_DIR: dir.path, NATS_URL: "" }, encoding: "utf8", timeout: 30_000 });
    expect(second.status).toBe(2);
    expect(second.stderr).toContain(`${dir.path} is in use by another \`npm start\` (pid ${pid}); stop that one first, or set DATA_DIR to another directory`);
    expect(second.stdout).not.toContain("nats-server");
    expect(second.stderr).not.toContain("everything stopped");
    expect(await isListening(Number(others.NATS_PORT))).toBe(false);
    // Another DATA_DIR, with the product service's address the first system's.
    const otherDir = join(dir.path, "other");
    const taken = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...process.env, ...others, PRODUCTS_LISTEN: system.productsAddress, DATA_DIR: otherDir, NATS_URL: "" }, encoding: "utf8", timeout: 30_000 });
    expect(taken.status).toBe(2);
    expect(taken.stderr).toContain(`${system.productsAddress} (PRODUCTS_LISTEN) is already in use; set PRODUCTS_LISTEN to another address`);
    expect(taken.stdout).not.toContain("nats-server");
    // Nothing was made, and nothing is said to have stopped.
    expect(existsSync(otherDir)).toBe(false);
    expect(taken.stderr).not.toContain("everything stopped");
    const postgresTaken = spawnSync(process.execPath, ["--import", "tsx", "tools/start.ts", "--postgres"], { env: { ...process.env, ...others, POSTGRES_PORT: String(system.ports.products), DATA_DIR: otherDir, NATS_URL: "" }, encoding: "utf8", timeout: 30_000 });
    expect(postgresTaken.status).toBe(2);
    expect(postgresTaken.stderr).toContain(`127.0.0.1:${system.ports.products} (POSTGRES_PORT) is already in use; set POSTGRES_PORT to another port`);
    expect(existsSync(otherDir)).toBe(false);
    // The first system carries on, and its file goes with it.
    const client = createClient(ProductServiceService, { address: system.productsAddress, ...toolClientSecurity({ subject: "ops", roles: ["admin"] }, { DATA_DIR: dir.path }) });
    expect((await client.listProducts({ pageSize: 1, pageToken: "" })).products).toBeDefined();
    client.close();
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    expect(readdirSync(dir.path)).not.toContain("start.pid");
  });

  it("with GRPC_TLS_CLIENT_AUTH=require, prints a grpcurl command that shows the client certificate, and that command works", { timeout: 90_000 }, async () => {
    const system = await startSystem(dir.path, { env: { GRPC_TLS_CLIENT_AUTH: "require" } });
    child = system.child;
    const tls = join(dir.path, "tls");
    const hint = system.output().match(/Concord is up\. Try: (grpcurl [^\n]*?) {4}\(Ctrl-C stops everything\)/)?.[1];
    expect(hint).toBe(`grpcurl -cacert ${join(tls, "ca.pem")} -cert ${join(tls, "client.pem")} -key ${join(tls, "client-key.pem")} 127.0.0.1:${system.ports.orders} list`);
    // Run as printed: without the client's certificate the server refuses the handshake ("certificate required").
    const [, ...args] = hint!.split(" ");
    const listed = spawnSync(join(repoRoot, ".tools", "bin", "grpcurl"), ["-max-time", "10", ...args], { encoding: "utf8", timeout: 20_000 });
    expect(listed.stderr).toBe("");
    expect(listed.stdout).toContain("shop.orders.v1.OrderService");
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
  });

  it("shows a DATA_DIR inside the working directory relative to it, as the README shows .data/...", { timeout: 90_000 }, async () => {
    // Inside the repository, where npm start runs; tmp/ there is ignored by git.
    const tmp = join(repoRoot, "tmp");
    const madeTmp = !existsSync(tmp);
    mkdirSync(tmp, { recursive: true });
    const inside = mkdtempSync(join(tmp, "start-paths-"));
    const shown = relative(repoRoot, inside);
    try {
      const system = await startSystem(inside);
      child = system.child;
      expect(system.output()).toContain(`made the development CA, certificates and token key under ${shown}: tls/ca.pem`);
      expect(system.output()).toContain(`store in ${shown}/nats, log in ${shown}/nats-server.log`);
      expect(system.output()).toContain(`nkey seeds in ${shown}/nats-credentials (the observer's reads: nats --nkey ${shown}/nats-credentials/observer.nk ...)`);
      expect(system.output()).toContain(`(database ${shown}/products.db, pid`);
      expect(system.output()).toContain(`Concord is up. Try: grpcurl -cacert ${shown}/tls/ca.pem `);
      system.child.kill("SIGINT");
      expect(await system.exited).toBe(0);
    } finally {
      child?.kill("SIGKILL");
      for (const pid of processesOf(inside)) process.kill(pid, "SIGKILL");
      rmSync(madeTmp ? tmp : inside, { recursive: true, force: true });
    }
  });

  it("names the service and its address when it takes connections and never answers at start, and stops everything", { timeout: 120_000 }, async () => {
    const { ports, result } = await startOnFreePorts(dir.path, (ports) => ({
      // The product service stops itself once it listens for gRPC.
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import ${pathToFileURL(join(repoRoot, "test", "support", "stop-once-listening.mjs")).href}`,
      STOP_ONCE_LISTENING_ON: String(ports.products),
      STOP_ONCE_LISTENING_SCRIPT: join("services", "products", "main.js"),
    }));
    expect(result.status, result.stdout + result.stderr).toBe(1);
    expect(result.stderr).toContain(`start: products: 127.0.0.1:${ports.products} did not report SERVING within 30 s: it gave no answer within 1 s, try after try`);
    expect(result.stderr).toContain("start: everything stopped");
    expect(result.stdout).not.toContain("Concord is up");
  });

  it("says a service that reports NOT_SERVING at start is waiting (for its database, say), not that its port refused, and stops everything", { timeout: 120_000 }, async () => {
    const databasePort = await freePort();
    // No PostgreSQL server there: the service waits for one, as it would for a server still starting.
    const { ports, result } = await startOnFreePorts(dir.path, () => ({ PRODUCTS_DATABASE_URL: `postgres://postgres@127.0.0.1:${databasePort}/products` }));
    expect(result.status, result.stdout + result.stderr).toBe(1);
    expect(result.stderr).toContain(
      // It holds its address from before it opens its database (it listened only once that was open and migrated).
      `start: products: 127.0.0.1:${ports.products} did not report SERVING within 30 s: it reported NOT_SERVING, as a service does while it opens and migrates its database and until it has reached NATS; its log lines above say what it waits for`,
    );
    const waiting = result.stdout.split("\n").find((line) => line.includes("the database cannot be reached; waiting for it"));
    // Where and why, without a stack.
    expect(JSON.parse(waiting!)).toMatchObject({ level: "warn", database: `postgres://postgres@127.0.0.1:${databasePort}/products`, reason: `connect ECONNREFUSED 127.0.0.1:${databasePort}` });
    expect(waiting).not.toContain("stack");
    expect(result.stderr).toContain("start: everything stopped");
  });

  it("says a service that refused to start (a database another service owns) refused, pointing at its log line, not that it exited unexpectedly", { timeout: 120_000 }, async () => {
    const database = join(dir.path, "orders-own.db");
    await (await openDatabase({ path: database, migrations: [], owner: "orders" })).close();
    const { result } = await startOnFreePorts(dir.path, () => ({ PRODUCTS_DATABASE_URL: database }));
    // It ended with exit 1, as for a failure, where the refusal is a setting to correct, as npm start's own are.
    expect(result.status, result.stdout + result.stderr).toBe(2);
    expect(result.stdout).toContain("start-up refused: the database belongs to the orders service, not to products");
    // It said "start: products exited unexpectedly (code 1)", as of a crash.
    const refused = "start: products refused to start (exit code 2): its log line above says why; stopping everything";
    expect(result.stderr).toContain(refused);
    expect(readmeProse()).toContain(`\`${refused}\``);
    expect(result.stderr).not.toContain("exited unexpectedly");
    expect(result.stderr).toContain("start: everything stopped");
  });

  it("ends with exit 2 when a service refuses its first start on the nats-server NATS_URL names (a JetStream limit), its line pointing at the service's", { timeout: 90_000 }, async () => {
    // A server of the operator's whose account may hold one stream: the product service makes SHOP_ORDERS, and is refused SHOP_PRODUCTS.
    const server = await startNatsServer({ extraConfig: "no_auth_user: limited\naccounts { LIMITED { jetstream { max_streams: 1 }, users [ { user: limited, password: limited } ] } }" });
    try {
      const dataDir = join(dir.path, "limited");
      const { result } = await startOnFreePorts(dataDir, () => ({ NATS_URL: server.url }));
      // It ended with exit 1, as for a failure.
      expect(result.status, result.stdout + result.stderr).toBe(2);
      expect(result.stdout).toMatch(/"msg":"start-up refused: stream SHOP_\w+ does not exist, and nats-server refuses to create it: maximum number of streams reached \(err_code 10027\)/);
      expect(result.stderr.split("\n")).toEqual(["start: products refused to start (exit code 2): its log line above says why; stopping everything", "start: everything stopped", ""]);
      expect(result.stdout).not.toMatch(/gRPC on|Concord is up/);
      expect(processesOf(dataDir)).toEqual([]);
    } finally {
      await server.stop();
    }
  });

  it("starts a killed service again on the same gRPC and metrics ports, saying which and how, and calls through it work again", { timeout: 120_000 }, async () => {
    const system = await startSystem(dir.path);
    child = system.child;
    const pid = Number(/products: .*pid (\d+)/.exec(system.output())![1]);
    process.kill(pid, "SIGKILL");
    await expect.poll(() => pidsRunningAgain(system.output(), "products"), { timeout: 40_000, interval: 100 }).toHaveLength(1);
    // It said "start: products exited unexpectedly (killed by SIGKILL); stopping everything", and stopped everything.
    expect(system.output()).toContain("start: products exited (killed by SIGKILL); starting it again in 1 s");
    expect(pidsRunningAgain(system.output(), "products")[0]).not.toBe(pid);
    // A call to it, and the saga's call through the order service to it.
    await orderConfirmed(dir.path, system.ports, 30_000);
    const metrics = await fetch(`http://127.0.0.1:${system.ports.productsMetrics}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain("grpc_server_handled_total");
    // An exit of its own (SIGTERM from elsewhere: exit code 0) is said by its code.
    const orders = Number(/orders: .*pid (\d+)/.exec(system.output())![1]);
    process.kill(orders, "SIGTERM");
    await expect.poll(() => pidsRunningAgain(system.output(), "orders"), { timeout: 40_000, interval: 100 }).toHaveLength(1);
    expect(system.output()).toContain("start: orders exited (code 0); starting it again in 1 s");
    await orderConfirmed(dir.path, system.ports, 30_000);
    expect(system.output()).not.toContain("stopping everything");
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    expect(processesOf(dir.path)).toEqual([]);
  });

  it("says an instance started again that is not SERVING within 30 s is waited for, and that it runs again once it serves", { timeout: 120_000 }, async () => {
    const { system, go } = await killProductsHeldAtRestart(dir.path);
    child = system.child;
    const waited = `start: products was started again, but 127.0.0.1:${system.ports.products} did not report SERVING within 30 s: nothing listens there`;
    await expect.poll(() => system.output(), { timeout: 60_000, interval: 200 }).toContain(waited);
    expect(system.output()).toContain("still waiting for it (a line saying it is running again comes once it is)");
    expect(pidsRunningAgain(system.output(), "products")).toEqual([]);
    writeFileSync(go, "");
    // It never said so, however long after it served.
    await productsBackThenCtrlC(dir.path, system);
  });

  it("starts a killed service again once its port, held meanwhile by an outgoing connection, is free, saying so, where it refused to start and everything stopped", { timeout: 120_000 }, async () => {
    const system = await startSystem(dir.path);
    child = system.child;
    const pid = Number(/products: .*pid (\d+)/.exec(system.output())![1]);
    // While start.ts is stopped, the product service dies and a connection of another process is given its metrics
    // port as its own, as the kernel gives free ports of its range to outgoing connections. Made by Python: Node sets
    // SO_REUSEADDR on every socket it binds, which a listener may then share the port with; a connection the kernel
    // gave the port to has no such option. (Not the gRPC port: the service's connections there leave it in TIME_WAIT,
    // which such a bind is refused.)
    const peer = createServer();
    const accepted: Socket[] = [];
    peer.on("connection", (socket) => accepted.push(socket));
    await new Promise<void>((resolve) => peer.listen(0, "127.0.0.1", resolve));
    const client = [
      "import socket, sys",
      "s = socket.socket()",
      "s.bind(('127.0.0.1', int(sys.argv[1])))",
      "s.connect(('127.0.0.1', int(sys.argv[2])))",
      "print('connected', flush=True)",
      "s.recv(1)", // until the peer closes: the close is then this side's second, leaving no TIME_WAIT on the port
    ].join("\n");
    process.kill(system.child.pid!, "SIGSTOP");
    let holder: ChildProcess;
    try {
      process.kill(pid, "SIGKILL");
      await expect.poll(() => isAlive(pid), { timeout: 10_000, interval: 50 }).toBe(false);
      holder = spawn("python3", ["-c", client, String(system.ports.productsMetrics), String((peer.address() as AddressInfo).port)], { stdio: ["ignore", "pipe", "inherit"] });
      let said = "";
      holder.stdout!.on("data", (d) => (said += d));
      await expect.poll(() => said, { timeout: 10_000, interval: 50 }).toContain("connected");
    } finally {
      process.kill(system.child.pid!, "SIGCONT");
    }
    await expect.poll(() => system.output(), { timeout: 20_000, interval: 100 }).toContain(
      `start: not starting products again yet: 127.0.0.1:${system.ports.productsMetrics} (PRODUCTS_METRICS_LISTEN) is taken: a socket that does not listen holds it`,
    );
    expect(pidsRunningAgain(system.output(), "products")).toEqual([]);
    // The connection ends, the peer's side first.
    const holderExited = new Promise((resolve) => holder.once("exit", resolve));
    for (const socket of accepted) socket.destroy();
    await holderExited;
    peer.close();
    await productsBackThenCtrlC(dir.path, system);
    expect(system.output()).toContain(`start: 127.0.0.1:${system.ports.productsMetrics} is free again; starting products`);
  });

  it("starts a killed service again once its port, taken while it started again, is free, where its refusal to listen stopped everything", { timeout: 120_000 }, async () => {
    const { system, go, pid } = await killProductsHeldAtRestart(dir.path);
    child = system.child;
    // Started again once its ports were found free, and held before it listens: another process takes its port then.
    await expect.poll(() => servicePid(dir.path, "products", pid), { timeout: 20_000, interval: 100 }).toBeDefined();
    const taker = await holdPort(system.ports.products);
    try {
      writeFileSync(go, "");
      await expect.poll(() => system.output(), { timeout: 20_000, interval: 100 }).toContain(
        `start: not starting products again yet: 127.0.0.1:${system.ports.products} (PRODUCTS_LISTEN) is taken: another process listens there; starting it once it is free (tried every second)`,
      );
      expect(system.output()).toContain(`start: products could not listen on 127.0.0.1:${system.ports.products} (PRODUCTS_LISTEN), taken while it started; starting it again in 1 s`);
    } finally {
      taker.close();
    }
    await productsBackThenCtrlC(dir.path, system);
    expect(system.output()).not.toContain("refused to start");
  });

  it("stops everything when a service exits 5 times within a minute, saying so (exit 1)", { timeout: 120_000 }, async () => {
    const system = await startSystem(dir.path);
    child = system.child;
    let pid = Number(/products: .*pid (\d+)/.exec(system.output())![1]);
    for (let exit = 1; exit < 5; exit++) {
      process.kill(pid, "SIGKILL");
      await expect.poll(() => pidsRunningAgain(system.output(), "products"), { timeout: 40_000, interval: 100 }).toHaveLength(exit);
      pid = pidsRunningAgain(system.output(), "products")[exit - 1];
    }
    process.kill(pid, "SIGKILL");
    expect(await system.exited).toBe(1);
    expect(system.output()).toContain("start: products exited (killed by SIGKILL), 5 times within 60 s; not starting it again; stopping everything");
    expect(system.output()).toContain("everything stopped");
    expect(processesOf(dir.path)).toEqual([]);
  });

  it("starts nothing again when Ctrl-C comes during the pause before a killed service's start, and stops cleanly", { timeout: 90_000 }, async () => {
    const system = await startSystem(dir.path, { logLevel: "info" });
    child = system.child;
    const pid = Number(/products: .*pid (\d+)/.exec(system.output())![1]);
    const pause = "start: products exited (killed by SIGKILL); starting it again in 1 s";
    // Ctrl-C as soon as the pause begins, not a poll's interval later.
    let signalled = false;
    system.child.stderr!.on("data", () => {
      if (signalled || !system.output().includes(pause)) return;
      signalled = true;
      system.child.kill("SIGINT");
    });
    process.kill(pid, "SIGKILL");
    expect(await system.exited).toBe(0);
    const after = system.output().slice(system.output().indexOf(pause));
    expect(after).not.toContain("is running again");
    // A product service started again would have logged, if only that it stopped before start-up was over.
    expect(after).not.toContain('"service":"products"');
    expect(after).toContain("everything stopped");
    expect(processesOf(dir.path)).toEqual([]);
  });

  it("stops everything when a service started again refuses to start (a database another service owns), saying it refused", { timeout: 90_000 }, async () => {
    const { system, go } = await killProductsHeldAtRestart(dir.path);
    child = system.child;
    await expect.poll(() => system.output(), { timeout: 20_000, interval: 100 }).toContain("start: products exited (killed by SIGKILL); starting it again in 1 s");
    // While it is away, its database is replaced by one of the order service's.
    const database = join(dir.path, "products.db");
    for (const file of [database, `${database}-wal`, `${database}-shm`]) rmSync(file, { force: true });
    await (await openDatabase({ path: database, migrations: [], owner: "orders" })).close();
    writeFileSync(go, "");
    expect(await system.exited).toBe(1);
    expect(system.output()).toContain("start-up refused: the database belongs to the orders service, not to products");
    expect(system.output()).toContain("start: products refused to start (exit code 2): its log line above says why; stopping everything");
    expect(system.output()).not.toContain("is running again");
    expect(system.output()).toContain("everything stopped");
    expect(processesOf(dir.path)).toEqual([]);
  });

  it.each([
    ["before it starts the service, by its own check", "products", (port: number) => `start: 127.0.0.1:${port} (ORDERS_LISTEN) was free when the start checked it and is taken now: another process listens there; set ORDERS_LISTEN to another address\n`],
    ["by the service's refusal to listen", "orders", (port: number) => `start: orders could not listen on 127.0.0.1:${port} (ORDERS_LISTEN), free when the start checked it: another process listens there; set ORDERS_LISTEN to another address; stopping everything\n`],
  ])("refuses the order service's address taken since the start checked it, %s, in one line naming what holds it (exit 2)", { timeout: 90_000 }, async (_, held, said) => {
    // The held service waits, before it runs, until the test lets it go; meanwhile another process takes the order service's port.
    const go = join(dir.path, `let-${held}-start`);
    const ports = { nats: await freePort(), products: await freePort(), orders: await freePort(), productsMetrics: await freePort(), ordersMetrics: await freePort() };
    const started = spawn(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...startEnv(dir.path, ports), ...holdStart(held, go) }, stdio: ["ignore", "pipe", "pipe"] });
    child = started;
    let output = "";
    started.stdout.on("data", (d) => (output += d));
    started.stderr.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => started.once("exit", (code) => resolve(code)));
    await expect.poll(() => servicePid(dir.path, held), { timeout: 40_000, interval: 100 }).toBeDefined();
    const taker = await holdPort(ports.orders);
    try {
      writeFileSync(go, "");
      // The order service's refusal stopped everything with "start: orders refused to start (exit code 2): its log line above says why", exit 1.
      expect(await exited).toBe(2);
    } finally {
      taker.close();
    }
    expect(output).toContain(said(ports.orders));
    expect(output).not.toContain("refused to start");
    expect(output).toContain("everything stopped");
    expect(output).not.toContain("Concord is up");
  });

  it("still stops everything when a service exits while the system is starting, saying which and how", { timeout: 90_000 }, async () => {
    // The order service waits, before it runs, until the test lets it go: the product service serves meanwhile.
    const go = join(dir.path, "let-orders-start");
    const hold = holdStart("orders", go);
    const ports = { nats: await freePort(), products: await freePort(), orders: await freePort(), productsMetrics: await freePort(), ordersMetrics: await freePort() };
    const started = spawn(process.execPath, ["--import", "tsx", "tools/start.ts"], { env: { ...startEnv(dir.path, ports), ...hold }, stdio: ["ignore", "pipe", "pipe"] });
    child = started;
    let output = "";
    started.stdout.on("data", (d) => (output += d));
    started.stderr.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => started.once("exit", (code) => resolve(code)));
    const products = () =>
      processesOf(dir.path).find((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(join("services", "products", "main.js"));
        } catch {
          return false; // gone meanwhile
        }
      });
    await expect.poll(async () => (await isListening(ports.products)) && products() !== undefined, { timeout: 40_000, interval: 100 }).toBe(true);
    process.kill(products()!, "SIGKILL");
    expect(await exited).toBe(1);
    expect(output).toContain("start: products exited unexpectedly (killed by SIGKILL); stopping everything");
    expect(output).not.toContain("starting it again");
    expect(output).toContain("everything stopped");
    expect(output).not.toContain("Concord is up");
  });

  it("leaves at once on a second Ctrl-C while a stop hangs, and what it started stops anyway", { timeout: 90_000 }, async () => {
    // The product service hangs for 10 s on SIGTERM: the first signal's stop waits for it.
    const hang = {
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import ${pathToFileURL(join(repoRoot, "test", "support", "hang-on-sigterm.mjs")).href}`,
      HANG_ON_SIGTERM_SCRIPT: join("services", "products", "main.js"),
      HANG_ON_SIGTERM_MS: "10000",
    };
    const system = await startSystem(dir.path, { env: hang });
    child = system.child;
    const started = processesOf(dir.path);
    system.child.kill("SIGINT");
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(system.child.exitCode).toBeNull();
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(130);
    expect(system.output()).toContain("start: SIGINT again while stopping; leaving now (killing what still runs: SIGKILL)");
    // What it started does not outlive it.
    await expect.poll(() => started.filter(isAlive), { timeout: 30_000, interval: 100 }).toEqual([]);
    for (const port of Object.values(system.ports)) expect(await isListening(port)).toBe(false);
  });

  it("stops everything on SIGHUP to its process group, as when its terminal closes, leaving the ports free", { timeout: 90_000 }, async () => {
    const system = await startSystem(dir.path, { detached: true });
    child = system.child;
    expect(processesOf(dir.path).length).toBeGreaterThanOrEqual(4);
    process.kill(-system.child.pid!, "SIGHUP");
    expect(await system.exited).toBe(0);
    expect(system.output()).toContain("everything stopped");
    expect(processesOf(dir.path)).toEqual([]);
    for (const port of Object.values(system.ports)) expect(await isListening(port)).toBe(false);

    const again = await startSystem(dir.path, { ports: system.ports });
    child = again.child;
    again.child.kill("SIGINT");
    expect(await again.exited).toBe(0);
  });

  it.each([
    ["SIGINT", "the npm process"],
    ["SIGTERM", "the npm process"],
    // What Ctrl-C in a terminal does: npm and start.ts each get one, and npm passes its own on.
    ["SIGINT", "the process group"],
  ] as const)("stops everything cleanly on %s to %s of `npm start`, leaving no process and no port", { timeout: 90_000 }, async (signal, to) => {
    const system = await startSystem(dir.path, { npm: true, detached: true });
    child = system.child;
    const tree = descendantsOf(system.child.pid!);
    // start.ts, the services, nats-server and the script that tethers it.
    expect(tree.length).toBeGreaterThanOrEqual(5);
    process.kill(to === "the process group" ? -system.child.pid! : system.child.pid!, signal);
    expect(await system.exited).toBe(0);
    expect(system.output()).toContain("everything stopped");
    await expect.poll(() => tree.filter(isAlive), { timeout: 20_000, interval: 100 }).toEqual([]);
    for (const port of Object.values(system.ports)) expect(await isListening(port)).toBe(false);
  });

  it("stops everything cleanly when the npm process of `npm start` is killed outright, leaving no process and no port", { timeout: 90_000 }, async () => {
    const system = await startSystem(dir.path, { npm: true, detached: true, logLevel: "info" });
    child = system.child;
    const tree = descendantsOf(system.child.pid!);
    expect(tree.length).toBeGreaterThanOrEqual(5);
    process.kill(system.child.pid!, "SIGKILL");
    await expect.poll(() => tree.filter(isAlive), { timeout: 25_000, interval: 100 }).toEqual([]);
    for (const port of Object.values(system.ports)) expect(await isListening(port)).toBe(false);
    expect(system.output()).toMatch(/start: npm, which started this script \(pid \d+\), is gone; stopping everything/);
    expect(system.output()).toContain("everything stopped");
    const stops = system.output().split("\n").filter((line) => line.includes('"msg":"stopped"'));
    expect(stops.map((line) => (JSON.parse(line) as { service: string }).service).sort()).toEqual(["orders", "products"]);
  });

  it("stops a service that is stopped (SIGSTOP) gracefully on Ctrl-C: continued, it acts on its SIGTERM", { timeout: 90_000 }, async () => {
    const system = await startSystem(dir.path, { logLevel: "info" });
    child = system.child;
    const products = Number(/products: .*pid (\d+)/.exec(system.output())![1]);
    process.kill(products, "SIGSTOP");
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    // Left stopped, it would have been killed (SIGKILL) 15 s later, logging nothing.
    const stops = system.output().split("\n").filter((line) => line.includes('"msg":"stopped"'));
    expect(stops.map((line) => (JSON.parse(line) as { service: string }).service).sort()).toEqual(["orders", "products"]);
  });

  it("stops a nats-server it started again only once the services started before it are gone, when it is killed outright", { timeout: 120_000 }, async () => {
    // Once its standard input has closed, the product service waits, before it stops, until the test lets it go.
    const go = join(dir.path, "let-products-stop");
    const hold = {
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import ${pathToFileURL(join(repoRoot, "test", "support", "hold-stop.mjs")).href}`,
      HOLD_STOP_SCRIPT: join("services", "products", "main.js"),
      HOLD_STOP_UNTIL: go,
    };
    const system = await startSystem(dir.path, { detached: true, logLevel: "info", env: hold });
    child = system.child;
    process.kill(natsServerPid(dir.path, "nats-server.conf")!, "SIGKILL");
    await expect.poll(() => system.output(), { timeout: 30_000, interval: 100 }).toContain("start: nats-server is running again");
    // The services hold the first server's tether, not this one's.
    const server = natsServerPid(dir.path, "nats-server.conf")!;
    process.kill(system.child.pid!, "SIGKILL");
    const stopped = (service: string) => system.output().split("\n").some((line) => line.includes('"msg":"stopped"') && line.includes(`"service":"${service}"`));
    await expect.poll(() => stopped("orders"), { timeout: 30_000, interval: 100 }).toBe(true);
    // The product service, still stopping, keeps the server up; it used to be stopped at the same moment as this script.
    const heldSince = Date.now();
    await expect.poll(() => !isAlive(server) || Date.now() - heldSince >= 3_000, { timeout: 20_000, interval: 50 }).toBe(true);
    const endedFirst = !isAlive(server);
    writeFileSync(go, "");
    await expect.poll(() => processesOf(dir.path), { timeout: 30_000, interval: 100 }).toEqual([]);
    expect(endedFirst).toBe(false);
    expect(stopped("products")).toBe(true);
    expect(system.output()).not.toMatch(/"msg":"stop failed"/);
  });

  it("stops the services gracefully, then nats-server, when it is killed outright", { timeout: 90_000 }, async () => {
    const system = await startSystem(dir.path, { detached: true, logLevel: "info" });
    child = system.child;
    const started = processesOf(dir.path);
    expect(started.length).toBeGreaterThanOrEqual(4);
    process.kill(system.child.pid!, "SIGKILL");
    await expect.poll(() => processesOf(dir.path), { timeout: 20_000, interval: 100 }).toEqual([]);
    for (const port of Object.values(system.ports)) expect(await isListening(port)).toBe(false);
    // Each service logged a clean stop, which needs NATS up while it drains.
    const stops = system.output().split("\n").filter((line) => line.includes('"msg":"stopped"'));
    expect(stops.map((line) => (JSON.parse(line) as { service: string }).service).sort()).toEqual(["orders", "products"]);
    expect(system.output()).not.toMatch(/"msg":"stop failed"/);
  });
});
