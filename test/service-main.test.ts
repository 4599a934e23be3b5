import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { createAccount, createUser } from "nkeys.js";
import { describe, expect, it } from "vitest";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { checkHealth, createClient, waitForServing } from "../platform/grpc/index.js";
import { claimSqliteFile, openDatabase } from "../platform/sql/index.js";
import { startTraceReceiver } from "../tools/traces/otlp-receiver.js";
import { freePort, useNatsServer } from "./support/nats-server.js";
import { readmeProse } from "./support/readme.js";
import { resolvingLater, startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { grpcError } from "./support/shop.js";
import { tempDirForSuite } from "./support/temp-dir.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const run = (script: string, env: Record<string, string>, args: string[] = []) =>
  spawnSync(process.execPath, ["--import", "tsx", script, ...args], { env: { ...process.env, ...env }, encoding: "utf8", timeout: 20_000 });

/** `service` (products, orders) run as far as its start goes, on a free port, without TLS or tokens, with `env` besides. */
const start = (service: "products" | "orders", env: Record<string, string>) =>
  run(`services/${service}/main.ts`, { [`${service.toUpperCase()}_LISTEN`]: "127.0.0.1:0", GRPC_INSECURE: "1", GRPC_AUTH: "none", ...env });

describe("service entry points", () => {
  const dir = tempDirForSuite();
  it("refuse a bad environment with exit code 2 and a message naming each variable", () => {
    const result = run("services/orders/main.ts", { ORDERS_LISTEN: "nowhere", PRODUCTS_TIMEOUT: "soon", ORDERS_DATABASE_URL: "mysql://x/y", INBOX_RETENTION: "10m", NATS_NKEY_SEED: "/nonexistent/orders.nk", ORDERS_PENDING_TIMEOUT: "never" });
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/ORDERS_LISTEN="nowhere" is invalid/);
    expect(result.stderr).toMatch(/PRODUCTS_TIMEOUT="soon" is invalid/);
    expect(result.stderr).toMatch(/ORDERS_DATABASE_URL="mysql:\/\/x\/y" is invalid: unsupported database scheme/);
    expect(result.stderr).toMatch(/INBOX_RETENTION="10m" is invalid: expected at least 1h/);
    expect(result.stderr).toMatch(/NATS_NKEY_SEED="\/nonexistent\/orders\.nk" is invalid: no such file/);
    // A device was said to be no such file.
    const device = run("services/orders/main.ts", { ORDERS_LISTEN: "127.0.0.1:0", NATS_NKEY_SEED: "/dev/zero" });
    expect(device.status).toBe(2);
    expect(device.stderr).toContain('NATS_NKEY_SEED="/dev/zero" is invalid: it is a character device, not a regular file (');
    expect(result.stderr).toMatch(/ORDERS_PENDING_TIMEOUT="never" is invalid: expected a duration such as .*, or 0 or off/);
  });

  it("refuse a PRODUCTS_TIMEOUT of 0 and a SHUTDOWN_TIMEOUT past a timer's 24.8 days with exit code 2, before any database is made", () => {
    // PRODUCTS_TIMEOUT=0s was taken and failed after the migrations with a stack trace (exit 1); SHUTDOWN_TIMEOUT=30d made a stop wait 1 ms for its calls.
    const database = join(dir, "timeouts.db");
    const result = start("orders", { PRODUCTS_TIMEOUT: "0s", SHUTDOWN_TIMEOUT: "30d", ORDERS_DATABASE_URL: database });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('PRODUCTS_TIMEOUT="0s" is invalid: expected at least 1ms');
    expect(result.stderr).toContain('SHUTDOWN_TIMEOUT="30d" is invalid: expected at most 24d: a timer waits at most 2^31 - 1 ms (about 24.8 days)');
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expect(existsSync(database)).toBe(false);
    expect(start("products", { SHUTDOWN_TIMEOUT: "25d", PRODUCTS_DATABASE_URL: database }).status).toBe(2);
    expect(existsSync(database)).toBe(false);
  });

  it("refuse a gRPC or metrics address no process could listen on with exit code 2 and the variable to set, before any database is made", () => {
    // Both failed with a stack trace (exit 1): a host that does not resolve, and an address not this machine's (RFC 5737's, for documentation).
    const database = join(dir, "unlistened.db");
    const unresolved = start("products", { PRODUCTS_LISTEN: "nosuchhost.invalid:0", PRODUCTS_DATABASE_URL: database });
    expect(unresolved.status).toBe(2);
    expect(unresolved.stdout + unresolved.stderr).toContain("start-up refused: the gRPC address nosuchhost.invalid:0 cannot be listened on: its host does not resolve (");
    expect(unresolved.stdout + unresolved.stderr).toContain("set PRODUCTS_LISTEN to an address this machine may listen on, such as 127.0.0.1:<port>");
    expect(unresolved.stdout + unresolved.stderr).not.toContain("stack");
    const metrics = start("orders", { ORDERS_METRICS_LISTEN: "203.0.113.9:0", ORDERS_DATABASE_URL: database });
    expect(metrics.status).toBe(2);
    expect(metrics.stdout + metrics.stderr).toMatch(/start-up refused: the metrics address 203\.0\.113\.9:0 cannot be listened on: it is not an address of this machine \(listen EADDRNOTAVAIL: [^)]*\); set ORDERS_METRICS_LISTEN to an address/);
    expect(existsSync(database)).toBe(false);
  });

  it("refuse a database URL of an unknown scheme without printing its password", () => {
    const result = run("services/orders/main.ts", { ORDERS_LISTEN: "127.0.0.1:0", ORDERS_DATABASE_URL: "mysql://shop:s3cr@t@db.example/orders" });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('ORDERS_DATABASE_URL="mysql://shop:***@db.example/orders" is invalid: unsupported database scheme');
    expect(result.stderr).not.toContain("s3cr");
  });

  it("refuse a database URL whose password holds an unencoded / without printing the password", () => {
    const result = run("services/orders/main.ts", { ORDERS_LISTEN: "127.0.0.1:0", ORDERS_DATABASE_URL: "postgres://shop:s3cr/t#x@db.example/orders" });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('ORDERS_DATABASE_URL="postgres://shop:***@db.example/orders" is invalid: not a valid postgres:// URL');
    expect(result.stderr + result.stdout).not.toContain("s3cr");
  });

  it("log the database it waits for without a password given in the URL's query", { timeout: 60_000 }, async () => {
    const listen = `127.0.0.1:${await freePort()}`;
    const nobody = await freePort();
    const svc = startServiceProcess("orders", { ORDERS_LISTEN: listen, ORDERS_DATABASE_URL: `postgres://shop@127.0.0.1:${nobody}/orders?password=s3cret&sslpassword=t0p`, NATS_URL: "nats://127.0.0.1:1" });
    try {
      await expect.poll(() => svc.logs().filter((line) => line.level === "warn"), { timeout: 20_000, interval: 100 }).toEqual([
        expect.objectContaining({ database: `postgres://shop@127.0.0.1:${nobody}/orders?password=***&sslpassword=***`, msg: "the database cannot be reached; waiting for it" }),
      ]);
      expect(svc.lines().join("\n")).not.toMatch(/s3cret|t0p/);
      expect(await svc.stop()).toBe(0);
    } finally {
      await svc.kill();
    }
  });

  it("refuse a NATS URL that is not one with exit code 2 and one line naming the variable, as a database URL, without a stack", () => {
    for (const [url, why] of [
      ["nats://127.0.0.1:notaport", 'the port "notaport" is not a number'],
      ["nats://127.0.0.1:4222,not a url", '"not a url": expected nats://host:port'],
      ["tls://nats:s3cr@127.0.0.1:4222", 'the scheme is "tls://"'],
      // Dialled as 0.0.16.126, and "Invalid URL" at each try.
      ["4222", 'the host "4222" is a number, read as the address 0.0.16.126'],
      ["nats://999.1.1.1:4222", 'the host "999.1.1.1" is neither an IPv4 address'],
    ]) {
      const result = start("products", { NATS_URL: url, PRODUCTS_DATABASE_URL: join(dir, "never.db") });
      expect(result.status).toBe(2);
      expect(result.stderr).toContain(`NATS_URL=${JSON.stringify(url.replace("s3cr", "***"))} is invalid: ${why}`);
      expect(result.stderr + result.stdout).not.toMatch(/ at |s3cr/);
    }
    expect(existsSync(join(dir, "never.db"))).toBe(false);
  });

  it("refuse a seed given as NATS_NKEY_SEED, where its file's path goes, without printing it", () => {
    const seed = "SUAEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLE234567";
    const result = run("services/orders/main.ts", { ORDERS_LISTEN: "127.0.0.1:0", NATS_NKEY_SEED: seed });
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/NATS_NKEY_SEED=<a seed, not shown> is invalid: a seed itself, where the path of a file holding one goes/);
    expect(result.stderr + result.stdout).not.toContain(seed);
    // An account's seed, or the text of a .creds file, which holds a user's seed after its JWT.
    const accountSeed = createAccount().getSeed();
    const userSeed = createUser().getSeed();
    const creds = `-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.c2ln\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n${new TextDecoder().decode(userSeed)}\n------END USER NKEY SEED------\n`;
    for (const given of [new TextDecoder().decode(accountSeed), creds]) {
      const refused = run("services/orders/main.ts", { ORDERS_LISTEN: "127.0.0.1:0", NATS_NKEY_SEED: given });
      expect(refused.status).toBe(2);
      expect(refused.stderr).toMatch(/NATS_NKEY_SEED=<a seed, not shown> is invalid: a seed itself/);
      expect(refused.stderr + refused.stdout).not.toMatch(/S[AU][A-Z2-7]{56}/);
    }
  });

  it("refuse a saga timeout shorter than the product service's retries of an order's OrderPlaced", () => {
    // With an address that is refused too, so that nothing starts however the timeout is read.
    const result = run("services/orders/main.ts", { ORDERS_PENDING_TIMEOUT: "1s", ORDERS_LISTEN: "nowhere" });
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/ORDERS_PENDING_TIMEOUT="1s" is invalid: expected at least 2m, or 0 or off/);
  });

  it("refuse a statement_timeout with a unit in the database URL with one line naming the variable, without a stack", () => {
    const result = start("products", { PRODUCTS_DATABASE_URL: "postgres://postgres@127.0.0.1:1/products?statement_timeout=30s" });
    expect(result.status, result.stdout + result.stderr).toBe(2);
    // It logged "start-up failed" with the error's stack.
    expect(JSON.parse(result.stdout.trim())).toMatchObject({
      level: "fatal",
      code: "FAILED_PRECONDITION",
      msg: "start-up refused: statement_timeout=30s in PRODUCTS_DATABASE_URL: it takes a whole number of milliseconds (30000 for 30 s; 0: none)",
    });
  });

  it("name the process on each log line: INSTANCE, else the host name and the port it serves gRPC on", async () => {
    const refusing = { PRODUCTS_DATABASE_URL: "postgres://postgres@127.0.0.1:1/products?statement_timeout=30s" };
    const named = start("products", { ...refusing, INSTANCE: "products#2" });
    expect(named.status, named.stdout + named.stderr).toBe(2);
    expect(JSON.parse(named.stdout.trim())).toMatchObject({ service: "products", instance: "products#2", msg: expect.stringMatching(/^start-up refused: /) });
    const port = await freePort();
    const derived = start("products", { ...refusing, PRODUCTS_LISTEN: `127.0.0.1:${port}` });
    expect(JSON.parse(derived.stdout.trim())).toMatchObject({ service: "products", instance: `${hostname()}:${port}` });
    const bad = start("products", { ...refusing, INSTANCE: "products\t2" });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('INSTANCE="products\\t2" is invalid: it holds a control character (a line feed, a tab)');
    expect(bad.stdout).toBe("");
  });

  it("name the process in a refusal of their environment where INSTANCE or the address they would serve on says it", async () => {
    const port = await freePort();
    const refusal = (env: Record<string, string>) => {
      const result = run("services/products/main.ts", { GRPC_INSECURE: "1", GRPC_AUTH: "none", NATS_URL: "nats://127.0.0.1:notaport", ...env });
      expect(result.status).toBe(2);
      expect(result.stdout).toBe("");
      return result.stderr;
    };
    const bad = 'bad configuration:\n  NATS_URL="nats://127.0.0.1:notaport" is invalid: the port "notaport" is not a number';
    expect(refusal({ INSTANCE: "products#2", PRODUCTS_LISTEN: "nowhere" })).toMatch(/^products \(products#2\): bad configuration:\n {2}PRODUCTS_LISTEN="nowhere" is invalid/);
    expect(refusal({ PRODUCTS_LISTEN: `127.0.0.1:${port}` }).startsWith(`products (${hostname()}:${port}): ${bad}: expected nats://host:port`)).toBe(true);
    expect(refusal({ PRODUCTS_LISTEN: "127.0.0.1:0" }).startsWith(`products (${hostname()} pid `)).toBe(true);
    // Not known: INSTANCE is itself refused, or unset with the address refused.
    expect(refusal({ INSTANCE: "x".repeat(101), PRODUCTS_LISTEN: `127.0.0.1:${port}` })).toMatch(/^products: bad configuration:\n/);
    expect(refusal({ PRODUCTS_LISTEN: "nowhere" })).toMatch(/^products: bad configuration:\n {2}PRODUCTS_LISTEN="nowhere" is invalid/);
  });

  it("name DATABASE_URL in a refusal of the database URL when the service read that one", () => {
    const result = start("orders", {
      ORDERS_DATABASE_URL: "",
      DATABASE_URL: "postgres://postgres:secret@127.0.0.1:1/orders?statement_timeout=30s",
    });
    expect(result.status, result.stdout + result.stderr).toBe(2);
    expect(JSON.parse(result.stdout.trim())).toMatchObject({ msg: expect.stringMatching(/^start-up refused: statement_timeout=30s in DATABASE_URL: /) });
    expect(result.stdout).not.toContain("secret");
  });

  /** The product service's log lines (JSON, one a line) when it refuses to start on SQLite file `database`. */
  const refusedOn = (database: string, variable = "PRODUCTS_DATABASE_URL") => {
    const result = start("products", { PRODUCTS_DATABASE_URL: "", [variable]: database });
    expect(result.status, result.stdout + result.stderr).toBe(2);
    return result.stdout.trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
  };

  it("refuse a SQLite database another service owns with one line naming the owner, without a stack", async () => {
    const database = join(dir, "owned-by-orders.db");
    await (await openDatabase({ path: database, migrations: [], owner: "orders" })).close();
    // It logged "start-up failed" with the error's stack.
    expect(refusedOn(database)).toEqual([
      expect.objectContaining({
        level: "fatal",
        code: "FAILED_PRECONDITION",
        msg: "start-up refused: the database belongs to the orders service, not to products: each service needs a database of its own (set PRODUCTS_DATABASE_URL to a database of its own)",
      }),
    ]);
    // Read from the variable every service falls back to, the refusal says why setting the service's own is the fix.
    // It named PRODUCTS_DATABASE_URL and ORDERS_DATABASE_URL, which the platform knows nothing of, whatever the service.
    expect(refusedOn(database, "DATABASE_URL")).toEqual([
      expect.objectContaining({
        msg: "start-up refused: the database belongs to the orders service, not to products: each service needs a database of its own (set PRODUCTS_DATABASE_URL: DATABASE_URL, which it read, names one database for every service whose own variable is not set)",
      }),
    ]);
  });

  it("exit with code 1 when their own set-up fails after their host listens, where the host kept them up answering NOT_SERVING", () => {
    // Without the exit the process stayed up until spawnSync's timeout killed it (status null).
    const result = run("test/fixtures/failing-setup/main.ts", { FAILING_SETUP_DATABASE: join(dir, "failing-setup.db") });
    expect(result.status, result.stdout + result.stderr).toBe(1);
    expect(result.stdout).toContain('"msg":"start-up failed"');
  });

  it("refuse a SQLite database another process runs on with one line saying so, without a stack", () => {
    const database = join(dir, "held.db");
    const held = claimSqliteFile(database);
    try {
      // It logged "start-up failed" with the error's stack.
      expect(refusedOn(database)).toEqual([
        expect.objectContaining({ level: "fatal", code: "FAILED_PRECONDITION", msg: expect.stringMatching(/^start-up refused: the SQLite database .*held\.db is in use by another process /) }),
      ]);
      expect(readmeProse()).toContain("`start-up refused: the SQLite database ... is in use by another process`, without a stack");
    } finally {
      held.release();
    }
  });

  it.each([
    ["metrics", "PRODUCTS_METRICS_LISTEN", "the metrics address"],
    ["gRPC", "PRODUCTS_LISTEN", "the gRPC address"],
  ])("refuse a %s address another process holds before opening the database, with one line and nothing written", async (_, variable, named) => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const taken = `127.0.0.1:${(holder.address() as AddressInfo).port}`;
    const database = join(dir, `behind-taken-${variable}.db`);
    try {
      const result = start("products", {
        PRODUCTS_DATABASE_URL: database,
        PRODUCTS_METRICS_LISTEN: "127.0.0.1:0",
        [variable]: taken,
      });
      expect(result.status, result.stdout + result.stderr).toBe(2);
      expect(JSON.parse(result.stdout.trim())).toMatchObject({
        level: "fatal",
        code: "FAILED_PRECONDITION",
        msg: `start-up refused: ${named} ${taken} is in use by another process (listen EADDRINUSE: address already in use ${taken}): stop that process, or set ${variable} to another address`,
      });
      // As README "Metrics" quotes it, at npm start's address.
      if (named === "the metrics address") expect(readmeProse()).toContain(`\`start-up refused: the metrics address 127.0.0.1:9101 is in use by another process ...\``);
      // It had made and migrated the database (and its claim beside it) first.
      expect(existsSync(database)).toBe(false);
      expect(existsSync(`${database}-lock`)).toBe(false);
    } finally {
      holder.close();
    }
  });

  it("refuse an address a socket that does not listen holds, an outgoing connection's, say, saying so rather than that another process listens there", async () => {
    const port = await freePort();
    const taken = `127.0.0.1:${port}`;
    // Bound without SO_REUSEADDR, as the kernel binds a connection's own port (Node would set it, and share the port).
    const holder = spawn("python3", ["-c", `import socket, sys\ns = socket.socket()\ns.bind(("127.0.0.1", ${port}))\nprint("bound", flush=True)\nsys.stdin.read()`], { stdio: ["pipe", "pipe", "inherit"] });
    try {
      let said = "";
      holder.stdout!.on("data", (d) => (said += d));
      await expect.poll(() => said, { timeout: 10_000, interval: 50 }).toContain("bound");
      const result = start("products", { PRODUCTS_DATABASE_URL: join(dir, "behind-socket.db"), PRODUCTS_METRICS_LISTEN: taken });
      expect(result.status, result.stdout + result.stderr).toBe(2);
      // It said "is in use by another process ...: stop that process", of a process that listened nowhere.
      expect(JSON.parse(result.stdout.trim())).toMatchObject({
        level: "fatal",
        code: "FAILED_PRECONDITION",
        msg: `start-up refused: the metrics address ${taken} is taken (listen EADDRINUSE: address already in use ${taken}): a socket that does not listen holds it; set PRODUCTS_METRICS_LISTEN to another address, or start again once that socket has closed`,
      });
    } finally {
      holder.kill();
    }
  });

  it("print the order service's saga timeout with --help", () => {
    const result = run("services/orders/main.ts", {}, ["--help"]);
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/ORDERS_PENDING_TIMEOUT\s+how long an order may wait PENDING .* 0 or off: never \(default: 15m\)/);
  });

  it("say with --help every variable that turns tracing on or off", () => {
    // It named OTEL_EXPORTER_OTLP_ENDPOINT alone, while the traces' own endpoint turned tracing on too and OTEL_TRACES_EXPORTER=none off.
    const result = run("services/products/main.ts", {}, ["--help"]);
    expect(result.status).toBe(0);
    const help = result.stdout.replace(/\s+/g, " ");
    expect(help).toContain("when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set");
    expect(help).toContain("unless OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none");
  });

  it("print their variables with --help", () => {
    const result = run("services/products/main.ts", {}, ["--help"]);
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/PRODUCTS_LISTEN\s+host:port to serve gRPC on \(default: 127\.0\.0\.1:50051\)/);
    expect(result.stdout).toMatch(/INBOX_RETENTION\s+.*\(default: 7d\)/);
    // A service started alone with DATA_DIR set used .data's database and keys with nothing said.
    expect(result.stdout).toContain("DATA_DIR is not read: the .data/... defaults above are in the working directory.");
    expect(result.stdout).toMatch(/NATS_NKEY_SEED\s+file holding the service's NATS user nkey seed \(mode 0600, owned by the service's user or root; or 0440, root's, readable by a group of the service's; npm start makes DATA_DIR\/nats-credentials\/products\.nk\); empty: connect without credentials/);
  });
});

