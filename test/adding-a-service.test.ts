import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { isListening } from "../platform/runtime/index.js";
import { repoRoot } from "../tools/repo-root.js";
import { nextSteps } from "../tools/gen.js";
import { freePort } from "./support/nats-server.js";
import { readmeProse } from "./support/readme.js";
import { createTempDir } from "./support/temp-dir.js";

/** The shipping service of README "Adding a service", as its steps have it written. */
const fixture = join(repoRoot, "test", "fixtures", "shipping");
/** A service of gRPC alone: no stream, no subscription. */
const billing = join(repoRoot, "test", "fixtures", "billing");

/** README's "Adding a service" section, white space as one space. */
function section(): string {
  const prose = readmeProse();
  const start = prose.indexOf("### Adding a service");
  return prose.slice(start, prose.indexOf(" ## ", start));
}

/** The text of every file under `dir`, joined. */
function textsUnder(dir: string): string {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => readFileSync(join(entry.parentPath, entry.name), "utf8"))
    .join("\n");
}

/** A copy of the repository's files as the work tree has them (tracked, and new ones it does not ignore), with its node_modules and installed tools linked. */
function copyOfRepository(to: string): void {
  const tracked = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: repoRoot, encoding: "utf8" }).split("\0").filter((f) => f !== "" && !f.startsWith("test/fixtures/"));
  for (const file of tracked) {
    if (!existsSync(join(repoRoot, file))) continue;
    mkdirSync(dirname(join(to, file)), { recursive: true });
    cpSync(join(repoRoot, file), join(to, file));
  }
  for (const linked of ["node_modules", ".tools", ".venv"]) if (existsSync(join(repoRoot, linked))) symlinkSync(join(repoRoot, linked), join(to, linked));
}

/**
 * Step 4 in the copy at `repo`: the entry of `fixtureDir`'s services-entry.txt
 * appended to tools/services.ts's list, with the imports it takes.
 */
function addEntry(repo: string, fixtureDir: string, imports: string): void {
  const path = join(repo, "tools", "services.ts");
  const list = readFileSync(path, "utf8");
  const entry = readFileSync(join(fixtureDir, "services-entry.txt"), "utf8");
  const edited = list.replace(/^(import .*\n)(?!import)/m, `$1${imports}`).replace("] as const satisfies readonly ServiceEntry[];", `${entry}] as const satisfies readonly ServiceEntry[];`);
  expect(edited.split("\n").length).toBe(list.split("\n").length + imports.split("\n").length - 1 + entry.split("\n").length - 1);
  writeFileSync(path, edited);
}

/**
 * A copy of the repository in `dir`/`name` and the environment of an `npm start` there with a service added whose
 * variables start with `prefix`: its data in `dir`/`name`-data, nats-server, PostgreSQL (with --postgres) and the
 * three services on free ports, each service's two ports above free too (a second instance's).
 */
async function systemWith(dir: string, name: string, prefix: string, logLevel: string) {
  const repo = join(dir, name);
  const dataDir = join(dir, `${name}-data`);
  copyOfRepository(repo);
  const pair = () => freePort({ alsoFree: [2] });
  const ports = { nats: await freePort(), postgres: await freePort(), products: await pair(), orders: await pair(), added: await pair(), productsMetrics: await pair(), ordersMetrics: await pair(), addedMetrics: await pair() };
  const env = {
    ...process.env,
    DATA_DIR: dataDir,
    NATS_URL: "",
    NATS_PORT: String(ports.nats),
    POSTGRES_PORT: String(ports.postgres),
    PRODUCTS_LISTEN: `127.0.0.1:${ports.products}`,
    ORDERS_LISTEN: `127.0.0.1:${ports.orders}`,
    [`${prefix}_LISTEN`]: `127.0.0.1:${ports.added}`,
    PRODUCTS_METRICS_LISTEN: `127.0.0.1:${ports.productsMetrics}`,
    ORDERS_METRICS_LISTEN: `127.0.0.1:${ports.ordersMetrics}`,
    [`${prefix}_METRICS_LISTEN`]: `127.0.0.1:${ports.addedMetrics}`,
    LOG_LEVEL: logLevel,
  };
  const run = (command: string, args: string[]) => spawnSync(command, args, { cwd: repo, env, encoding: "utf8", timeout: 120_000 });
  return { repo, dataDir, ports, env, run };
}

