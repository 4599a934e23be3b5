/**
 * `concord_database_writes_failing` on a real SQLite (its file held at its
 * size with max_page_count: SQLITE_FULL, as on a full disk) and a real
 * PostgreSQL (a trigger raising disk_full or io_error, as a server out of
 * space or with a failing disk): 1 from a write that failed so, through a
 * read's commit, until a write commits again.
 */
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { usePostgresServer } from "../../test/support/postgres.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { openDatabase, type Database } from "../sql/index.js";
import { databaseWritesFailingMetrics } from "./database-writes-failing.js";

const notes = { id: "test_0001_notes", sql: "CREATE TABLE notes (body TEXT NOT NULL)" };

describe("concord_database_writes_failing", () => {
  const dir = tempDirForSuite("writes-failing-");
  const postgres = usePostgresServer();
  let db: Database | undefined;
  afterEach(async () => {
    await db?.close();
    db = undefined;
  });

  /** The gauge's series, by reason, as a scrape shows them. */
  const scrape = async (registry: Registry) => {
    const text = await registry.metrics();
    return Object.fromEntries([...text.matchAll(/^concord_database_writes_failing\{reason="(\w+)"\} (\S+)$/gm)].map((m) => [m[1], Number(m[2])]));
  };
  const metered = (database: Database) => {
    const registry = new Registry();
    databaseWritesFailingMetrics(registry, database);
    return registry;
  };
  /** A 100 KB note, in a transaction of its own. */
  const writeNote = (database: Database) => database.transaction((tx) => tx.run("INSERT INTO notes (body) VALUES ($1)", ["x".repeat(100_000)]));
  const readNotes = (database: Database) => database.transaction((tx) => tx.query("SELECT count(*) AS n FROM notes"));

  it("is 1 (full) on SQLite from a transaction or statement that met SQLITE_FULL, through reads' commits, and 0 once a write commits", async () => {
    db = await openDatabase({ path: `${dir}/full.db`, migrations: [notes] });
    const registry = metered(db);
    expect(await scrape(registry)).toEqual({ full: 0, failing: 0 });
    await writeNote(db);
    const [{ page_count: pages }] = await db.query<{ page_count: number }>("PRAGMA page_count");
    await db.run(`PRAGMA max_page_count = ${pages}`);
    await expect(writeNote(db)).rejects.toMatchObject({ code: "SQLITE_FULL" });
    expect(await scrape(registry)).toEqual({ full: 1, failing: 0 });
    // A read's commit succeeds on a full disk: no sign that writes do.
    await readNotes(db);
    await db.run("UPDATE notes SET body = body WHERE body = $1", ["none"]);
    expect(await scrape(registry)).toEqual({ full: 1, failing: 0 });
    await db.run("PRAGMA max_page_count = 1073741823");
    await writeNote(db);
    expect(await scrape(registry)).toEqual({ full: 0, failing: 0 });
    // A statement alone, as a transaction.
    await db.run(`PRAGMA max_page_count = ${(await db.query<{ page_count: number }>("PRAGMA page_count"))[0].page_count}`);
    await expect(db.run("INSERT INTO notes (body) VALUES ($1)", ["x".repeat(100_000)])).rejects.toMatchObject({ code: "SQLITE_FULL" });
    expect(await scrape(registry)).toEqual({ full: 1, failing: 0 });
    await db.run("PRAGMA max_page_count = 1073741823");
    await db.run("INSERT INTO notes (body) VALUES ($1)", ["x"]);
    expect(await scrape(registry)).toEqual({ full: 0, failing: 0 });
  });

  it("is 1 on PostgreSQL from disk_full (full) or io_error (failing), through reads' commits, and 0 once a write commits", async () => {
    db = await openDatabase({ path: await postgres().createDatabase("writes_failing"), migrations: [notes] });
    const registry = metered(db);
    const refuse = async (code: string) => {
      await db!.run(`CREATE FUNCTION refuse_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '${code}'; END $$`);
      await db!.run("CREATE TRIGGER notes_refused BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION refuse_write()");
    };
    const allow = async () => {
      await db!.run("DROP TRIGGER notes_refused ON notes");
      await db!.run("DROP FUNCTION refuse_write()");
    };
    expect(await scrape(registry)).toEqual({ full: 0, failing: 0 });
    await refuse("disk_full");
    await expect(writeNote(db)).rejects.toThrow(/could not extend file/);
    expect(await scrape(registry)).toEqual({ full: 1, failing: 0 });
    await readNotes(db);
    expect(await scrape(registry)).toEqual({ full: 1, failing: 0 });
    await allow();
    await writeNote(db);
    expect(await scrape(registry)).toEqual({ full: 0, failing: 0 });
    await refuse("io_error");
    await expect(db.run("INSERT INTO notes (body) VALUES ($1)", ["x"])).rejects.toThrow(/could not extend file/);
    expect(await scrape(registry)).toEqual({ full: 0, failing: 1 });
    await allow();
    await db.run("INSERT INTO notes (body) VALUES ($1)", ["x"]);
    expect(await scrape(registry)).toEqual({ full: 0, failing: 0 });
  });
});
