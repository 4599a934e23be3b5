import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { usePostgresServer } from "../../test/support/postgres.js";
import { type Database, type Migration, openDatabase } from "./index.js";

const notes: Migration = {
  id: "t_0001_notes",
  sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL); INSERT INTO notes (id, text) SELECT n, 'note ' || n FROM generate_series(1, 1000) AS n",
};
const byText: Migration = {
  id: "t_0003_notes_by_text",
  transaction: false,
  sqlite: "CREATE INDEX notes_by_text ON notes (text)",
  postgres: "CREATE INDEX CONCURRENTLY IF NOT EXISTS notes_by_text ON notes (text)",
};
const uniqueText: Migration = {
  id: "t_0003_notes_unique_text",
  transaction: false,
  sqlite: "CREATE UNIQUE INDEX notes_unique_text ON notes (text)",
  postgres: "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS notes_unique_text ON notes (text)",
};

describe("a PostgreSQL migration outside a transaction (CREATE INDEX CONCURRENTLY)", () => {
  const postgres = usePostgresServer();
  const opened: Database[] = [];
  afterEach(async () => {
    for (const db of opened.splice(0)) await db.close();
  });
  const open = async (url: string, migrations: readonly Migration[]) => {
    const db = await openDatabase({ path: url, migrations });
    opened.push(db);
    return db;
  };
  /** The index `name`: its oid and whether it is valid (none when there is no such index). */
  const index = (db: Database, name: string) =>
    db.query<{ oid: number; valid: boolean }>("SELECT c.oid::int AS oid, i.indisvalid AS valid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = $1", [name]);
  const recorded = async (db: Database, id: string) => (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM schema_migrations WHERE id = $1", [id]))[0].n;

  it("builds the index, records the migration, and does nothing when run again; a build not yet recorded counts as done", async () => {
    const url = await postgres().createDatabase("concurrent_index");
    const db = await open(url, [notes, byText]);
    const [built] = await index(db, "notes_by_text");
    expect(built).toEqual({ oid: expect.any(Number), valid: true });
    expect(await recorded(db, byText.id)).toBe(1);
    await open(url, [notes, byText]);
    expect(await index(db, "notes_by_text")).toEqual([built]);
    expect(await recorded(db, byText.id)).toBe(1);
    // As if the process had died between the build and its row in schema_migrations.
    await db.run("DELETE FROM schema_migrations WHERE id = $1", [byText.id]);
    await open(url, [notes, byText]);
    expect(await index(db, "notes_by_text")).toEqual([built]);
    expect(await recorded(db, byText.id)).toBe(1);
  });

  it("drops the INVALID index a failed build left behind and builds it again, recording the migration only once it is valid", async () => {
    const url = await postgres().createDatabase("invalid_index");
    const db = await open(url, [notes]);
    await db.run("INSERT INTO notes (id, text) VALUES (1001, 'note 1')");
    // The build finds two rows with one text: it fails, and leaves its index behind, INVALID.
    await expect(openDatabase({ path: url, migrations: [notes, uniqueText] })).rejects.toThrow(/^migration t_0003_notes_unique_text failed: could not create unique index "notes_unique_text"/);
    const [left] = await index(db, "notes_unique_text");
    expect(left).toEqual({ oid: expect.any(Number), valid: false });
    expect(await recorded(db, uniqueText.id)).toBe(0);
    await db.run("DELETE FROM notes WHERE id = 1001");
    // IF NOT EXISTS alone would take the leftover as built.
    await open(url, [notes, uniqueText]);
    const [built] = await index(db, "notes_unique_text");
    expect(built).toEqual({ oid: expect.any(Number), valid: true });
    expect(built.oid).not.toBe(left.oid);
    expect(await recorded(db, uniqueText.id)).toBe(1);
    await expect(db.run("INSERT INTO notes (id, text) VALUES (1002, 'note 2')")).rejects.toMatchObject({ code: "23505" });
  });

  it("lets two instances started together migrate, one building the index while the other waits for the lock under which instances migrate", async () => {
    const url = await postgres().createDatabase("instances_index");
    // The first to take the lock holds it for a while before the build: the other is waiting for it by then.
    const pause: Migration = { id: "t_0002_pause", sql: "SELECT pg_sleep(1)" };
    const migrations = [notes, pause, byText];
    const both = Promise.all([0, 1].map(() => openDatabase({ path: url, migrations })));
    const outcome = await Promise.race([both, sleep(15_000).then(() => "still migrating after 15 s")]);
    expect(outcome).toHaveLength(2);
    const [a, b] = outcome as Database[];
    opened.push(a, b);
    expect(await index(a, "notes_by_text")).toEqual([{ oid: expect.any(Number), valid: true }]);
    expect(await a.query("SELECT id FROM schema_migrations ORDER BY id")).toEqual(migrations.map((m) => ({ id: m.id })));
  });

  it("tells the migrations an opening applied, one outside a transaction among them, and on a database a newer version migrated, refuses it unchanged", async () => {
    const url = await postgres().createDatabase("versions");
    const told: (readonly string[])[] = [];
    const onMigrated = (applied: readonly string[]) => void told.push(applied);
    opened.push(await openDatabase({ path: url, migrations: [notes], onMigrated }));
    opened.push(await openDatabase({ path: url, migrations: [notes, byText], onMigrated }));
    const db = await openDatabase({ path: url, migrations: [notes, byText], onMigrated });
    opened.push(db);
    expect(told).toEqual([[notes.id], [byText.id]]);
    // Unclaimed so far: the refusal must roll back the claim it makes before it looks.
    const refused = openDatabase({ path: url, migrations: [notes], owner: "notes", refuseNewer: true });
    await expect(refused).rejects.toThrow(/^the notes service's database was migrated by a newer version of the code: it records migration t_0003_notes_by_text, which this version does not have/);
    expect(await db.query("SELECT to_regclass('schema_owner') IS NULL AS unclaimed")).toEqual([{ unclaimed: true }]);
    expect(await db.query("SELECT id FROM schema_migrations ORDER BY id")).toEqual([{ id: notes.id }, { id: byText.id }]);
  });

  it("runs an instance of the older code on a database whose newer migration older code works with, an index built outside a transaction among them", async () => {
    const url = await postgres().createDatabase("older_code");
    // A schema_migrations of an earlier version, without the flag's column.
    const earlier = await open(url, [notes]);
    await earlier.run("ALTER TABLE schema_migrations DROP COLUMN older_code_works");
    const newer = await open(url, [notes, { ...byText, olderCodeWorks: true }]);
    expect(await newer.query("SELECT id, older_code_works AS works FROM schema_migrations ORDER BY id")).toEqual([
      { id: notes.id, works: 0 },
      { id: byText.id, works: 1 },
    ]);
    const told: (readonly string[])[] = [];
    const older = await openDatabase({ path: url, migrations: [notes], owner: "notes", refuseNewer: true, onNewerMigrations: (ids) => void told.push(ids) });
    opened.push(older);
    expect(told).toEqual([[byText.id]]);
    expect(await older.query("SELECT count(*)::int AS n FROM notes")).toEqual([{ n: 1000 }]);
  });
});