type System = Awaited<ReturnType<typeof systemWith>>;

/**
 * `npm start` with `args` in `system`'s copy, handed to `started` at once (for
 * the suite to kill should the test fail); returns once it says Concord is up.
 */
async function npmStart(system: System, args: readonly string[], started: (child: ChildProcess) => void) {
  let output = "";
  const child = spawn("npm", ["start", ...(args.length > 0 ? ["--", ...args] : [])], { cwd: system.repo, env: system.env, stdio: ["ignore", "pipe", "pipe"] });
  started(child);
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  await expect.poll(() => output, { timeout: 150_000, interval: 200 }).toContain("Concord is up");
  return { child, output: () => output, exited };
}

/** Steps 1 to 4 for billing, a service of gRPC alone, in `system`'s copy: its contract, `npm run gen`, its code and its entry. */
function addBilling({ repo, run }: System): void {
  cpSync(join(billing, "proto"), join(repo, "proto"), { recursive: true });
  const gen = run("npm", ["run", "-s", "gen"]);
  expect(gen.status, gen.stderr).toBe(0);
  // No NATS user of its own: the generated authorization knows it as a service of gRPC alone.
  const nats = readFileSync(join(repo, "gen", "ts", "concord_nats.ts"), "utf8");
  expect(nats).toContain('"grpcAlone": [\n    {\n      "name": "billing",\n      "services": [\n        "shop.billing.v1.BillingService"\n      ]\n    }\n  ]');
  expect(nats.match(/"name": "billing"/g)).toHaveLength(1);
  cpSync(join(billing, "services"), join(repo, "services"), { recursive: true });
  addEntry(repo, billing, 'import { billingSettings } from "../services/billing/config.js";\n');
}

/** BillingService/Ping at `address`, as the README makes calls: grpcurl over TLS with an admin's token. */
function pingBilling({ dataDir, run }: System, address: string) {
  const token = run(process.execPath, ["--import", "tsx", "tools/token.ts", "--role", "admin"]);
  expect(token.status, token.stderr).toBe(0);
  return run(join(repoRoot, ".tools", "bin", "grpcurl"), ["-max-time", "10", "-cacert", join(dataDir, "tls", "ca.pem"), "-H", `authorization: Bearer ${token.stdout.trim()}`, "-d", "{}", address, "shop.billing.v1.BillingService/Ping"]);
}

/** What `concord status` says of a service of gRPC alone in place of its outbox. */
const noOutbox = "outbox: none: it serves gRPC alone \\(its contract declares no stream and no subscription\\) and does not connect to NATS";

