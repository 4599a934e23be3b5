import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { inboxMigrations, outboxMigrations } from "../../platform/events/index.js";
import { openDatabase } from "../../platform/sql/index.js";
import { runConcord } from "../../test/support/concord.js";
import { freePort } from "../../test/support/nats-server.js";
import { usePostgresServer } from "../../test/support/postgres.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { debianPostgresRoot } from "../postgres/find-postgres.mjs";
import { postgresProgram } from "./postgres-backup.js";

const dir = tempDirForSuite("concord-postgres-backup-");
const server = usePostgresServer();

/** A database on the suite's server migrated as `owner`'s (its outbox and inbox, and a table t), holding `rows` in t. */
async function serviceDatabase(name: string, owner: string, rows: number[]): Promise<string> {
  const url = await server().createDatabase(name);
  const db = await openDatabase({ path: url, owner, migrations: [...outboxMigrations, ...inboxMigrations, { id: "zz_t", sql: "CREATE TABLE t (n INTEGER)" }] });
  try {
    for (const n of rows) await db.run("INSERT INTO t (n) VALUES ($1)", [n]);
  } finally {
    await db.close();
  }
  return url;
}

/** What `sql` answers on the database at `url`, on a connection of its own. */
async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

const numbers = async (url: string) => (await query<{ n: number }>(url, "SELECT n FROM t ORDER BY n")).map((r) => r.n);

/** `concord database ...` with DATA_DIR this suite's and NATS where nothing listens. */
async function concord(args: string[], nats: string) {
  return runConcord({ DATA_DIR: dir, NATS_URL: nats, ORDERS_DATABASE_URL: undefined, PRODUCTS_DATABASE_URL: undefined, DATABASE_URL: undefined }, ["database", ...args]);
}

