import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import BetterSqlite3 from "better-sqlite3";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { outboxMigrations } from "../platform/events/index.js";
import { openDatabase } from "../platform/sql/index.js";
import { startPostgresServer } from "../test/support/postgres.js";
import { tempDirForSuite } from "../test/support/temp-dir.js";

const dir = tempDirForSuite("concord-outbox-tool-");
const run = (...args: string[]) => spawnSync(process.execPath, ["--import", "tsx", "tools/outbox.ts", ...args], { encoding: "utf8", timeout: 20_000 });

describe("tools/outbox.ts", () => {
  it("lists parked events with their reason and puts them back in the outbox", async () => {
    const path = join(dir, "service.db");
    const db = await openDatabase({ path, migrations: outboxMigrations });
    const park = (id: string, reason: string) =>
      db.run("INSERT INTO event_outbox_parked (event_id, subject, type, payload, headers, created_at, parked_at, reason) VALUES ($1, 'a.b', 't.T', x'00', x'00', 1, 2, $2)", [id, reason]);
    await park("0190a5b4-7c4e-7d3e-9f1a-000000000001", "message size exceeds maximum allowed (10054)");
    await park("0190a5b4-7c4e-7d3e-9f1a-000000000002", "MAX_PAYLOAD_EXCEEDED");
    await db.close();

    const listed = run("--database", path, "list");
    expect(listed.status).toBe(0);
    expect(listed.stdout).toContain("0 event(s) waiting to be published, 2 parked");
    expect(listed.stdout).toContain('"reason":"message size exceeds maximum allowed (10054)"');

    const retried = run("--database", path, "retry", "0190a5b4-7c4e-7d3e-9f1a-000000000001");
    expect(retried.stdout).toContain("put 1 parked event(s) back");
    expect(run("--database", path).stdout).toContain("1 event(s) waiting to be published, 1 parked");
    expect(run("--database", path, "retry", "--all").stdout).toContain("put 1 parked event(s) back");

    expect(run("--database", join(dir, "missing.db")).status).toBe(2);
    expect(run("--database", path, "retry").status).toBe(2);
    expect(run("--help").stdout).toContain("Usage: npx tsx tools/outbox.ts");
  }, 120_000); // runs the tool three times, each a Node start-up with the TypeScript loader

  it("names what is wrong with its arguments in one line naming --help, and an event id that is not parked", async () => {
    const path = join(dir, "named.db");
    const db = await openDatabase({ path, migrations: outboxMigrations });
    await db.run("INSERT INTO event_outbox_parked (event_id, subject, type, payload, headers, created_at, parked_at, reason) VALUES ($1, 'a.b', 't.T', x'00', x'00', 1, 2, 'too big')", ["0190a5b4-7c4e-7d3e-9f1a-000000000004"]);
    await db.close();
    const refused = (args: string[], problem: string) => {
      const out = run(...args);
      expect(out.status, out.stderr).toBe(2);
      // One line, and where the usage is: the whole usage, 23 lines, followed it.
      expect(out.stderr).toBe(`outbox: ${problem} (\`npx tsx tools/outbox.ts --help\` shows the usage)\n`);
    };
    refused(["widgets", "list"], 'unknown service "widgets": expected products or orders (or --database PATH)');
    refused(["list"], "name the service (products or orders) or its database (--database PATH) first");
    refused(["products", "frob"], 'unknown action "frob": expected list, retry or drop');
    refused(["products", "drop"], "drop takes the id of one parked event");
    refused(["products", "drop", "a", "b"], "drop takes the id of one parked event (got a b)");
    refused(["products", "drop", "--all"], "drop takes the id of one parked event (got --all)");
    refused(["products", "retry", "--all", "--yes"], "--yes confirms a drop; retry deletes nothing and takes none");
    refused(["products", "list", "--datbase", path], "unknown option --datbase; did you mean --database?");
    refused(["products", "retry"], "retry needs the ids of the parked events to put back, or --all");
    // Taken for no --database, which named the service given "unknown".
    refused(["products", "list", "--database", ""], "--database is empty: name the database's file or its postgres:// URL");
    refused(["--database", path, "retry", "--all", "0190a5b4-7c4e-7d3e-9f1a-000000000004"], "retry takes event ids or --all, not both");

    // An id that is not parked refuses the retry as it refuses a drop: exit 2, naming it, none of the others put back (they were, exit 1).
    const mixed = run("--database", path, "retry", "0190a5b4-7c4e-7d3e-9f1a-000000000004", "not-parked");
    expect([mixed.status, mixed.stdout, mixed.stderr]).toEqual([2, "", `outbox: not-parked is not a parked event of ${path} (\`list\` shows those that are); nothing put back\n`]);
    const unknown = run("--database", path, "retry", "gone-1", "gone-2");
    expect([unknown.status, unknown.stdout, unknown.stderr]).toEqual([2, "", `outbox: gone-1, gone-2 are not parked events of ${path} (\`list\` shows those that are); nothing put back\n`]);
    expect(run("--database", path, "list").stdout).toContain("0 event(s) waiting to be published, 1 parked");
    // The same id twice is put back once, and said as such.
    const twice = run("--database", path, "retry", "0190a5b4-7c4e-7d3e-9f1a-000000000004", "0190a5b4-7c4e-7d3e-9f1a-000000000004");
    expect([twice.status, twice.stdout, twice.stderr]).toEqual([0, `put 1 parked event(s) back in the outbox of ${path}\n`, ""]);
  }, 120_000);

  it("drops one parked event for good after printing it as list does, given --yes, and refuses an id that is not parked (exit 2, one line, nothing deleted)", async () => {
    const path = join(dir, "drop.db");
    const db = await openDatabase({ path, migrations: outboxMigrations });
    const park = (id: string) =>
      db.run("INSERT INTO event_outbox_parked (event_id, subject, type, payload, headers, created_at, parked_at, reason) VALUES ($1, 'a.b', 't.T', x'0000', x'00', 1, 2, 'too big')", [id]);
    const [kept, dropped] = ["0190a5b4-7c4e-7d3e-9f1a-000000000011", "0190a5b4-7c4e-7d3e-9f1a-000000000012"];
    await park(kept);
    await park(dropped);
    await db.run("INSERT INTO event_outbox (event_id, subject, type, payload, headers, created_at) VALUES ($1, 'a.b', 't.T', x'00', x'00', 3)", ["0190a5b4-7c4e-7d3e-9f1a-000000000013"]);
    await db.close();
    const listedLine = run("--database", path, "list").stdout.split("\n").find((l) => l.includes(dropped));
    expect(listedLine).toBeDefined();

    // Without --yes, it is shown and kept: it was deleted at once, unasked, where `concord dlq purge` asks for --yes.
    const asked = run("--database", path, "drop", dropped);
    expect([asked.status, asked.stdout, asked.stderr]).toEqual([2, `${listedLine}\n`, `outbox: this deletes parked event ${dropped} from ${path} for good (it is never published); run again with --yes to do it\n`]);
    expect(run("--database", path, "list").stdout).toContain("1 event(s) waiting to be published, 2 parked");

    const out = run("--database", path, "drop", dropped, "--yes");
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toBe(`${listedLine}\ndropped parked event ${dropped} from ${path}: it will not be published\n`);
    expect(out.stderr).toBe("");
    const after = run("--database", path, "list").stdout;
    expect(after).toContain("1 event(s) waiting to be published, 1 parked");
    expect(after).toContain(kept);
    expect(after).not.toContain(dropped);

    // Dropped already, or never parked: refused, and nothing else deleted.
    for (const id of [dropped, "0190a5b4-7c4e-7d3e-9f1a-000000000013"]) {
      const refused = run("--database", path, "drop", id, "--yes");
      expect([refused.status, refused.stdout, refused.stderr]).toEqual([2, "", `outbox: ${id} is not a parked event of ${path} (\`list\` shows those that are); nothing dropped\n`]);
    }
    expect(run("--database", path, "list").stdout).toContain("1 event(s) waiting to be published, 1 parked");

    // As \`concord outbox parked drop\`, the action first.
    const concord = (...args: string[]) => spawnSync(process.execPath, ["--import", "tsx", "tools/concord.ts", "outbox", "parked", ...args], { encoding: "utf8", timeout: 20_000 });
    const unconfirmed = concord("drop", "--database", path, kept);
    expect([unconfirmed.status, unconfirmed.stderr]).toEqual([2, `concord outbox parked: this deletes parked event ${kept} from ${path} for good (it is never published); run again with --yes to do it\n`]);
    const viaConcord = concord("drop", "--database", path, kept, "--yes");
    expect(viaConcord.status, viaConcord.stderr).toBe(0);
    expect(viaConcord.stdout).toContain(`dropped parked event ${kept} from ${path}: it will not be published`);
    const notParked = concord("drop", "--database", path, kept, "--yes");
    expect([notParked.status, notParked.stderr]).toEqual([2, `concord outbox parked: ${kept} is not a parked event of ${path} (\`list\` shows those that are); nothing dropped\n`]);
    expect(run("--database", path, "list").stdout).toContain("1 event(s) waiting to be published, 0 parked");
    expect(concord("--help").stdout).toContain("npx concord outbox parked drop (products|orders|--database PATH) EVENT_ID --yes");
  }, 120_000);

  it("refuses a SQLite file that holds no outbox and leaves it byte for byte as it was (its journal mode too), as README and --help say", () => {
    // Another program's database, in SQLite's default rollback journal mode: the tool used to switch it to WAL.
    const path = join(dir, "someone-elses.db");
    new BetterSqlite3(path).exec("CREATE TABLE t (n INTEGER)").close();
    const before = readFileSync(path);
    const refused = run("--database", path, "list");
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain(`outbox: ${path} holds no outbox: it is no service's database, or its service has not started on it yet;`);
    expect(refused.stderr).toContain("(nothing was changed)");
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.startsWith("someone-elses.db"))).toEqual(["someone-elses.db"]);
  }, 60_000);

  it("refuses a file that is no SQLite database (a backup's .json named by mistake) in one line, exit 2, leaving it as it was", () => {
    const path = join(dir, "orders.db.json");
    writeFileSync(path, '{"service":"orders","positions":[]}\n');
    const refused = run("--database", path, "list");
    expect(refused.status).toBe(2);
    expect(refused.stderr).toBe(
      `outbox: ${path} is not a SQLite database (file is not a database): it is no service's database; name the service's database with --database, or set it as for the service (nothing was changed)\n`,
    );
    expect(readFileSync(path, "utf8")).toBe('{"service":"orders","positions":[]}\n');
    expect(readdirSync(dir).filter((f) => f.startsWith("orders.db.json"))).toEqual(["orders.db.json"]);
  }, 60_000);

  it("refuses the other service's database named for a service (its schema_owner), exit 2, where it listed and put back its events as that service's", async () => {
    const path = join(dir, "orders-owned.db");
    await (await openDatabase({ path, migrations: outboxMigrations, owner: "orders" })).close();
    const refused = run("products", "--database", path, "retry", "--all");
    expect(refused.stderr).toBe(`outbox: ${path} is the orders service's database (its schema_owner), not the products service's; name the products service's with --database, or name orders (nothing was changed)\n`);
    expect(refused.status).toBe(2);
    expect(run("orders", "--database", path, "list").status).toBe(0);
    expect(run("--database", path, "list").status).toBe(0);
  }, 60_000);

  it("refuses a FIFO or a device named as the database in one line, exit 2, where it waited for ever on the FIFO", () => {
    const fifo = join(dir, "products.fifo");
    execFileSync("mkfifo", [fifo]);
    for (const [path, kind] of [[fifo, "a FIFO"], ["/dev/zero", "a character device"]] as const) {
      const refused = run("--database", path, "list");
      expect(refused.stderr).toBe(`outbox: ${path} is ${kind}, not a SQLite database file; name the database's file (nothing was changed)\n`);
      expect(refused.status).toBe(2);
    }
  }, 60_000);

  it("says to set DATA_DIR as npm start was given it when the DATA_DIR it looked in does not exist", () => {
    const missing = join(dir, "no-start-ran-here");
    const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: missing };
    delete env.ORDERS_DATABASE_URL;
    delete env.DATABASE_URL;
    const out = spawnSync(process.execPath, ["--import", "tsx", "tools/outbox.ts", "orders", "list"], { encoding: "utf8", timeout: 20_000, env });
    expect(out.status).toBe(2);
    expect(out.stderr).toBe(
      `outbox: ${join(missing, "orders.db")} does not exist; DATA_DIR ${missing} does not exist, so no \`npm start\` has run with it: set DATA_DIR as \`npm start\` was given it, or name the service's database with --database\n`,
    );
    expect(existsSync(missing)).toBe(false);
  });

  it("says where npm start -- --postgres keeps a service's database when DATA_DIR holds no SQLite file of it", () => {
    mkdirSync(join(dir, "pg-data", "postgres"), { recursive: true });
    const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: join(dir, "pg-data"), POSTGRES_PORT: "54999" };
    delete env.PRODUCTS_DATABASE_URL;
    delete env.DATABASE_URL;
    const out = spawnSync(process.execPath, ["--import", "tsx", "tools/outbox.ts", "products", "list"], { encoding: "utf8", timeout: 20_000, env });
    expect(out.status).toBe(2);
    expect(out.stderr).toContain("products.db does not exist; name the service's database with --database, or set PRODUCTS_DATABASE_URL as for the service (npm start -- --postgres keeps it in postgres://postgres@127.0.0.1:54999/products)");
  });

  it("reads the database npm start gives the service, not DATABASE_URL's, which npm start does not use either, saying so", async () => {
    const dataDir = join(dir, "start-data");
    const started = await openDatabase({ path: join(dataDir, "products.db"), migrations: outboxMigrations });
    await started.close();
    // Another database with an outbox, as a service started alone on DATABASE_URL would have made.
    const alone = await openDatabase({ path: join(dir, "alone.db"), migrations: outboxMigrations });
    await alone.run("INSERT INTO event_outbox_parked (event_id, subject, type, payload, headers, created_at, parked_at, reason) VALUES ($1, 'a.b', 't.T', x'00', x'00', 1, 2, 'too big')", ["0190a5b4-7c4e-7d3e-9f1a-000000000009"]);
    await alone.close();
    const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, DATABASE_URL: join(dir, "alone.db") };
    delete env.PRODUCTS_DATABASE_URL;
    const out = spawnSync(process.execPath, ["--import", "tsx", "tools/outbox.ts", "products", "list"], { encoding: "utf8", timeout: 20_000, env });
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toContain(`${join(dataDir, "products.db")}: 0 event(s) waiting to be published, 0 parked`);
    expect(out.stderr).toBe("outbox: note: DATABASE_URL is not used, as `npm start` does not use it (the two services need a database each): set PRODUCTS_DATABASE_URL, or name the database with --database, for one of your own\n");
    // Named, it is read, and nothing is said.
    const named = spawnSync(process.execPath, ["--import", "tsx", "tools/outbox.ts", "products", "list"], { encoding: "utf8", timeout: 20_000, env: { ...env, PRODUCTS_DATABASE_URL: join(dir, "alone.db") } });
    expect(named.stdout).toContain("0 event(s) waiting to be published, 1 parked");
    expect(named.stderr).toBe("");
    // As a file: URL, as the service reads it (the tool looked for a file named "file:///...").
    const url = spawnSync(process.execPath, ["--import", "tsx", "tools/outbox.ts", "products", "list"], { encoding: "utf8", timeout: 20_000, env: { ...env, PRODUCTS_DATABASE_URL: `file://${join(dir, "alone.db")}` } });
    expect(url.stderr).toBe("");
    expect(url.stdout).toContain(`${join(dir, "alone.db")}: 0 event(s) waiting to be published, 1 parked`);
  }, 60_000);

  it("says which database it reads when the service's variable names one and a running npm start -- --postgres runs the service on another", async () => {
    // That start refuses the variable, so the database it names is not the one the service runs on: it was read in silence.
    const dataDir = join(dir, "named-beside-start");
    mkdirSync(join(dataDir, "postgres"), { recursive: true });
    writeFileSync(join(dataDir, "postgres", "postmaster.pid"), `${process.pid}\n${join(dataDir, "postgres")}\n1733400000\n54398\n`);
    const named = join(dataDir, "named.db");
    const db = await openDatabase({ path: named, migrations: outboxMigrations });
    await db.close();
    const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PRODUCTS_DATABASE_URL: named };
    delete env.DATABASE_URL;
    const listed = spawnSync(process.execPath, ["--import", "tsx", "tools/outbox.ts", "products", "list"], { encoding: "utf8", timeout: 20_000, env });
    expect(listed.status, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(`${named}: 0 event(s) waiting to be published, 0 parked`);
    expect(listed.stderr).toBe(`outbox: note: reading ${named}, which PRODUCTS_DATABASE_URL names; the \`npm start -- --postgres\` running on ${dataDir} runs products on postgres://postgres@127.0.0.1:54398/products (unset PRODUCTS_DATABASE_URL to read that one)\n`);
    // Without the variable, the start's database is the one read, and nothing is noted.
    delete env.PRODUCTS_DATABASE_URL;
    const unset = spawnSync(process.execPath, ["--import", "tsx", "tools/outbox.ts", "products", "list"], { encoding: "utf8", timeout: 20_000, env });
    expect(unset.stderr).not.toContain("note:");
  }, 60_000);

  it("reads the database of a running npm start -- --postgres, not a SQLite file an earlier start left in DATA_DIR", async () => {
    // DATA_DIR as npm start leaves it after a start without --postgres and, now running, one with it.
    const dataDir = join(dir, "both");
    mkdirSync(dataDir);
    chmodSync(dir, 0o755); // as root the server runs as the postgres user, which must reach its data dir
    const stale = await openDatabase({ path: join(dataDir, "products.db"), migrations: outboxMigrations });
    await stale.close();
    const postgres = await startPostgresServer({ dataDir: join(dataDir, "postgres") });
    const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir };
    delete env.PRODUCTS_DATABASE_URL;
    delete env.DATABASE_URL;
    delete env.POSTGRES_PORT;
    const list = () => spawnSync(process.execPath, ["--import", "tsx", "tools/outbox.ts", "products", "list"], { encoding: "utf8", timeout: 20_000, env });
    try {
      const url = await postgres.createDatabase("products");
      const db = await openDatabase({ path: url, migrations: outboxMigrations });
      await db.run("INSERT INTO event_outbox_parked (event_id, subject, type, payload, headers, created_at, parked_at, reason) VALUES ($1, 'a.b', 't.T', $2, $2, 1, 2, 'too big')", ["0190a5b4-7c4e-7d3e-9f1a-000000000005", new Uint8Array([0])]);
      await db.close();
      const running = list();
      expect(running.status, running.stderr).toBe(0);
      expect(running.stdout).toContain(`postgres://postgres@127.0.0.1:${postgres.port}/products: 0 event(s) waiting to be published, 1 parked`);
    } finally {
      await postgres.stop();
    }
    // Once that server is gone, the SQLite file is the one there is.
    const stopped = list();
    expect(stopped.status, stopped.stderr).toBe(0);
    expect(stopped.stdout).toContain(`${join(dataDir, "products.db")}: 0 event(s) waiting to be published, 0 parked`);
    // Said, as the events may be in the PostgreSQL database whose server is not running.
    expect(stopped.stderr).toContain(`outbox: note: ${join(dataDir, "postgres")} holds the databases of \`npm start -- --postgres\`, and no start runs on this DATA_DIR: this is the SQLite file a start without --postgres uses`);
  }, 120_000);

  it("reads a service's outbox on Postgres, named by its postgres:// URL", async () => {
    const postgres = await startPostgresServer();
    try {
      const url = await postgres.createDatabase("outbox_tool");
      const parkIt = async () => {
        const db = await openDatabase({ path: url, migrations: outboxMigrations });
        await db.run("INSERT INTO event_outbox_parked (event_id, subject, type, payload, headers, created_at, parked_at, reason) VALUES ($1, 'a.b', 't.T', $2, $2, 1, 2, 'too big')", ["0190a5b4-7c4e-7d3e-9f1a-000000000003", new Uint8Array([0])]);
        await db.close();
      };
      await parkIt();
      const listed = run("--database", url, "list");
      expect(listed.status, listed.stderr).toBe(0);
      expect(listed.stdout).toContain("0 event(s) waiting to be published, 1 parked");
      expect(listed.stderr).toBe("");
      // A password on the command line is in every user's process list: said on standard error, the command done all the same.
      const withPassword = run("--database", url.replace("postgres@", "postgres:pass-in-ps@"), "list");
      expect(withPassword.status, withPassword.stderr).toBe(0);
      expect(withPassword.stderr).toBe("outbox: note: the --database URL holds a password, which every user of this machine can read in the process list (ps); leave it out of the URL and set PGPASSWORD (or put it in ~/.pgpass), or give the URL in the service's <SERVICE>_DATABASE_URL instead\n");
      expect(run("--database", `${url}?password=pass-in-ps`, "list").stderr).toContain("outbox: note: the --database URL holds a password");
      expect(run("--database", url, "drop", "0190a5b4-7c4e-7d3e-9f1a-000000000003", "--yes").stdout).toContain(`dropped parked event 0190a5b4-7c4e-7d3e-9f1a-000000000003 from ${url}: it will not be published`);
      expect(run("--database", url, "list").stdout).toContain("0 event(s) waiting to be published, 0 parked");
      expect(run("--database", url, "drop", "0190a5b4-7c4e-7d3e-9f1a-000000000003").status).toBe(2);
      await parkIt();
      expect(run("--database", url, "retry", "--all").stdout).toContain("put 1 parked event(s) back");
      // Without --database, the service's own variable names it, as for the service.
      const byVariable = spawnSync(process.execPath, ["--import", "tsx", "tools/outbox.ts", "products", "list"], { encoding: "utf8", timeout: 20_000, env: { ...process.env, PRODUCTS_DATABASE_URL: url.replace("postgres@", "postgres:pass-in-env@") } });
      expect(byVariable.status, byVariable.stderr).toBe(0);
      expect(byVariable.stderr).toBe("");
      expect(byVariable.stdout).toContain(`${url.replace("postgres@", "postgres:***@")}: 1 event(s) waiting to be published, 0 parked`);

      // A database no service made its outbox in is refused and left as it was, rather than given an empty outbox and listed.
      const other = await postgres.createDatabase("not_a_service");
      const refused = run("--database", other, "list");
      expect(refused.status).toBe(2);
      expect(refused.stderr).toContain(`outbox: ${other} holds no outbox: it is no service's database, or its service has not started on it yet`);
      const probe = await openDatabase({ path: other, migrations: [] });
      expect(await probe.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'")).toEqual([]);
      await probe.close();
      // One it cannot reach is named, with why.
      const unreachable = run("--database", "postgres://postgres@127.0.0.1:1/x", "list");
      expect(unreachable.status).toBe(1);
      expect(unreachable.stderr).toContain("outbox: postgres://postgres@127.0.0.1:1/x: the database is unavailable; try again shortly: connect ECONNREFUSED 127.0.0.1:1");
    } finally {
      await postgres.stop();
    }
  }, 120_000);
});