describe('README "Adding a service", followed in a copy of the repository', () => {
  const dir = createTempDir("concord-add-service-");
  let system: ChildProcess | undefined;
  afterAll(() => {
    system?.kill("SIGKILL");
    dir.remove();
  });

  it("names what the shipping fixture calls and writes", () => {
    const steps = section();
    const code = textsUnder(join(fixture, "services"));
    // Each piece the README gives the service, found both in its prose and in the files the test below writes.
    const entry = readFileSync(join(fixture, "services-entry.txt"), "utf8");
    for (const [said, written = said] of [
      ['addressSettings("SHIPPING", { listen, database })', 'addressSettings("SHIPPING", { listen: '],
      ['platformSettings("shipping")'],
      ['instance: (config) => instanceOf("SHIPPING", config)'],
      ['hostSettingsOf("SHIPPING", config)'],
      ['streamsOfService("shipping", natsAuthorization, allStreams)'],
      ['name: "shipping"'],
      ["runService"],
      ["createServiceHost"],
      ["host.server", "host.server.addService"],
      ["bindConsumers"],
      ["context.emit"],
      ["ShipmentPreparedEvent"],
      ["ShippingServiceConsumers"],
    ]) {
      expect(steps).toContain(said);
      expect(code + entry).toContain(written);
    }
    const contracts = textsUnder(join(fixture, "proto"));
    for (const name of ["shipping_service.proto", "shipping_events.proto"]) expect(existsSync(join(fixture, "proto", "shop", "shipping", "v1", name)), name).toBe(true);
    for (const piece of ["shop.shipping.v1", "ShippingService", "(concord.v1.access)", "(concord.v1.subscribe)", "shop.orders.v1.OrderConfirmed", "shipping-order-confirmed", "(concord.v1.stream)", "SHOP_SHIPPING", "shop.shipping.v1.>", "ShipmentPrepared", "(concord.v1.event)"]) {
      expect(steps).toContain(piece);
      expect(contracts).toContain(piece);
    }
    // The default ports the README says the steps used.
    expect(steps).toContain("the steps above used 50070 and 9120");
    expect(code).toContain('"127.0.0.1:50070"');
    expect(entry).toContain('"127.0.0.1:9120"');
  });

  it("adds a shipping service: refused by npm start until `npm run gen`, then an order confirmed becomes a stored shipment and a ShipmentPrepared, and concord status shows it", { timeout: 300_000 }, async () => {
    const shippingSystem = await systemWith(dir.path, "shipping", "SHIPPING", "warn");
    const { repo, dataDir, ports, env, run } = shippingSystem;

    // Step 1: the contracts.
    cpSync(join(fixture, "proto"), join(repo, "proto"), { recursive: true });
    // Not generated yet: npm start refuses before it makes anything, naming the new files.
    const early = run(process.execPath, ["--import", "tsx", "tools/start.ts"]);
    expect(early.stderr).toBe(
      "start: proto/ differs from what gen/ was generated from (shop/shipping/v1/shipping_events.proto (added), shop/shipping/v1/shipping_service.proto (added)): run `npm run gen`, then npm start again\n",
    );
    expect(early.status).toBe(2);
    expect(existsSync(dataDir)).toBe(false);

    // Step 2: npm run gen writes the contract side.
    const gen = run("npm", ["run", "-s", "gen"]);
    expect(gen.status, gen.stderr).toBe(0);
    for (const file of ["shipping_service_pb.ts", "shipping_service_jetstream.ts", "shipping_events_jetstream.ts"]) expect(existsSync(join(repo, "gen", "ts", "shop", "shipping", "v1", file)), file).toBe(true);
    expect(readFileSync(join(repo, "gen", "ts", "concord_nats.ts"), "utf8")).toContain('"name": "shipping"');

    // Step 3: the service; step 4: its entry in tools/services.ts.
    cpSync(join(fixture, "services"), join(repo, "services"), { recursive: true });
    addEntry(repo, fixture, 'import { ShippingServiceConsumers } from "../gen/ts/shop/shipping/v1/shipping_service_jetstream.js";\nimport { shippingSettings } from "../services/shipping/config.js";\n');
    // The tests of the list and of the --help texts that read it pass with the entry added: they fail on drift, not on a third service.
    const listTests = run(process.execPath, [join(repo, "node_modules", "vitest", "vitest.mjs"), "run", "tools/services.test.ts", "tools/help-text.test.ts"]);
    expect(listTests.status, listTests.stdout + listTests.stderr).toBe(0);

    // npm start: its pre-scripts check the tools and build, then everything starts, the new service among them.
    const started = await npmStart(shippingSystem, [], (child) => (system = child));
    const output = started.output();
    expect(output).toMatch(new RegExp(`shipping: gRPC on 127\\.0\\.0\\.1:${ports.added}, metrics on http://127\\.0\\.0\\.1:${ports.addedMetrics}/metrics \\(database .*shipping\\.db`));
    expect(output).toContain("SHOP_SHIPPING (1 replica)");

    // An order confirmed, as tools/try-order.ts places it.
    const tried = run(process.execPath, ["--import", "tsx", "tools/try-order.ts"]);
    expect(tried.stderr).toBe("");
    const orderId = /order (\S+) is ORDER_STATE_CONFIRMED/.exec(tried.stdout)?.[1];
    expect(orderId, tried.stdout).toBeDefined();

    // Its shipment stored, and ShipmentPrepared on SHOP_SHIPPING.
    const shipping = new Database(join(dataDir, "shipping.db"), { readonly: true });
    try {
      await expect.poll(() => shipping.prepare("SELECT order_id FROM shipments").pluck().all(), { timeout: 60_000 }).toContain(orderId);
    } finally {
      shipping.close();
    }
    const tail = spawn(process.execPath, ["--import", "tsx", "tools/concord.ts", "events", "tail", "--all", "--type", "shop.shipping.v1.ShipmentPrepared"], { cwd: repo, env, stdio: ["ignore", "pipe", "pipe"] });
    let events = "";
    tail.stdout.on("data", (d) => (events += d));
    try {
      await expect.poll(() => events, { timeout: 60_000 }).toContain(`"subject":"shop.shipping.v1.shipment.${orderId}.prepared"`);
      expect(JSON.parse(events.split("\n")[0]!)).toMatchObject({ stream: "SHOP_SHIPPING", type: "shop.shipping.v1.ShipmentPrepared", source: "shipping", payload: { orderId } });
    } finally {
      tail.kill();
    }

    // concord status names the service and its consumer, caught up.
    await expect
      .poll(() => run(process.execPath, ["--import", "tsx", "tools/concord.ts", "status"]).stdout, { timeout: 60_000, interval: 1_000 })
      .toMatch(new RegExp(`^shipping {2}gRPC 127\\.0\\.0\\.1:${ports.added}: SERVING\\n {2}outbox: depth 0, .*\\n {2}consumer shipping-order-confirmed on SHOP_ORDERS: pending 0, unacked 0, redelivered 0, dead letters 0$`, "m"));

    started.child.kill("SIGINT");
    expect(await started.exited).toBe(0);
    expect(started.output()).toContain("everything stopped");
  });

  it("adds billing, a service of gRPC alone (no stream, no subscription): npm start refuses its entry mistyped, gives it no NATS user and starts it, it answers grpcurl, concord status shows it SERVING, and Ctrl-C stops it", { timeout: 300_000 }, async () => {
    const billingSystem = await systemWith(dir.path, "billing", "BILLING", "info");
    const { repo, dataDir, ports, run } = billingSystem;
    addBilling(billingSystem);

    // Its entry under a name no package has: refused before anything starts, naming the services the contracts have.
    const list = join(repo, "tools", "services.ts");
    const entered = readFileSync(list, "utf8");
    writeFileSync(list, entered.replace('name: "billing"', 'name: "biling"'));
    const mistyped = run(process.execPath, ["--import", "tsx", "tools/start.ts"]);
    expect(mistyped.stderr).toBe(
      "start: tools/services.ts lists biling, and no proto package of that name (shop.biling.v1) declares a gRPC service, a stream or a (concord.v1.subscribe): " +
        "the contracts' services are billing, orders and products; give the entry its package's name (the one before its version), or run `npm run gen` if the contract is new\n",
    );
    expect(mistyped.status).toBe(2);
    expect(existsSync(dataDir)).toBe(false);
    writeFileSync(list, entered);

    const started = await npmStart(billingSystem, [], (child) => (system = child));
    const output = started.output();
    expect(output).toMatch(new RegExp(`billing: {2}gRPC on 127\\.0\\.0\\.1:${ports.added}, metrics on http://127\\.0\\.0\\.1:${ports.addedMetrics}/metrics`));
    // No NATS user, so no seed; and the service says why it does not connect.
    expect(/NATS users: ([^;]*);/.exec(output)?.[1]).not.toContain("billing");
    expect(existsSync(join(dataDir, "nats-credentials", "billing.nk"))).toBe(false);
    // Its log line and npm start's come through two pipes: either may be read first.
    await expect.poll(started.output, { timeout: 10_000 }).toMatch(/"service":"billing".*serves gRPC alone: its contract declares no stream and no subscription, so it does not connect to NATS; reporting SERVING/);

    const grpcurl = pingBilling(billingSystem, `127.0.0.1:${ports.added}`);
    expect(grpcurl.stderr).toBe("");
    expect(grpcurl.stdout).toBe("{}\n");

    await expect
      .poll(() => run(process.execPath, ["--import", "tsx", "tools/concord.ts", "status"]).stdout, { timeout: 60_000, interval: 1_000 })
      .toMatch(new RegExp(`^billing {2}gRPC 127\\.0\\.0\\.1:${ports.added}: SERVING\\n {2}${noOutbox}$`, "m"));

    // Its database backed up while it runs, with no consumers' positions to keep: it has none.
    const backup = join(dir.path, "billing-backup.db");
    const concord = (...args: string[]) => run(process.execPath, ["--import", "tsx", "tools/concord.ts", ...args]);
    const backedUp = concord("database", "backup", "billing", backup);
    expect(backedUp.status, backedUp.stderr).toBe(0);
    expect(backedUp.stderr).toMatch(new RegExp(`^concord database backup: the billing service's database backed up to ${backup} \\(\\d+ bytes\\); it has no durable consumers, so a restore has nothing to deliver again\\n$`));
    expect(JSON.parse(readFileSync(`${backup}.json`, "utf8"))).toMatchObject({ service: "billing", positions: [] });

    started.child.kill("SIGINT");
    expect(await started.exited).toBe(0);
    expect(started.output()).toContain("everything stopped");

    // Restored in place of its stopped database, with nothing to deliver again.
    const restored = concord("database", "restore", "billing", backup);
    expect(restored.status, restored.stderr).toBe(0);
    expect(restored.stderr).toMatch(new RegExp(`^concord database restore: ${backup} restored as ${dataDir}/billing\\.db; the database that was there is now \\S+\\n$`));
  });

  it("runs billing on PostgreSQL: with --postgres --instances 2 each instance answers grpcurl and concord status shows both SERVING and no outbox, then with --postgres alone on the same data; Ctrl-C stops everything each time", { timeout: 400_000 }, async () => {
    const billingSystem = await systemWith(dir.path, "billing-postgres", "BILLING", "warn");
    const { ports, run } = billingSystem;
    // The postgres user runs the server (as root), and needs to reach its data dir.
    chmodSync(dir.path, 0o755);
    addBilling(billingSystem);
    const status = () => run(process.execPath, ["--import", "tsx", "tools/concord.ts", "status"]);
    const stopped = async (started: Awaited<ReturnType<typeof npmStart>>) => {
      started.child.kill("SIGINT");
      expect(await started.exited).toBe(0);
      expect(started.output()).toContain("everything stopped");
      expect(await isListening(ports.postgres)).toBe(false);
      for (const port of [ports.added, ports.added + 2]) expect(await isListening(port), `port ${port}`).toBe(false);
    };

    const two = await npmStart(billingSystem, ["--postgres", "--instances", "2"], (child) => (system = child));
    expect(two.output()).toContain(`PostgreSQL on 127.0.0.1:${ports.postgres}, data in ${billingSystem.dataDir}/postgres, log in ${billingSystem.dataDir}/postgres.log (databases products, orders and billing)\n`);
    for (const [instance, offset] of [["billing#1", 0], ["billing#2", 2]] as const) {
      expect(two.output()).toMatch(
        new RegExp(`^${instance}: {2}gRPC on 127\\.0\\.0\\.1:${ports.added + offset}, metrics on http://127\\.0\\.0\\.1:${ports.addedMetrics + offset}/metrics \\(database postgres://postgres@127\\.0\\.0\\.1:${ports.postgres}/billing, pid \\d+\\)$`, "m"),
      );
      const grpcurl = pingBilling(billingSystem, `127.0.0.1:${ports.added + offset}`);
      expect(grpcurl.stderr, instance).toBe("");
      expect(grpcurl.stdout, instance).toBe("{}\n");
    }
    // Both instances, from what the start recorded; one line for the outbox they do not have, and no relay to name.
    await expect
      .poll(() => status().stdout, { timeout: 60_000, interval: 1_000 })
      .toMatch(new RegExp(`^billing#1 {2}gRPC 127\\.0\\.0\\.1:${ports.added}: SERVING\\nbilling#2 {2}gRPC 127\\.0\\.0\\.1:${ports.added + 2}: SERVING\\nbilling {2}${noOutbox}$`, "m"));
    const both = status();
    expect(both.status, both.stdout + both.stderr).toBe(0);
    expect(both.stdout).not.toMatch(/^billing {2}(relayed|consumers)/m);
    await stopped(two);

    const one = await npmStart(billingSystem, ["--postgres"], (child) => (system = child));
    expect(one.output()).toMatch(new RegExp(`^billing: {2}gRPC on 127\\.0\\.0\\.1:${ports.added}, metrics on .* \\(database postgres://postgres@127\\.0\\.0\\.1:${ports.postgres}/billing, pid \\d+\\)$`, "m"));
    const grpcurl = pingBilling(billingSystem, `127.0.0.1:${ports.added}`);
    expect(grpcurl.stderr).toBe("");
    expect(grpcurl.stdout).toBe("{}\n");
    await expect
      .poll(() => status().stdout, { timeout: 60_000, interval: 1_000 })
      .toMatch(new RegExp(`^billing {2}gRPC 127\\.0\\.0\\.1:${ports.added}: SERVING\\n {2}${noOutbox}$`, "m"));
    expect(status().status).toBe(0);
    await stopped(one);
  });
});