describe("a service's instance outside its log", () => {
  const dir = tempDirForSuite();
  const nats = useNatsServer({ monitor: true });
  const connectionNames = async (): Promise<string[]> => {
    const connz = (await (await fetch(`http://127.0.0.1:${nats().monitorPort}/connz`)).json()) as { connections?: Array<{ name?: string }> };
    return (connz.connections ?? []).map((c) => c.name ?? "").sort();
  };

  it("names its NATS connection and its spans' service.instance.id: INSTANCE, else the host name and the port it serves gRPC on", { timeout: 90_000 }, async () => {
    const receiver = await startTraceReceiver();
    const named = `127.0.0.1:${await freePort()}`;
    const derived = `127.0.0.1:${await freePort()}`;
    const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "", OTEL_SDK_DISABLED: "", OTEL_RESOURCE_ATTRIBUTES: "", OTEL_BSP_SCHEDULE_DELAY: "100" };
    const services = [
      startServiceProcess("products", { ...otel, INSTANCE: "products#2", PRODUCTS_LISTEN: named, PRODUCTS_DATABASE_URL: join(dir, "named.db"), NATS_URL: nats().url, LOG_LEVEL: "warn" }),
      startServiceProcess("products", { ...otel, INSTANCE: "", PRODUCTS_LISTEN: derived, PRODUCTS_DATABASE_URL: join(dir, "derived.db"), NATS_URL: nats().url, LOG_LEVEL: "warn" }),
    ];
    try {
      await Promise.all([waitForServing(named, 30_000), waitForServing(derived, 30_000)]);
      // As `nats server report connections` shows them: two instances of one service, told apart.
      expect(await connectionNames()).toEqual([`products (${hostname()}:${derived.split(":")[1]})`, "products (products#2)"].sort());
      // One call to each in turn: the server span of each comes from the instance called.
      const createSpans = () => receiver.spans().filter((s) => s.kind === "SERVER" && s.name.endsWith("/CreateProduct"));
      for (const [i, [address, instance]] of [[named, "products#2"], [derived, `${hostname()}:${derived.split(":")[1]}`]].entries()) {
        const catalog = createClient(ProductServiceService, { address });
        await catalog.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 2500 }, initialStock: 1 });
        catalog.close();
        await expect.poll(() => createSpans().length, { timeout: 20_000, message: instance }).toBe(i + 1);
        expect(createSpans()[i]).toMatchObject({ service: "products", instance });
      }
    } finally {
      for (const svc of services) await svc.stop();
      await receiver.close();
    }
  });
});

