/**
 * README "Backups and restores", on the default setup: the order service's
 * SQLite file backed up while it runs (`concord database backup`), restored
 * into the stopped service (`concord database restore`), and the service
 * started again; then what the README says a restore means for the outbox,
 * the inbox and the durable consumers' positions in JetStream.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderUnknown } from "../gen/ts/shop/orders/v1/order_events_pb.js";
import { OrderServiceService, OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { Code, type StatusError } from "../platform/errors/index.js";
import { inboxMigrations, outboxMigrations } from "../platform/events/index.js";
import { createClient, waitForServing } from "../platform/grpc/index.js";
import { claimSqliteFile, openDatabase } from "../platform/sql/index.js";
import { runConcord } from "./support/concord.js";
import { readmeBlock } from "./support/readme.js";
import { serviceConsumers } from "../tools/concord/database-backup.js";
import { repoRoot } from "../tools/repo-root.js";
import { freePort, useNatsServer } from "./support/nats-server.js";
import { startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { address } from "./support/shop.js";
import { tempDirForSuite } from "./support/temp-dir.js";

/** A TCP proxy to NATS on a port of its own that can be cut (connections dropped, new ones refused) and opened again. */
async function cuttableProxy(natsPort: number): Promise<{ url: string; cut(): Promise<void>; reopen(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(natsPort, "127.0.0.1");
    sockets.add(client).add(upstream);
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  const port = await freePort();
  const listen = () => new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  await listen();
  return {
    url: `nats://127.0.0.1:${port}`,
    cut: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
    reopen: listen,
  };
}

const dir = tempDirForSuite("concord-backup-restore-");
const ordersDb = join(dir, "orders.db");
const backupFile = join(dir, "backups", "orders.db");

/** What JSON.parse says of `text`, which Node words its own way. */
function jsonProblem(text: string): string {
  try {
    JSON.parse(text);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`${text} is JSON`);
}

/** A service's database, as the service makes it at its first start (its tables, and whose it is). */
async function serviceDatabase(path: string, owner: string): Promise<void> {
  await (await openDatabase({ path, owner, migrations: [...outboxMigrations, ...inboxMigrations] })).close();
}

/** One query on a SQLite file, on a connection of its own (the service goes on meanwhile). */
function sqlite<T>(path: string, sql: string, ...params: unknown[]): T[] {
  const db = new BetterSqlite3(path, { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}

describe("backing up a running service's SQLite database and restoring it", () => {
  const nats = useNatsServer();
  let nc: NatsConnection;
  let products: ServiceProcess | undefined;
  let orders: ServiceProcess | undefined;
  let productsAddress: string;
  let ordersAddress: string;
  const ordersEnv = (natsUrl: string) => ({ ORDERS_LISTEN: ordersAddress, ORDERS_DATABASE_URL: ordersDb, PRODUCTS_ADDRESS: productsAddress, NATS_URL: natsUrl, LOG_LEVEL: "warn" });
  /** `npx concord ...` as an operator runs it: the service's database found as the service finds it. */
  const concord = (...args: string[]) => runConcord({ DATA_DIR: dir, NATS_URL: nats().url, ORDERS_DATABASE_URL: ordersDb, NATS_NKEY_SEED: undefined }, args);

  beforeAll(async () => {
    nc = await connect({ servers: nats().url });
    productsAddress = `127.0.0.1:${await freePort()}`;
    ordersAddress = `127.0.0.1:${await freePort()}`;
    products = startServiceProcess("products", { PRODUCTS_LISTEN: productsAddress, PRODUCTS_DATABASE_URL: join(dir, "products.db"), NATS_URL: nats().url, LOG_LEVEL: "warn" });
    await waitForServing(productsAddress, 30_000);
  });
  afterAll(async () => {
    await orders?.stop();
    await products?.stop();
    await nc?.close();
  });

  it("publishes what the backup's outbox held once (the stream drops the copy), leaves what was consumed after it to `consumer redeliver`, and cannot bring back what was committed after it, though the stock held for it is given back", async () => {
    const jsm = await nc.jetstreamManager();
    const proxy = await cuttableProxy(nats().port);
    orders = startServiceProcess("orders", ordersEnv(proxy.url));
    await waitForServing(ordersAddress, 30_000);
    const catalog = createClient(ProductServiceService, { address: productsAddress });
    let client = createClient(OrderServiceService, { address: ordersAddress, defaultTimeoutMs: 5_000 });
    const { product } = await catalog.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1999 }, initialStock: 10 });
    const placeOrder = async () => (await client.createOrder({ customerId: "c-backup", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address })).order!.id;
    const stateOf = async (id: string) => (await client.getOrder({ id })).order!.state;
    const stock = async () => (await catalog.getProduct({ id: product!.id })).product!.stock;
    const streamMessages = async (stream: string) => (await jsm.streams.info(stream)).state.messages;
    const outboxDepth = (path: string) => sqlite<{ n: number }>(path, "SELECT count(*) AS n FROM event_outbox")[0].n;
    const settled = async (durable: string) => {
      const info = await jsm.consumers.info("SHOP_PRODUCTS", durable);
      return info.num_pending === 0 && info.num_ack_pending === 0;
    };

    // Before the backup: order A goes through the saga.
    const a = await placeOrder();
    await expect.poll(() => stateOf(a), { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    await expect.poll(() => outboxDepth(ordersDb), { timeout: 10_000 }).toBe(0);

    // The order service loses NATS: order B's OrderPlaced waits in its outbox while the backup is taken.
    await proxy.cut();
    const b = await placeOrder();
    expect(outboxDepth(ordersDb)).toBe(1);
    // The README's commands, with a file of this test's.
    const [backupCommand, restoreCommand] = readmeBlock("A service's database while it runs:");
    expect(backupCommand.argv.slice(0, 5)).toEqual(["npx", "concord", "database", "backup", "orders"]);
    expect(restoreCommand.argv.slice(0, 5)).toEqual(["npx", "concord", "database", "restore", "orders"]);
    const backup = await concord(...backupCommand.argv.slice(2, 5), backupFile);
    expect(backup.status, backup.stderr).toBe(0);
    const record = JSON.parse(backup.stdout) as { positions: Array<{ durable: string; ackFloor: number }> };
    const floor = record.positions.find((p) => p.durable === "orders-stock-reserved")!.ackFloor;
    expect(floor).toBeGreaterThan(0);
    expect(outboxDepth(backupFile)).toBe(1);

    // After the backup: B is published and confirmed, C is placed and confirmed.
    await proxy.reopen();
    await expect.poll(() => stateOf(b), { timeout: 30_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    const c = await placeOrder();
    await expect.poll(() => stateOf(c), { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    expect(await stock()).toBe(7);
    await expect.poll(() => outboxDepth(ordersDb), { timeout: 10_000 }).toBe(0);
    const ordersEvents = await streamMessages("SHOP_ORDERS");

    // A restore waits for the service to stop; then puts the backup in place and says what to redeliver.
    const refused = await concord(...restoreCommand.argv.slice(2, 5), backupFile);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("is in use by another process");
    expect(await orders.stop()).toBe(0);
    const restore = await concord(...restoreCommand.argv.slice(2, 5), backupFile);
    expect(restore.status, restore.stderr).toBe(0);
    expect(restore.stderr).toContain(`restored as ${ordersDb}; the database that was there is now ${ordersDb}.before-restore-`);
    // One command per consumer of the service, from one past its floor at the backup.
    const redeliveries = restore.stdout.trim().split("\n");
    expect(redeliveries).toEqual(record.positions.map((p) => `npx concord consumer redeliver ${p.durable} --from ${p.ackFloor + 1}`));
    expect(redeliveries).toContain(`npx concord consumer redeliver orders-stock-reserved --from ${floor + 1}`);
    // As the README shows them for this very sequence of events.
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const shown = readme.slice(readme.indexOf("to run once the service runs again:")).split("```")[1].trim().split("\n");
    expect(redeliveries).toEqual(shown);

    // At debug, it logs each event its inbox drops.
    orders = startServiceProcess("orders", { ...ordersEnv(nats().url), LOG_LEVEL: "debug" });
    await waitForServing(ordersAddress, 30_000);
    client.close();
    client = createClient(OrderServiceService, { address: ordersAddress, defaultTimeoutMs: 5_000 });
    // B's OrderPlaced, still in the restored outbox, goes out again: within the duplicate window the stream drops it.
    await expect.poll(() => outboxDepth(ordersDb), { timeout: 15_000 }).toBe(0);
    expect(await streamMessages("SHOP_ORDERS")).toBe(ordersEvents);
    // B's StockReserved was consumed after the backup: its consumer's position in JetStream is past it, so nothing
    // brings it back by itself, and B stays PENDING.
    await expect.poll(() => settled("orders-stock-reserved"), { timeout: 15_000 }).toBe(true);
    expect(await stateOf(b)).toBe(OrderState.ORDER_STATE_PENDING);
    // C was committed after the backup: the order service no longer has it.
    const gone = await client.getOrder({ id: c }).catch((err: StatusError) => err);
    expect((gone as StatusError).code).toBe(Code.NOT_FOUND);

    // The commands the restore printed deliver the events again.
    const inboxRows = () => sqlite<{ n: number }>(ordersDb, "SELECT count(*) AS n FROM event_inbox WHERE consumer = 'orders-stock-reserved'")[0].n;
    const handledBefore = inboxRows();
    for (const line of redeliveries) {
      const redeliver = await concord(...line.split(" ").slice(2));
      expect(redeliver.status, `${line}: ${redeliver.stderr}`).toBe(0);
    }
    await expect.poll(() => stateOf(b), { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    // C's StockReserved is about an order the service no longer has: it answers OrderUnknown, and the product service
    // gives back the unit it held for C.
    await expect.poll(stock, { timeout: 15_000 }).toBe(8);
    const unknown = await jsm.streams.getMessage("SHOP_ORDERS", { last_by_subj: `shop.orders.v1.order.${c}.unknown` });
    expect(OrderUnknown.decode(unknown.data)).toEqual({ orderId: c, linesVersion: 1 });
    expect(inboxRows()).toBe(handledBefore + 2);

    // Redelivering from earlier than the backup takes no effect twice: the restored inbox drops A's StockReserved.
    await expect.poll(() => settled("orders-stock-reserved"), { timeout: 15_000 }).toBe(true);
    const early = await concord("consumer", "redeliver", "orders-stock-reserved", "--from", "1", "--to", String(floor));
    expect(early.status, early.stderr).toBe(0);
    const earlyIds = early.stdout.trim().split("\n").map((line) => (JSON.parse(line) as { id: string }).id);
    expect(earlyIds).toHaveLength(1);
    // The service's log reaches this process through a pipe: waited for, not read at once.
    const dropped = () => orders!.logs().filter((l) => l.msg === "event already processed; acked without running the handler" && l.consumer === "orders-stock-reserved").map((l) => l.eventId);
    await expect.poll(dropped, { timeout: 15_000 }).toEqual(earlyIds);
    await expect.poll(() => settled("orders-stock-reserved"), { timeout: 15_000 }).toBe(true);
    expect(inboxRows()).toBe(handledBefore + 2);
    expect(await stateOf(a)).toBe(OrderState.ORDER_STATE_CONFIRMED);
    expect(await stock()).toBe(8);
    expect((await concord("dlq", "list")).stdout).toBe("");

    catalog.close();
    client.close();
  }, 180_000);
});

describe("npx concord database", () => {
  const run = (...args: string[]) => runConcord({ DATA_DIR: dir, ORDERS_DATABASE_URL: undefined, DATABASE_URL: undefined }, args);

  it("says what is wrong with its arguments (exit status 2), takes a PostgreSQL database for pg_dump, and refuses a database that is not the service's (another's, or none's)", async () => {
    const group = await run("database", "--help");
    expect(group.status).toBe(0);
    expect(group.stdout).toContain("database backup SERVICE FILE");
    expect((await run("database", "backup", "--help")).stdout).toContain("VACUUM INTO");
    for (const args of [["database", "backup"], ["database", "backup", "payments", "x.db"], ["database", "restore", "orders"], ["database", "backup", "orders", "x.db", "y.db"]]) {
      const out = await run(...args);
      expect(out.status, args.join(" ")).toBe(2);
      expect(out.stderr).toMatch(/^concord database (backup|restore): [^\n]+ \(`npx concord database \1 --help` shows the usage\)\n$/);
    }
    const postgres = await runConcord({ DATA_DIR: dir, ORDERS_DATABASE_URL: "postgres://postgres@127.0.0.1:1/orders" }, ["database", "backup", "orders", join(dir, "pg.db")]);
    expect([postgres.status, postgres.stderr]).toEqual([1, expect.stringMatching(/^concord database backup: cannot connect to postgres:\/\/postgres@127\.0\.0\.1:1\/orders: .* \(nothing was written\)\n$/)]);
    // Unset, as --help says: the database of the `npm start -- --postgres` running on DATA_DIR (its server's postmaster.pid
    // naming a live process and its port) comes before DATA_DIR/orders.db, and is dumped as PostgreSQL's.
    const startDir = join(dir, "postgres-start");
    mkdirSync(join(startDir, "postgres"), { recursive: true });
    writeFileSync(join(startDir, "orders.db"), "");
    writeFileSync(join(startDir, "postgres", "postmaster.pid"), `${process.pid}\n${join(startDir, "postgres")}\n1733400000\n54399\n`);
    const started = await runConcord({ DATA_DIR: startDir, ORDERS_DATABASE_URL: undefined, DATABASE_URL: undefined }, ["database", "backup", "orders", join(dir, "pg-start.db")]);
    expect(started.status).toBe(1);
    expect(started.stderr).toMatch(/^concord database backup: cannot connect to postgres:\/\/postgres@127\.0\.0\.1:54399\/orders: .* \(nothing was written\)\n$/);
    expect((await run("database", "backup", "--help")).stdout).toContain("else the database\n                      `npm start -- --postgres` gives it while that start's\n                      PostgreSQL server runs");
    // DATABASE_URL, which npm start does not give its services, is not taken either, and the note says so.
    const shared = await runConcord({ DATA_DIR: startDir, ORDERS_DATABASE_URL: undefined, DATABASE_URL: join(dir, "elsewhere.db") }, ["database", "backup", "orders", join(dir, "pg-start.db")]);
    expect(shared.status).toBe(1);
    expect(shared.stderr).toContain("concord database backup: note: DATABASE_URL is not used, as `npm start` does not use it (the two services need a database each): set ORDERS_DATABASE_URL, or name the database with --database, for one of your own\n");
    expect(shared.stderr).toContain("cannot connect to postgres://postgres@127.0.0.1:54399/orders");
    const missing = await run("database", "backup", "orders", join(dir, "none.db"), "--database", join(dir, "missing.db"), "--nats", "nats://127.0.0.1:1");
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain(`${join(dir, "missing.db")} does not exist`);
    // The other service's database, named by mistake, and one that is no service's: a backup the restore would refuse is no backup.
    const products = join(dir, "products-by-mistake.db");
    await serviceDatabase(products, "products");
    const unowned = join(dir, "unowned.db");
    await serviceDatabase(unowned, "orders");
    const emptied = new BetterSqlite3(unowned);
    emptied.exec("DELETE FROM schema_owner");
    emptied.close();
    const plain = join(dir, "plain.db");
    new BetterSqlite3(plain).exec("CREATE TABLE t (n INTEGER)").close();
    for (const [database, problem] of [
      [products, "it is the products service's database, not the orders service's"],
      [unowned, "its schema_owner names no service, so it is no service's database"],
      [plain, "it has no schema_migrations table, so it is no service's database"],
    ]) {
      const target = join(dir, "mistaken", "orders.db");
      const mistaken = await run("database", "backup", "orders", target, "--database", database, "--nats", "nats://127.0.0.1:1");
      expect(mistaken.status, database).toBe(2);
      expect(mistaken.stderr).toContain(`${database} cannot be backed up as the orders service's database: ${problem}; name the orders service's with --database (nothing was written)`);
      expect(existsSync(join(dir, "mistaken"))).toBe(false);
    }
  }, 60_000);

  /** A backup of a new order service database `name`.db, taken while NATS cannot be reached (so without consumers' positions). */
  const backupWithoutNats = async (name: string) => {
    const database = join(dir, `${name}.db`);
    await serviceDatabase(database, "orders");
    const backup = join(dir, name, "orders.db");
    const taken = await run("database", "backup", "orders", backup, "--database", database, "--nats", "nats://127.0.0.1:1");
    expect(taken.status, taken.stderr).toBe(0);
    return { database, backup, taken };
  };

  it("warns of the service's consumers its backup's record holds no floor for, naming them and what to run", async () => {
    const { database, backup } = await backupWithoutNats("partial-record");
    // As a backup taken before the contracts gave the service its other consumers would have it.
    writeFileSync(`${backup}.json`, JSON.stringify({ service: "orders", database, takenAt: "2026-12-05T10:00:00.000Z", positions: [{ stream: "SHOP_PRODUCTS", durable: "orders-stock-reserved", ackFloor: 3 }] }));
    const restore = await run("database", "restore", "orders", backup, "--database", join(dir, "partial-record-restored.db"));
    expect(restore.status, restore.stderr).toBe(0);
    expect(restore.stdout.trim().split("\n")).toEqual(["npx concord consumer redeliver orders-stock-reserved --from 4"]);
    const missing = serviceConsumers("orders").map((c) => c.durable).filter((d) => d !== "orders-stock-reserved");
    expect(missing.length).toBeGreaterThan(0);
    expect(restore.stderr).toContain(`warning: ${backup}.json holds no floor for ${missing.length} of the orders service's consumers (${missing.join(", ")})`);
    expect(restore.stderr).toContain("`npx concord consumer redeliver DURABLE --from SEQ` with SEQ at or below its acknowledgement floor before the backup");
  }, 60_000);

  it("says, restoring a backup taken without its consumers' positions (NATS away), to deliver their events again from a sequence on, as redeliver's --from alone does", async () => {
    const { backup, taken } = await backupWithoutNats("no-positions");
    // It said "orders's database".
    expect(taken.stderr).toContain(`concord database backup: the orders service's database backed up to ${backup} (`);
    expect(taken.stderr).toContain("without its consumers' positions");
    const restore = await run("database", "restore", "orders", backup, "--database", join(dir, "no-positions-restored.db"));
    expect(restore.status, restore.stderr).toBe(0);
    expect(restore.stdout).toBe("");
    expect(restore.stderr).toContain("no consumer positions: after starting orders, deliver again what its consumers handled after the backup with `npx concord consumer redeliver DURABLE --from SEQ` (up to its last delivery)");
    expect(restore.stderr).not.toContain("--to");
  }, 60_000);

  it("refuses, making nothing, to restore into a DATA_DIR that does not exist (no start ran with it), and says so of a backup from there", async () => {
    const source = join(dir, "elsewhere-source.db");
    await serviceDatabase(source, "orders");
    const backup = join(dir, "elsewhere", "orders.db");
    expect((await run("database", "backup", "orders", backup, "--database", source, "--nats", "nats://127.0.0.1:1")).status).toBe(0);
    // DATA_DIR left out of the restore's command, say, where npm start was given one: the restore made it (.data) and
    // a database in it that no start would open, and said it had restored the backup.
    const missing = join(dir, "no-start-ran-here");
    const env = { DATA_DIR: missing, ORDERS_DATABASE_URL: undefined, DATABASE_URL: undefined };
    const restore = await runConcord(env, ["database", "restore", "orders", backup]);
    expect(restore.status).toBe(2);
    expect(restore.stderr).toBe(
      `concord database restore: DATA_DIR ${missing} does not exist, so no \`npm start\` has run with it: set DATA_DIR as \`npm start\` was given it, or name the service's database with --database; nothing was restored\n`,
    );
    expect(existsSync(missing)).toBe(false);
    const backupFromThere = await runConcord(env, ["database", "backup", "orders", join(dir, "from-nowhere.db"), "--nats", "nats://127.0.0.1:1"]);
    expect(backupFromThere.status).toBe(2);
    expect(backupFromThere.stderr).toContain(`${join(missing, "orders.db")} does not exist; DATA_DIR ${missing} does not exist, so no \`npm start\` has run with it: set DATA_DIR as`);
    // Named, a database not made yet is restored, its folder made, as README says.
    const named = join(missing, "orders.db");
    expect((await runConcord(env, ["database", "restore", "orders", backup, "--database", named])).status).toBe(0);
    expect(readFileSync(named).equals(readFileSync(backup))).toBe(true);
  }, 60_000);

  it("refuses a --nats or NATS_URL that is not a NATS URL before taking anything (exit 2, one line), as the services refuse NATS_URL", async () => {
    const source = join(dir, "bad-nats-source.db");
    await serviceDatabase(source, "orders");
    // The backup was taken, without its consumers' positions, once connecting had failed on "Invalid URL".
    for (const [env, args, said] of [
      [{}, ["--nats", "nats://127.0.0.1:notaport"], '--nats "nats://127.0.0.1:notaport" is invalid: the port "notaport" is not a number: expected nats://host:port'],
      [{ NATS_URL: "nats://127.0.0.1:99999" }, [], 'NATS_URL="nats://127.0.0.1:99999" is invalid: the port 99999 is not one from 1 to 65535'],
    ] as const) {
      const backup = join(dir, `bad-nats-${args.length}.db`);
      const out = await runConcord({ DATA_DIR: dir, ORDERS_DATABASE_URL: undefined, DATABASE_URL: undefined, ...env }, ["database", "backup", "orders", backup, "--database", source, ...args]);
      expect(out.status, out.stderr).toBe(2);
      expect(out.stderr).toBe(`concord database backup: ${said} (\`npx concord database backup --help\` shows the usage)\n`);
      expect(existsSync(backup)).toBe(false);
      expect(existsSync(`${backup}.json`)).toBe(false);
    }
  }, 60_000);

  it("says in one line, changing nothing, that a backup is the other service's, and that a database not migrated in full is to be backed up once its service has started", async () => {
    const products = join(dir, "one-line-products.db");
    await serviceDatabase(products, "products");
    const backup = join(dir, "one-line", "products.db");
    expect((await run("database", "backup", "products", backup, "--database", products, "--nats", "nats://127.0.0.1:1")).status).toBe(0);
    const target = join(dir, "one-line-orders.db");
    await serviceDatabase(target, "orders");
    const before = readFileSync(target);
    const other = await run("database", "restore", "orders", backup, "--database", target);
    expect(other.status).toBe(2);
    expect(other.stderr).toBe(`concord database restore: ${backup} is a backup of products (${backup}.json), not of orders; nothing was restored (restore it with \`npx concord database restore products FILE\`)\n`);
    expect(readFileSync(target).equals(before)).toBe(true);
    // As the order service's first start leaves its database between two migrations.
    const starting = join(dir, "starting.db");
    const db = new BetterSqlite3(starting);
    db.exec("CREATE TABLE schema_migrations (id TEXT PRIMARY KEY, applied_at INTEGER NOT NULL); CREATE TABLE schema_owner (service TEXT PRIMARY KEY); INSERT INTO schema_owner VALUES ('orders')");
    db.close();
    const early = await run("database", "backup", "orders", join(dir, "starting-backup.db"), "--database", starting, "--nats", "nats://127.0.0.1:1");
    expect(early.status).toBe(1);
    expect(early.stderr).toBe(
      `concord database backup: ${starting} cannot be backed up as the orders service's database: it is the orders service's database, but its migrations have not all run: it has no event_outbox table yet, as while the service first starts; back it up once the orders service has started on it (nothing was written)\n`,
    );
  }, 60_000);

  it("refuses, in one line and with exit status 2, writing nothing, a backup, a record or a file named that is not what it should be; a database in use fails, exit 1", async () => {
    const { database, backup } = await backupWithoutNats("given");
    const record = readFileSync(`${backup}.json`, "utf8");
    const target = join(dir, "given-target.db");
    await serviceDatabase(target, "orders");
    const before = readFileSync(target);
    const beside = () => readdirSync(dir).filter((f) => f.startsWith("given-target.db"));
    const besideBefore = beside();
    const restore = (file: string) => run("database", "restore", "orders", file, "--database", target);
    const refusedAs = async (file: string, said: string) => {
      const out = await restore(file);
      expect([out.status, out.stdout, out.stderr], file).toEqual([2, "", `concord database restore: ${said}\n`]);
    };
    // Each of these exited 1, as a copy that failed does.
    writeFileSync(`${backup}.json`, JSON.stringify({ service: "orders", positions: [{ stream: "SHOP_PRODUCTS", durable: "orders-stock-reserved", ackFloor: -1 }] }));
    await refusedAs(backup, `${backup}.json is no backup's record: {"stream":"SHOP_PRODUCTS","durable":"orders-stock-reserved","ackFloor":-1} has no whole number for its ackFloor; nothing was restored`);
    writeFileSync(`${backup}.json`, "{ cut short");
    await refusedAs(backup, `${backup}.json cannot be read as a backup's record: ${jsonProblem("{ cut short")}; nothing was restored`);
    writeFileSync(`${backup}.json`, record);
    const text = join(dir, "given-text.db");
    writeFileSync(text, "not a database\n");
    await refusedAs(text, `${text} cannot be restored: it cannot be read as a SQLite database: file is not a database`);
    await refusedAs(join(dir, "given-none.db"), `${join(dir, "given-none.db")} does not exist`);
    await refusedAs(target, `${target} is the service's database itself, not a backup of it: nothing to restore`);
    expect(readFileSync(target).equals(before)).toBe(true);
    // A backup to a file SQLite keeps beside a database: refused before anything is copied.
    const journal = `${target}-journal`;
    const taken = await run("database", "backup", "orders", journal, "--database", database, "--nats", "nats://127.0.0.1:1");
    expect([taken.status, taken.stderr.split("\n").filter((line) => line !== "")]).toEqual([2, [expect.stringMatching(/^concord database backup: .*-journal is a file SQLite or the service keeps beside the database /)]]);
    expect(beside()).toEqual(besideBefore);
    // What is no mistake of the command's: the database in use (claimed by a service, here this process).
    const claim = claimSqliteFile(target);
    try {
      const busy = await restore(backup);
      expect(busy.status).toBe(1);
      expect(busy.stderr).toContain("is in use by another process");
    } finally {
      claim.release();
    }
  }, 60_000);

  it("never replaces a backup: a second to its file, or to where its record is, is refused, saying how to replace it", async () => {
    const database = join(dir, "twice.db");
    await serviceDatabase(database, "orders");
    const target = join(dir, "twice", "orders.db");
    const first = await run("database", "backup", "orders", target, "--database", database, "--nats", "nats://127.0.0.1:1");
    expect(first.status, first.stderr).toBe(0);
    const [backup, record] = [readFileSync(target), readFileSync(`${target}.json`)];
    const second = await run("database", "backup", "orders", target, "--database", database, "--nats", "nats://127.0.0.1:1");
    expect(second.status).toBe(2);
    expect(second.stderr).toContain(`${target} exists: a backup goes to a new file, and is never replaced; name another FILE, or, to replace that backup, remove ${target} and ${target}.json first`);
    // Nor when only its record is left: that is another backup's, not to be taken for this one's.
    rmSync(target);
    const overRecord = await run("database", "backup", "orders", target, "--database", database, "--nats", "nats://127.0.0.1:1");
    expect(overRecord.status).toBe(2);
    expect(overRecord.stderr).toContain(`${target}.json exists: a backup goes to a new file, and is never replaced;`);
    expect(readdirSync(join(dir, "twice"))).toEqual(["orders.db.json"]);
    expect(readFileSync(`${target}.json`).equals(record)).toBe(true);
    expect(backup.length).toBeGreaterThan(0);
  }, 60_000);

  it("keeps no backup whose record it could not write, and says what failed where", async () => {
    const database = join(dir, "recordless.db");
    await serviceDatabase(database, "orders");
    const target = join(dir, "recordless", "backup.db");
    mkdirSync(`${target}.json.partial`, { recursive: true });
    const noRecord = await run("database", "backup", "orders", target, "--database", database, "--nats", "nats://127.0.0.1:1");
    expect(noRecord.status).toBe(1);
    // Another backup's record being written there, or one cut short: neither taken over nor removed.
    expect(noRecord.stderr).toContain(`writing the backup's record ${target}.json failed: ${target}.json.partial exists: another backup's record to ${target}.json is being written, or one was cut short`);
    expect(noRecord.stderr).toContain(`the backup ${target} was deleted with it`);
    expect(readdirSync(join(dir, "recordless"))).toEqual(["backup.db.json.partial"]);
    // A folder it may not make: said as the backup failing, with nothing left behind.
    const unwritable = await run("database", "backup", "orders", "/proc/concord-backup.db", "--database", database, "--nats", "nats://127.0.0.1:1");
    expect(unwritable.status).toBe(1);
    expect(unwritable.stderr).toContain(`backing up ${database} to /proc/concord-backup.db failed: `);
  }, 60_000);
});