describe('README "Changing a contract", steps 1 to 3, followed in a copy of the repository', () => {
  const dir = createTempDir("concord-change-contract-");
  afterAll(() => dir.remove());

  it("adds a field with no rule to Product, an RPC to ProductService and an optional field to Order and CreateOrderRequest: after `npm run gen`, which names the optional fields, only services/products/contract.ts and the service's ServiceImpl fail to compile, and the platform tests whose answers follow from Product's contract pass", { timeout: 300_000 }, () => {
    expect(readmeProse()).toContain("For `Product` that is `services/products/contract.ts` alone");
    expect(readmeProse()).toContain("the service's `ServiceImpl` (`services/products/grpc/product-service.ts`) alone");
    const repo = join(dir.path, "repo");
    copyOfRepository(repo);
    const run = (command: string, args: string[]) => spawnSync(command, args, { cwd: repo, encoding: "utf8", timeout: 180_000 });

    // Step 1, the field with no max_len: a Product's size is then unbounded, which a list method's answers are expected from.
    const file = join(repo, "proto", "shop", "products", "v1", "product_service.proto");
    const contract = readFileSync(file, "utf8");
    const edited = contract
      .replace(/^(message Product \{\n[\s\S]*?)^\}\n/m, "$1  // Stock-keeping unit.\n  string sku = 10;\n}\n")
      // An RPC, whose stand-ins in the platform tests answer UNIMPLEMENTED without being told of it.
      .replace(
        /^(service ProductService \{\n[\s\S]*?)^\}\n/m,
        "$1  // Withdraws a product from sale.\n  rpc DiscontinueProduct(DiscontinueProductRequest) returns (DiscontinueProductResponse) {\n    option (concord.v1.access) = { roles: [\"admin\"] };\n  }\n}\n\n" +
          "// Input of DiscontinueProduct.\nmessage DiscontinueProductRequest {\n  // Id of the product.\n  string id = 1 [(buf.validate.field).string.uuid = true];\n}\n\n" +
          "// Output of DiscontinueProduct.\nmessage DiscontinueProductResponse {\n  // The product.\n  Product product = 1;\n}\n",
      );
    expect(edited).toContain("string sku = 10;");
    expect(edited).toContain("rpc DiscontinueProduct(");
    writeFileSync(file, edited);
    // An optional field, which the typecheck names no place for: gen's next: line names it instead.
    const ordersFile = join(repo, "proto", "shop", "orders", "v1", "order_service.proto");
    const withNote = readFileSync(ordersFile, "utf8")
      .replace(/^(message Order \{\n[\s\S]*?)^\}\n/m, "$1  // A note from the customer.\n  optional string note = 12 [(buf.validate.field).string.max_len = 200];\n}\n")
      .replace(/^(message CreateOrderRequest \{\n[\s\S]*?)^\}\n/m, "$1  // A note from the customer.\n  optional string note = 12 [(buf.validate.field).string.max_len = 200];\n}\n");
    expect(withNote.match(/optional string note = 12/g)).toHaveLength(2);
    writeFileSync(ordersFile, withNote);

    // Step 2, which names step 3, the optional fields and the checks after it; run again on the same contracts, it has nothing new to say.
    const gen = run("npm", ["run", "-s", "gen"]);
    expect(gen.status, gen.stderr).toBe(0);
    expect(gen.stdout).toContain(nextSteps(["shop.orders.v1.Order.note", "shop.orders.v1.CreateOrderRequest.note"]));
    expect(readmeProse()).toContain("`npm run gen` ends by naming step 3 and the checks of step 5");
    const again = run("npm", ["run", "-s", "gen"]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).not.toContain("next:");
    expect(readFileSync(join(repo, "gen", "ts", "shop", "products", "v1", "product_service_pb.ts"), "utf8")).toContain("  sku: string;\n");

    // Step 3: the service's conversion alone needs the field, and its ServiceImpl alone the method; no test does, and nothing needs the optional note.
    const typecheck = run("npm", ["run", "-s", "typecheck"]);
    const failing = new Set(Array.from(typecheck.stdout.matchAll(/^([^\s(]+)\(\d+,\d+\): error/gm), (m) => m[1]));
    expect([...failing].sort(), typecheck.stdout).toEqual(["services/products/contract.ts", "services/products/grpc/product-service.ts"]);
    const platform = run(process.execPath, [join(repo, "node_modules", "vitest", "vitest.mjs"), "run", "platform/grpc/unread-responses.test.ts"]);
    expect(platform.status, platform.stdout + platform.stderr).toBe(0);
  });
});
