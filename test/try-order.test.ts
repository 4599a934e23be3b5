import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "./support/nats-server.js";
import { readmeProse } from "./support/readme.js";
import { type Shop, startShop } from "./support/shop.js";

/** Runs tools/try-order.ts as a user would; resolves with its exit code and output. */
function tryOrder(args: string[], env: NodeJS.ProcessEnv) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", "tools/try-order.ts", ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("tools/try-order.ts", () => {
  let shop: Shop;
  beforeAll(async () => {
    shop = await startShop({ secure: true });
  }, 60_000);
  afterAll(() => shop?.stop());

  it("finds the services where PRODUCTS_LISTEN and ORDERS_LISTEN put them, as npm start does, unless flags say otherwise; calls over TLS with tokens from DATA_DIR", { timeout: 90_000 }, async () => {
    const result = await tryOrder([], { DATA_DIR: shop.dir, PRODUCTS_LISTEN: shop.products.service.address, ORDERS_LISTEN: shop.orders.service.address });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/order \S+ is ORDER_STATE_CONFIRMED/);
    expect(result.stdout).toMatch(/now has stock 1$/m);

    // --products and --orders still win over the environment.
    const flags = await tryOrder(["--products", shop.products.service.address, "--orders", shop.orders.service.address], { DATA_DIR: shop.dir, PRODUCTS_LISTEN: "127.0.0.1:1", ORDERS_LISTEN: "127.0.0.1:1" });
    expect(flags.stderr).toBe("");
    expect(flags.stdout).toMatch(/order \S+ is ORDER_STATE_CONFIRMED/);
  });

  it("says an order the saga has not settled within --wait is still PENDING, exit 1, pointing at concord status", { timeout: 90_000 }, async () => {
    // The product service's reservations refused: its handler fails and retries, the order stays PENDING.
    const db = new Database(join(shop.dir, "products.db"));
    db.pragma("busy_timeout = 5000");
    db.exec("CREATE TRIGGER refuse_reservations BEFORE INSERT ON reservations BEGIN SELECT RAISE(ABORT, 'reservations refused'); END");
    try {
      const started = Date.now();
      const result = await tryOrder(["--wait", "1"], { DATA_DIR: shop.dir, PRODUCTS_LISTEN: shop.products.service.address, ORDERS_LISTEN: shop.orders.service.address });
      const placed = /placed order (\S+): ORDER_STATE_PENDING/.exec(result.stdout);
      expect(placed).not.toBeNull();
      expect(result.stdout).not.toMatch(/order \S+ is ORDER_STATE_/);
      expect(result.stdout).toMatch(/now has stock 3$/m);
      expect(result.stderr).toBe(`try-order: order ${placed![1]} is still ORDER_STATE_PENDING after 1 s: the saga has not settled it; \`npx concord status\` shows where its events wait (the outboxes, the consumers' lag and dead letters)\n`);
      expect(result.code).toBe(1);
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      db.exec("DROP TRIGGER refuse_reservations");
      db.close();
    }
    const bad = await tryOrder(["--wait", "soon"], { DATA_DIR: shop.dir });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('try-order: --wait takes seconds from 0 to 3600, written in digits (10, or 2.5), not "soon"');
  });

  it("ends with status 0 and no stack trace when what reads its output closes it (try-order | head -1)", { timeout: 90_000 }, async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "tools/try-order.ts"], {
      env: { ...process.env, DATA_DIR: shop.dir, PRODUCTS_LISTEN: shop.products.service.address, ORDERS_LISTEN: shop.orders.service.address },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    // The reader takes the first line and goes, as head -1 does.
    child.stdout.once("data", () => child.stdout.destroy());
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });

  it("asks both services first: one that does not answer is named with its address, and nothing is created", { timeout: 90_000 }, async () => {
    const products = async () => (await shop.products.client.listProducts({ pageSize: 500, pageToken: "" })).products.length;
    const before = await products();
    const closed = `127.0.0.1:${await freePort()}`;
    const noOrders = await tryOrder(["--products", shop.products.service.address, "--orders", closed], { DATA_DIR: shop.dir });
    expect(noOrders.code).toBe(1);
    expect(noOrders.stderr).toContain(`try-order: the order service at ${closed} is not serving (unreachable: connect ECONNREFUSED ${closed}); `);
    expect(noOrders.stderr).not.toMatch(/Last error|Resolution note/);
    expect(noOrders.stderr).not.toContain("product service");
    expect(noOrders.stdout).toBe("");
    const garbage = await tryOrder(["--products", "garbage", "--orders", shop.orders.service.address], { DATA_DIR: shop.dir });
    expect(garbage.code).toBe(1);
    expect(garbage.stderr).toContain("try-order: the product service at garbage is not serving (unreachable: ");
    // The product service's address given for the order service: its health answered, a product was created, and
    // the order's call failed UNIMPLEMENTED. Each is asked for its own service by name.
    const swapped = await tryOrder(["--products", shop.products.service.address, "--orders", shop.products.service.address], { DATA_DIR: shop.dir });
    expect(swapped.code).toBe(1);
    expect(swapped.stderr).toBe(
      `try-order: the order service at ${shop.products.service.address} is not there: the server there serves another service, not shop.orders.v1.OrderService; does --orders name another service's address?\ntry-order: nothing was created\n`,
    );
    expect(swapped.stdout).toBe("");
    expect(await products()).toBe(before);
  });

  it("names a service that takes the connection and never answers, and exits", { timeout: 90_000 }, async () => {
    // A process stopped or wedged: the kernel accepts the connection, nothing answers the TLS handshake.
    const accepted = new Set<Socket>();
    const silent = createServer((socket) => accepted.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const at = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
    try {
      const result = await tryOrder(["--products", shop.products.service.address, "--orders", at], { DATA_DIR: shop.dir });
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`try-order: the order service at ${at} is not serving (unreachable: no answer within 5 s); `);
      expect(result.stderr).toContain("try-order: nothing was created");
    } finally {
      for (const socket of accepted) socket.destroy();
      silent.close();
    }
  });

  it("says on one line which step failed, at which service, when the service is gone after its health was asked, without grpc-js's wording", { timeout: 90_000 }, async () => {
    // The product service stops between the health check and the first call: its one connection is passed on, and
    // nothing listens at its address after that.
    const [host, port] = shop.products.service.address.split(":");
    const passed = new Set<Socket>();
    const once = createServer((socket) => {
      once.close();
      const upstream = connect(Number(port), host);
      for (const s of [socket, upstream]) passed.add(s);
      socket.pipe(upstream).pipe(socket);
      socket.on("error", () => upstream.destroy());
      upstream.on("error", () => socket.destroy());
    });
    await new Promise<void>((resolve) => once.listen(0, "127.0.0.1", resolve));
    const at = `127.0.0.1:${(once.address() as AddressInfo).port}`;
    try {
      const result = await tryOrder(["--products", at, "--orders", shop.orders.service.address], { DATA_DIR: shop.dir });
      expect(result.code).toBe(1);
      // It printed "try-order: round_robin: No connection established. Last error: No connection established. Last error: Error: connect ECONNREFUSED ... Resolution note: ".
      expect(result.stderr).toBe(
        `try-order: creating the product failed: the product service at ${at} cannot be reached (connect ECONNREFUSED ${at}); has it stopped? \`npx concord status\` shows what runs\n`,
      );
      expect(result.stdout).toBe("");
      expect(readmeProse()).toContain("`try-order: creating the product failed: the product service at 127.0.0.1:50051 cannot be reached (connect ECONNREFUSED 127.0.0.1:50051); has it stopped? ...`");
    } finally {
      for (const socket of passed) socket.destroy();
    }
  });

  it("says where the TLS CA should be, and who makes it, when DATA_DIR has none", async () => {
    const empty = mkdtempSync(join(tmpdir(), "concord-try-order-"));
    try {
      const result = await tryOrder([], { DATA_DIR: empty, GRPC_TLS_CA: "" });
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(`try-order: no TLS CA certificate at ${join(empty, "tls", "ca.pem")}: \`npm start\` makes one in its DATA_DIR when it first starts; start it, or set DATA_DIR to the directory it uses\n`);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it("says so in --help, and refuses bad usage in one line naming --help (a flag without an address, a mistyped one naming the flag it likely meant, a bad --wait), exit 2", async () => {
    const help = await tryOrder(["--help"], {});
    expect(help.stdout).toContain("$PRODUCTS_LISTEN");
    expect(help.stdout).toContain("$ORDERS_LISTEN");
    // It named DATA_DIR's CA and key alone, while GRPC_TLS_CA and GRPC_AUTH_KEY_FILE, when set, are what it uses.
    for (const variable of ["GRPC_TLS_CA", "GRPC_AUTH_KEY_FILE", "GRPC_AUTH_MAX_TOKEN_TTL", "GRPC_INSECURE=1", "GRPC_AUTH=none"]) expect(help.stdout).toContain(variable);
    for (const [args, says] of [
      [["--orders"], "Option '--orders <value>' argument missing"],
      [["--orders="], "--products and --orders need HOST:PORT"],
      [["--product", "127.0.0.1:1"], "unknown option --product; did you mean --products?"],
      [["--wait", "soon"], '--wait takes seconds from 0 to 3600, written in digits (10, or 2.5), not "soon"'],
      // Number forms the help does not name: 1e3 was read as 1000 s, 0x10 as 16 s.
      [["--wait", "1e3"], '--wait takes seconds from 0 to 3600, written in digits (10, or 2.5), not "1e3"'],
      [["--wait", "0x10"], '--wait takes seconds from 0 to 3600, written in digits (10, or 2.5), not "0x10"'],
      [["--wait", "3601"], '--wait takes seconds from 0 to 3600, written in digits (10, or 2.5), not "3601"'],
    ] as const) {
      const run = await tryOrder([...args], {});
      expect(run.code, args.join(" ")).toBe(2);
      expect(run.stderr).toBe(`try-order: ${says} (\`npx tsx tools/try-order.ts --help\` shows the usage)\n`);
    }
    // GRPC_INSECURE=true was taken for TLS, and the CA looked for, where the services refuse it.
    const insecure = await tryOrder(["--products", "127.0.0.1:1", "--orders", "127.0.0.1:2"], { GRPC_INSECURE: "true" });
    expect(insecure.code).toBe(2);
    expect(insecure.stderr).toContain('try-order: bad configuration:\n  GRPC_INSECURE="true" is invalid: expected one of 0, 1');
  });
});