describe("concord database backup and restore on PostgreSQL", () => {
  it("dumps a database with the server's pg_dump and restores it with its pg_restore: what was there at the backup is back, what came after is gone", { timeout: 60_000 }, async () => {
    const url = await serviceDatabase("orders_round", "orders", [1, 2]);
    const nats = `nats://127.0.0.1:${await freePort()}`;
    const file = join(dir, "round", "orders.dump");
    // A password in the URL (the server trusts loopback, and takes any) is in neither the record nor what the command says.
    const withPassword = url.replace("postgres@", "postgres:s3cret@");
    const shown = url.replace("postgres@", "postgres:***@");
    const backup = await concord(["backup", "orders", file, "--database", withPassword], nats);
    expect(backup.status, backup.stderr).toBe(0);
    const said = JSON.parse(backup.stdout) as { database: string; positions: unknown; bytes: number };
    expect(said).toMatchObject({ backup: file, service: "orders", database: shown, positions: null });
    // NATS not answering: as on SQLite, the floors are left out, saying so.
    expect(backup.stderr).toContain("the backup is taken without its consumers' positions");
    expect(JSON.parse(readFileSync(`${file}.json`, "utf8"))).toMatchObject({ service: "orders", database: shown, positions: null });
    expect(backup.stdout + backup.stderr + readFileSync(`${file}.json`, "utf8")).not.toContain("s3cret");
    expect(readFileSync(file).subarray(0, 5).toString()).toBe("PGDMP");
    expect(said.bytes).toBe(readFileSync(file).length);
    expect(readdirSync(join(dir, "round")).sort()).toEqual(["orders.dump", "orders.dump.json"]);

    await query(url, "INSERT INTO t (n) VALUES (3)");
    await query(url, "DELETE FROM t WHERE n = 1");
    const restore = await concord(["restore", "orders", file, "--database", url], "");
    expect(restore.status, restore.stderr).toBe(0);
    expect(restore.stderr).toContain(`concord database restore: ${file} restored into ${url}\n`);
    expect(restore.stderr).toContain("the backup's record holds no consumer positions");
    expect(await numbers(url)).toEqual([1, 2]);

    // A backup is never replaced.
    const again = await concord(["backup", "orders", file, "--database", url], nats);
    expect([again.status, again.stderr]).toEqual([2, expect.stringContaining(`${file} exists: a backup goes to a new file`)]);
  });

  it("refuses to back up a database that is not the service's, saying why, and writes nothing", { timeout: 60_000 }, async () => {
    const products = await serviceDatabase("products_only", "products", []);
    const empty = await server().createDatabase("empty_one");
    const nats = `nats://127.0.0.1:${await freePort()}`;
    const file = join(dir, "refused", "orders.dump");
    const other = await concord(["backup", "orders", file, "--database", products], nats);
    expect([other.status, other.stdout]).toEqual([2, ""]);
    expect(other.stderr).toBe(
      `concord database backup: ${products} cannot be backed up as the orders service's database: it is the products service's database, not the orders service's; name the orders service's with --database (nothing was written)\n`,
    );
    const none = await concord(["backup", "orders", file, "--database", empty], nats);
    expect([none.status, none.stderr]).toEqual([1, expect.stringContaining("it holds no tables yet")]);
    const gone = await concord(["backup", "orders", file, "--database", `postgres://postgres@127.0.0.1:${await freePort()}/orders`], nats);
    expect([gone.status, gone.stderr]).toEqual([1, expect.stringMatching(/^concord database backup: cannot connect to postgres:\/\/postgres@127\.0\.0\.1:\d+\/orders: .*\(nothing was written\)\n$/)]);
    expect(existsSync(join(dir, "refused"))).toBe(false);
  });

  it("refuses a restore, changing nothing, of what is no dump of the service's database, over another service's, while a session is open on the database, or over tables the dump does not hold", { timeout: 90_000 }, async () => {
    const nats = `nats://127.0.0.1:${await freePort()}`;
    const orders = await serviceDatabase("orders_target", "orders", [7]);
    const products = await serviceDatabase("products_source", "products", [9]);
    const productsDump = join(dir, "products.dump");
    expect((await concord(["backup", "products", productsDump, "--database", products], nats)).status).toBe(0);
    const ordersDump = join(dir, "orders.dump");
    expect((await concord(["backup", "orders", ordersDump, "--database", orders], nats)).status).toBe(0);
    await query(orders, "INSERT INTO t (n) VALUES (8)");
    const restore = (service: string, file: string, database: string) => concord(["restore", service, file, "--database", database], "");

    // The products dump, its record removed: refused for what its schema_owner says.
    const noRecord = join(dir, "products-alone.dump");
    writeFileSync(noRecord, readFileSync(productsDump));
    const another = await restore("orders", noRecord, orders);
    expect([another.status, another.stderr]).toEqual([2, `concord database restore: ${noRecord} cannot be restored: it is the products service's database, not the orders service's; nothing was restored\n`]);
    const notADump = join(dir, "not-a.dump");
    writeFileSync(notADump, "hello\n");
    const text = await restore("orders", notADump, orders);
    expect([text.status, text.stderr]).toEqual([2, expect.stringMatching(/^concord database restore: .*not-a\.dump cannot be restored: it is no pg_dump archive that pg_restore reads: .*; nothing was restored\n$/)]);
    // The orders dump over the products database: the database there says whose it is.
    const over = await restore("orders", ordersDump, products);
    expect([over.status, over.stderr]).toEqual([2, `concord database restore: ${products} is the products service's database, not the orders service's: nothing was restored over it\n`]);

    // A session on the database, as an instance of the service holds while it runs.
    const instance = new pg.Client({ connectionString: orders, application_name: "concord pid 4242" });
    await instance.connect();
    try {
      const busy = await restore("orders", ordersDump, orders);
      expect(busy.status).toBe(1);
      expect(busy.stderr).toMatch(/^concord database restore: .* is in use: 1 other session\(s\) on it, "concord pid 4242" \(pid \d+ on the server, from 127\.0\.0\.1\/32\): stop every instance of the orders service/);
    } finally {
      await instance.end();
    }
    // A table made since the backup (by a later migration, say), which pg_restore --clean would leave there.
    await query(orders, "CREATE TABLE later (n INTEGER)");
    const newer = await restore("orders", ordersDump, orders);
    expect([newer.status, newer.stderr]).toEqual([
      1,
      `concord database restore: ${orders} holds 1 table(s) that ${ordersDump} does not (later; made by a migration since the backup, say), which a restore would leave there, and the service, its restored schema_migrations without them, would fail to make again as it starts: drop them first (\`DROP TABLE later\` in psql on that database, once what they hold is kept where needed); nothing was restored\n`,
    ]);
    await query(orders, "DROP TABLE later");
    expect(await numbers(orders)).toEqual([7, 8]);
    expect(await numbers(products)).toEqual([9]);
    // Once they have gone, the restore goes ahead.
    const done = await restore("orders", ordersDump, orders);
    expect(done.status, done.stderr).toBe(0);
    expect(await numbers(orders)).toEqual([7]);
  });

  it("finds pg_dump and pg_restore of the server's major version where the PostgreSQL packages put them, and refuses another, naming what to install", () => {
    const installed = readdirSync(debianPostgresRoot).filter((name) => /^\d+$/.test(name));
    const major = Number(installed[0]);
    expect(postgresProgram("pg_dump", major)).toBe(join(debianPostgresRoot, String(major), "bin", "pg_dump"));
    expect(postgresProgram("pg_restore", major)).toBe(join(debianPostgresRoot, String(major), "bin", "pg_restore"));
    expect(() => postgresProgram("pg_dump", 99)).toThrow(/^the server runs PostgreSQL 99, and no pg_dump of that version is installed \(found .*\/usr\/lib\/postgresql\/\d+\/bin\/pg_dump.*\): install PostgreSQL 99's client programs \(apt-get install postgresql-client-99\)$/);
  });
});