describe("a service waiting for its database", () => {
  it("holds its gRPC address meanwhile, answering health NOT_SERVING and calls UNAVAILABLE saying why, and frees it when stopped", { timeout: 60_000 }, async () => {
    const listen = `127.0.0.1:${await freePort()}`;
    // No PostgreSQL server there: the service waits for one, as it would for a server still starting or a long migration.
    const svc = startServiceProcess("products", { PRODUCTS_LISTEN: listen, PRODUCTS_DATABASE_URL: `postgres://postgres@127.0.0.1:${await freePort()}/products`, NATS_URL: "nats://127.0.0.1:1" });
    const client = createClient(ProductServiceService, { address: listen, maxAttempts: 1 });
    try {
      await expect.poll(() => svc.logs().some((line) => line.msg === "the database cannot be reached; waiting for it"), { timeout: 20_000 }).toBe(true);
      // It only checked the address before opening its database: another process could take it meanwhile.
      const taker = createServer();
      const taken = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
        taker.once("error", resolve);
        taker.listen(Number(listen.split(":")[1]), "127.0.0.1", () => resolve(undefined));
      });
      taker.close();
      expect(taken?.code).toBe("EADDRINUSE");
      expect(await checkHealth(listen)).toBe("NOT_SERVING");
      expect(await grpcError(client.getProduct({ id: "01890a5d-ac96-774b-bcce-b302099a8057" }))).toMatchObject({
        code: status.UNAVAILABLE,
        message: "products is starting: it opens and migrates its database; try again shortly",
      });
      expect(await svc.stop()).toBe(0);
      await expect(checkHealth(listen, "", 1_000)).rejects.toThrow(/ECONNREFUSED/);
    } finally {
      client.close();
      await svc.kill();
    }
  });

  /** SIGTERM ends `svc`'s wait for its database cleanly (exit 0) within `withinMs`. */
  const expectStoppedOnSigterm = async (svc: ServiceProcess, withinMs: number) => {
    const asked = performance.now();
    expect(await svc.stop()).toBe(0);
    expect(performance.now() - asked).toBeLessThan(withinMs);
    expect(svc.logs().map((line) => line.msg)).toContain("stopped before start-up was over");
  };

  it("waits for a host name that does not resolve (yet), saying so once with the name as given and the variable to correct, and stops at once on SIGTERM", { timeout: 60_000 }, async () => {
    const listen = `127.0.0.1:${await freePort()}`;
    // RFC 6761: .invalid never resolves. In docker compose or Kubernetes the database's name appears once its container or pod exists.
    const svc = startServiceProcess("products", { PRODUCTS_LISTEN: listen, PRODUCTS_DATABASE_URL: "postgres://postgres:secret@db.invalid:5432/products", NATS_URL: "nats://127.0.0.1:1" });
    try {
      await expect.poll(() => checkHealth(listen).catch(() => "no answer"), { timeout: 20_000, interval: 100 }).toBe("NOT_SERVING");
      // The wait is said at the first failed lookup, with the host as given; several more attempts go by (one a
      // second), and it is not said again.
      await expect.poll(() => svc.logs().filter((line) => line.level === "warn").length, { timeout: 20_000 }).toBeGreaterThan(0);
      await sleep(2_500);
      expect(svc.process.exitCode).toBeNull();
      const waiting = svc.logs().filter((line) => line.level === "warn");
      expect(waiting).toEqual([
        expect.objectContaining({
          database: "postgres://postgres:***@db.invalid:5432/products",
          host: "db.invalid",
          // EAI_AGAIN where no name server answers at all (a machine without a network).
          reason: expect.stringMatching(/^getaddrinfo (ENOTFOUND|EAI_AGAIN) db\.invalid$/),
          msg: "the database's host db.invalid does not resolve: waiting for it, not serving meanwhile, as for a server not up yet (a name that a container or pod brings resolves once it exists); if db.invalid is not the host meant, correct it in PRODUCTS_DATABASE_URL",
        }),
      ]);
      await expectStoppedOnSigterm(svc, 5_000);
    } finally {
      await svc.kill();
    }
  });

  it("exits at once on SIGTERM during an attempt to connect to a database server that does not answer, not at the attempt's connect timeout", { timeout: 60_000 }, async () => {
    // A server that takes connections and never speaks, as one behind a firewall that drops packets does not either: each attempt lasts 5 s.
    const attempts: Socket[] = [];
    const silent = createServer((socket) => attempts.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const svc = startServiceProcess("products", {
      PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`,
      PRODUCTS_DATABASE_URL: `postgres://postgres@127.0.0.1:${(silent.address() as AddressInfo).port}/products`,
      NATS_URL: "nats://127.0.0.1:1",
    });
    try {
      await expect.poll(() => attempts.length, { timeout: 20_000, interval: 50 }).toBeGreaterThan(0);
      await sleep(500);
      expect(svc.logs().map((line) => line.msg)).not.toContain("the database cannot be reached; waiting for it");
      await expectStoppedOnSigterm(svc, 1_000);
      expect(svc.logs().filter((line) => line.level !== "info")).toEqual([]);
    } finally {
      await svc.kill();
      for (const socket of attempts) socket.destroy();
      silent.close();
    }
  });

  it("exits on SIGTERM while a lookup of its database's host gets no answer, which would hold the process for as long as the resolver waits", { timeout: 60_000 }, async () => {
    // A name server that does not answer: each attempt gives up at the connect timeout (5 s), its lookup still pending.
    const svc = startServiceProcess("products", {
      PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`,
      PRODUCTS_DATABASE_URL: "postgres://postgres@db-silent.invalid:5432/products",
      NATS_URL: "nats://127.0.0.1:1",
      ...resolvingLater("db-silent.invalid", "/nonexistent/never", { silent: true }),
    });
    try {
      await expect.poll(() => svc.logs().find((line) => line.msg === "the database cannot be reached; waiting for it"), { timeout: 20_000 }).toMatchObject({ reason: "timeout expired" });
      // At once between attempts (here, most likely); during one, 2 s after start-up ended, the abandoned lookup still pending.
      await expectStoppedOnSigterm(svc, 3_500);
    } finally {
      await svc.kill();
    }
  });
});
