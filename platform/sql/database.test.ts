import { execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import BetterSqlite3 from "better-sqlite3";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Code, StatusError } from "../errors/index.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { openDatabase } from "./database.js";
import { sendAhead } from "./transaction-scope.js";
import { openSqlite } from "./sqlite.js";
import { redact } from "./postgres.js";
import type { StagedWrites, Transaction } from "./types.js";

const dir = tempDirForSuite("concord-db-");
const migrations = [{ id: "0001_notes", sql: "CREATE TABLE notes (text TEXT NOT NULL)" }];

/** Staged writes that insert their items into notes, and the items of each flush, in order. */
function stagedNotes(): { flushed: string[][]; notes: StagedWrites<string> } {
  const flushed: string[][] = [];
  const notes: StagedWrites<string> = {
    name: "notes",
    async flush(tx, items) {
      flushed.push([...items]);
      for (const text of items) await tx.run("INSERT INTO notes (text) VALUES ($1)", [text]);
    },
  };
  return { flushed, notes };
}

describe("openDatabase (SQLite)", () => {
  it("gives each row as an object keyed by its column names, values as SQLite stores them, whether the query names its columns or takes *", async () => {
    const db = await openDatabase({ path: join(dir, "rows.db"), migrations: [{ id: "0001_things", sql: "CREATE TABLE things (id TEXT PRIMARY KEY, n INTEGER, x REAL, b BLOB, note TEXT)" }] });
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO things (id, n, x, b, note) VALUES ($1, $2, $3, $4, $5)", ["a", 7, 1.5, Buffer.from([1, 2]), null]);
      await tx.run("INSERT INTO things (id, n, x, b, note) VALUES ($1, $2, $3, $4, $5)", ["b", -1, 0, null, "second"]);
    });
    const named = await db.query("SELECT id, n, x, b, note, n + 1 AS next FROM things ORDER BY id");
    expect(named).toEqual([
      { id: "a", n: 7, x: 1.5, b: Buffer.from([1, 2]), note: null, next: 8 },
      { id: "b", n: -1, x: 0, b: null, note: "second", next: 0 },
    ]);
    expect(Object.keys(named[1])).toEqual(["id", "n", "x", "b", "note", "next"]);
    // A name given twice keeps its last value, as better-sqlite3's own rows do.
    expect(await db.query("SELECT id, n AS v, x AS v FROM things WHERE id = $1", ["a"])).toEqual([{ id: "a", v: 1.5 }]);
    expect(await db.query("SELECT id FROM things WHERE id = $1", ["none"])).toEqual([]);
    expect(await db.query("SELECT count(*) AS things FROM things")).toEqual([{ things: 2 }]);
    // `*` takes in a column added after the statement was first run (SQLite prepares it again).
    const all = "SELECT * FROM things WHERE id = $1";
    expect(await db.query(all, ["b"])).toEqual([{ id: "b", n: -1, x: 0, b: null, note: "second" }]);
    await db.transaction(async (tx) => void (await tx.run("ALTER TABLE things ADD COLUMN added TEXT NOT NULL DEFAULT 'yes'")));
    expect(await db.query(all, ["b"])).toEqual([{ id: "b", n: -1, x: 0, b: null, note: "second", added: "yes" }]);
    // And a row of an INSERT ... RETURNING, inside the transaction.
    const returned = await db.transaction((tx) => tx.query("INSERT INTO things (id, n) VALUES ($1, $2) RETURNING id, n, added", ["c", 3]));
    expect(returned).toEqual([{ id: "c", n: 3, added: "yes" }]);
    await db.close();
  });

  it("bounds each connection's page cache at SQLite's default 2 MiB, not better-sqlite3's 16 MB", async () => {
    const db = openSqlite(join(dir, "cache.db"));
    expect(db.writer.pragma("cache_size", { simple: true })).toBe(-2000);
    await db.close();
  });

  it("makes a new database file, its log and its shared memory readable by their owner only, and leaves an existing file's mode as it is", async () => {
    const path = join(dir, "private.db");
    const db = await openDatabase({ path, migrations });
    await db.transaction(async (tx) => void (await tx.run("INSERT INTO notes (text) VALUES ($1)", ["an address"])));
    for (const file of [path, `${path}-wal`, `${path}-shm`]) expect(statSync(file).mode & 0o777, file).toBe(0o600);
    await db.close();
    const shared = join(dir, "shared.db");
    new BetterSqlite3(shared).close();
    chmodSync(shared, 0o640);
    await (await openDatabase({ path: shared, migrations })).close();
    expect(statSync(shared).mode & 0o777).toBe(0o640);
  });

  it("holds a service's SQLite file for its process: a second opening for a service is refused while it is open, in this process or another, and a killed holder leaves no claim", async () => {
    const path = join(dir, "claimed.db");
    const first = await openDatabase({ path, migrations, owner: "things" });
    await expect(openDatabase({ path, migrations, owner: "things" })).rejects.toThrow(/the SQLite database .*claimed\.db is in use by another process/);
    // Tools that read or repair it while the service runs do not claim it.
    const tool = await openDatabase({ path, migrations });
    await tool.close();
    await first.close();
    // Another process holds it, and is killed outright: the system drops its lock with it.
    const holder = spawn(process.execPath, ["--import", "tsx", "-e", `import { claimSqliteFile } from ${JSON.stringify(join(import.meta.dirname, "sqlite.ts"))}; claimSqliteFile(${JSON.stringify(path)}); console.log("held"); setInterval(() => {}, 1000);`], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout!.on("data", (d: Buffer) => d.toString().includes("held") && resolve());
        holder.once("exit", (code) => reject(new Error(`the holder exited with ${code}`)));
      });
      await expect(openDatabase({ path, migrations, owner: "things" })).rejects.toThrow(/is in use by another process/);
    } finally {
      holder.kill("SIGKILL");
      await new Promise((resolve) => holder.once("close", resolve));
    }
    const again = await openDatabase({ path, migrations, owner: "things" });
    await again.close();
  });

  it("keeps <file>-lock-journal, the claim's rollback journal, only while the file is claimed, holding nothing to play back, as README Backups and restores says", async () => {
    const path = join(dir, "journal.db");
    const journal = `${path}-lock-journal`;
    const db = await openDatabase({ path, migrations, owner: "things" });
    await db.run("INSERT INTO notes (text) VALUES ('kept')");
    // SQLite keeps the journal of a file it locks exclusively, its header zeroed once the claim's write committed.
    expect(readFileSync(journal).subarray(0, 28).every((byte) => byte === 0)).toBe(true);
    await db.close();
    expect(existsSync(journal)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith("journal.db"))).toEqual(["journal.db", "journal.db-lock"]);
    // A copy of the database alone, without either file beside it, is the whole database.
    const copy = new BetterSqlite3(path, { readonly: true });
    expect(copy.prepare("SELECT text FROM notes").all()).toEqual([{ text: "kept" }]);
    copy.close();
  });

  it("runs migrations once, across restarts", async () => {
    const path = join(dir, "migrate.db");
    await (await openDatabase({ path, migrations })).close();
    const db = await openDatabase({ path, migrations });
    expect(await db.query("SELECT count(*) AS n FROM schema_migrations")).toEqual([{ n: 1 }]);
    await db.close();
  });

  it("tells which migrations an opening applied, in order, and nothing when it applied none", async () => {
    const path = join(dir, "told.db");
    const first = { id: "0001_notes", sql: "CREATE TABLE notes (text TEXT NOT NULL)" };
    const later = [
      { id: "0002_notes_by_text", sql: "CREATE INDEX notes_by_text ON notes (text)" },
      { id: "0003_tags", sql: "CREATE TABLE tags (name TEXT NOT NULL)" },
    ];
    const told: (readonly string[])[] = [];
    const onMigrated = (applied: readonly string[]) => void told.push(applied);
    await (await openDatabase({ path, migrations: [first], onMigrated })).close();
    await (await openDatabase({ path, migrations: [first, ...later].reverse(), onMigrated })).close();
    await (await openDatabase({ path, migrations: [first, ...later], onMigrated })).close();
    expect(told).toEqual([["0001_notes"], ["0002_notes_by_text", "0003_tags"]]);
  });

  it("refuses, byte for byte as it was, a database a newer version of the code migrated, naming the migrations it lacks", async () => {
    const path = join(dir, "newer.db");
    const newer = [...migrations, { id: "0002_tags", sql: "CREATE TABLE tags (name TEXT NOT NULL)" }, { id: "0003_tag_colour", sql: "ALTER TABLE tags ADD COLUMN colour TEXT" }];
    const db = await openDatabase({ path, migrations: newer, owner: "notes" });
    await db.run("INSERT INTO notes (text) VALUES ('kept')");
    await db.close();
    const before = readFileSync(path);
    const refused = await openDatabase({ path, migrations: [...migrations, { id: "0002_other", sql: "CREATE TABLE other (n INTEGER)" }], owner: "notes", refuseNewer: true }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(StatusError);
    expect((refused as StatusError).code).toBe(Code.FAILED_PRECONDITION);
    expect((refused as StatusError).message).toBe(
      "the notes service's database was migrated by a newer version of the code: it records migrations 0002_tags, 0003_tag_colour, " +
        "which this version does not have and whose changes it would misread. Start the newer version again, or restore the backup " +
        'taken before the upgrade (README "Upgrades"); nothing was changed',
    );
    expect(readFileSync(path).equals(before)).toBe(true);
    // Without refuseNewer (a tool that migrates a part of the database) it opens; the newer version opens it as before.
    await (await openDatabase({ path, migrations })).close();
    const again = await openDatabase({ path, migrations: newer, owner: "notes", refuseNewer: true });
    expect(await again.query("SELECT text FROM notes")).toEqual([{ text: "kept" }]);
    expect(await again.query("SELECT count(*) AS n FROM schema_migrations")).toEqual([{ n: 3 }]);
    await again.close();
  });

  it("runs older code on a database whose newer migrations are each marked as ones older code works with, and refuses it where one is not", async () => {
    const path = join(dir, "expanded.db");
    // A schema_migrations made before it had the flag's column, as every database of an earlier version has.
    const before = new BetterSqlite3(path);
    before.exec("CREATE TABLE schema_migrations (id TEXT PRIMARY KEY, applied_at INTEGER NOT NULL); CREATE TABLE notes (text TEXT NOT NULL)");
    before.prepare("INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)").run("0001_notes", Date.now());
    before.close();
    const tags = { id: "0002_tags", sql: "CREATE TABLE tags (name TEXT NOT NULL)", olderCodeWorks: true };
    const colour = { id: "0003_note_colour", sql: "ALTER TABLE notes ADD COLUMN colour TEXT", olderCodeWorks: true };
    const flags = async (db: Awaited<ReturnType<typeof openDatabase>>) => db.query("SELECT id, older_code_works AS works FROM schema_migrations ORDER BY id");
    const newer = await openDatabase({ path, migrations: [...migrations, tags, colour], owner: "notes", refuseNewer: true });
    expect(await flags(newer)).toEqual([
      { id: "0001_notes", works: 0 },
      { id: "0002_tags", works: 1 },
      { id: "0003_note_colour", works: 1 },
    ]);
    await newer.close();
    // The older code opens it, told of the two, and reads and writes as it did.
    const told: (readonly string[])[] = [];
    const older = await openDatabase({ path, migrations, owner: "notes", refuseNewer: true, onNewerMigrations: (ids) => void told.push(ids) });
    expect(told).toEqual([["0002_tags", "0003_note_colour"]]);
    await older.run("INSERT INTO notes (text) VALUES ('by the older code')");
    expect(await older.query("SELECT text, colour FROM notes")).toEqual([{ text: "by the older code", colour: null }]);
    // It leaves the newer code's flags as they are: it does not know those migrations.
    expect(await flags(older)).toEqual([
      { id: "0001_notes", works: 0 },
      { id: "0002_tags", works: 1 },
      { id: "0003_note_colour", works: 1 },
    ]);
    await older.close();
    // A newer version whose migration older code does not work with: refused as before, that one named alone.
    const renamed = { id: "0004_rename_text", sql: "ALTER TABLE notes RENAME COLUMN text TO body" };
    await (await openDatabase({ path, migrations: [...migrations, tags, colour, renamed], owner: "notes", refuseNewer: true })).close();
    const unchanged = readFileSync(path);
    const refused = await openDatabase({ path, migrations, owner: "notes", refuseNewer: true, onNewerMigrations: (ids) => void told.push(ids) }).catch((err: unknown) => err);
    expect((refused as StatusError).code).toBe(Code.FAILED_PRECONDITION);
    expect((refused as StatusError).message).toMatch(/^the notes service's database was migrated by a newer version of the code: it records migration 0004_rename_text, which this version/);
    expect(told).toHaveLength(1);
    expect(readFileSync(path).equals(unchanged)).toBe(true);
    // The flag follows the newest code to start: a later version that marks 0004 sets it in the row an earlier one wrote.
    const marked = await openDatabase({ path, migrations: [...migrations, tags, colour, { ...renamed, olderCodeWorks: true }], owner: "notes", refuseNewer: true });
    expect((await flags(marked)).at(-1)).toEqual({ id: "0004_rename_text", works: 1 });
    await marked.close();
  });

  it("refuses, byte for byte as it was, a database without the migration it requires: one in another journal mode kept in it, one missing not made", async () => {
    // Another program's database, named by mistake: in SQLite's default rollback journal mode, which a writing
    // connection of the platform would switch to WAL, rewriting its header.
    const path = join(dir, "someone-elses.db");
    new BetterSqlite3(path).exec("CREATE TABLE t (n INTEGER)").close();
    const before = readFileSync(path);
    const refused = await openDatabase({ path, migrations, requireApplied: "0001_notes" }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(StatusError);
    expect((refused as StatusError).code).toBe(Code.FAILED_PRECONDITION);
    expect((refused as StatusError).message).toBe("the database has no migration 0001_notes; nothing was changed");
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.startsWith("someone-elses.db"))).toEqual(["someone-elses.db"]);
    const missing = join(dir, "not-made", "missing.db");
    await expect(openDatabase({ path: missing, migrations, requireApplied: "0001_notes" })).rejects.toThrow("the database has no migration 0001_notes; nothing was changed");
    expect(existsSync(join(dir, "not-made"))).toBe(false);
    // One that has it opens as any other, WAL and all.
    const migrated = join(dir, "has-notes.db");
    await (await openDatabase({ path: migrated, migrations })).close();
    const db = await openDatabase({ path: migrated, migrations, requireApplied: "0001_notes" });
    expect(await db.query("SELECT count(*) AS n FROM notes")).toEqual([{ n: 0 }]);
    await db.close();
  });

  it("refuses a directory, a FIFO or a device named as its file (FAILED_PRECONDITION), before opening anything: SQLite said 'disk I/O error', and a FIFO's header was waited for ever", async () => {
    const folder = join(dir, "a-folder.db");
    mkdirSync(folder);
    const fifo = join(dir, "a-fifo.db");
    execFileSync("mkfifo", [fifo]);
    for (const [path, what] of [[folder, "a directory"], [fifo, "a FIFO"], ["/dev/null", "a character device"]] as const) {
      for (const requireApplied of [undefined, "0001_notes"]) {
        const refused = await openDatabase({ path, migrations, requireApplied }).catch((err: unknown) => err);
        expect(refused, path).toBeInstanceOf(StatusError);
        expect((refused as StatusError).code).toBe(Code.FAILED_PRECONDITION);
        expect((refused as StatusError).message).toBe(`${path} is ${what}, not a SQLite database file; name the database's file (nothing was changed)`);
      }
    }
    expect(readdirSync(folder)).toEqual([]);
    expect(readdirSync(dir).filter((f) => f.startsWith("a-fifo.db"))).toEqual(["a-fifo.db"]);
  });

  it("refuses a service's file that is no SQLite database (FAILED_PRECONDITION), leaving it as it is and making no claim file beside it, where it failed with SQLite's 'file is not a database' and a stack", async () => {
    const text = join(dir, "orders-backup.db.json");
    const body = `${JSON.stringify({ service: "orders", note: "a backup's description, named by mistake" })}\n`;
    writeFileSync(text, body);
    const refused = await openDatabase({ path: text, migrations, owner: "orders" }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(StatusError);
    expect((refused as StatusError).code).toBe(Code.FAILED_PRECONDITION);
    expect((refused as StatusError).message).toBe(`${text} is not a SQLite database (it does not begin as one); name the database's file (nothing was changed)`);
    expect(readFileSync(text, "utf8")).toBe(body);
    expect(readdirSync(dir).filter((f) => f.startsWith("orders-backup.db.json"))).toEqual(["orders-backup.db.json"]);
    // An empty file is a new database, and one made here opens again.
    const empty = join(dir, "empty-owned.db");
    writeFileSync(empty, "");
    await (await openDatabase({ path: empty, migrations, owner: "orders" })).close();
    await (await openDatabase({ path: empty, migrations, owner: "orders" })).close();
  });

  it("refuses another application's SQLite file, with tables and no migrations, for a service (FAILED_PRECONDITION), where it made its tables beside that application's and called the database new", async () => {
    const path = join(dir, "another-apps.db");
    const other = new BetterSqlite3(path);
    other.exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('Ada')");
    other.close();
    const refused = await openDatabase({ path, migrations, owner: "orders" }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(StatusError);
    expect((refused as StatusError).code).toBe(Code.FAILED_PRECONDITION);
    expect((refused as StatusError).message).toBe(
      "the database holds tables of something else (customers) and none of a service's migrations: name a new or empty file for orders, or its own database; its tables were left as they were",
    );
    const after = new BetterSqlite3(path, { readonly: true });
    expect(after.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all()).toEqual([{ name: "customers" }]);
    after.close();
    // Its journal mode too: a writing connection would have switched it to WAL (the header's bytes 18 and 19 say 2).
    expect([...readFileSync(path).subarray(18, 20)]).toEqual([1, 1]);
    expect(readdirSync(dir).filter((f) => f.startsWith("another-apps.db"))).toEqual(["another-apps.db"]);
    // One already in WAL mode, which a writing connection leaves as it is, is refused by the migration's own look.
    const walPath = join(dir, "another-apps-wal.db");
    const walApp = new BetterSqlite3(walPath);
    walApp.pragma("journal_mode = WAL");
    walApp.exec("CREATE TABLE invoices (id INTEGER PRIMARY KEY)");
    walApp.close();
    const walRefused = await openDatabase({ path: walPath, migrations, owner: "orders" }).catch((err: unknown) => err);
    expect((walRefused as StatusError).message).toContain("the database holds tables of something else (invoices)");
    // Without an owner (the tools that read a database) nothing is claimed, and nothing refused here.
    await (await openDatabase({ path: join(dir, "owned-later.db"), migrations, owner: "orders" })).close();
    await (await openDatabase({ path: join(dir, "owned-later.db"), migrations, owner: "orders" })).close();
  });

  it("applies migrations in the code-unit order of their ids, whatever the locale's collation says", async () => {
    const path = join(dir, "order.db");
    // A locale's collation puts "a_..." before "B_..." and "x_2" before "x2"; code units put them the other way round.
    const ordered = [
      { id: "a_notes", sql: "CREATE TABLE order_seen (id TEXT NOT NULL)" },
      { id: "B_first", sql: "CREATE TABLE first_only (id TEXT NOT NULL)" },
      { id: "x_2", sql: "INSERT INTO order_seen (id) VALUES ('x_2')" },
      { id: "x2", sql: "INSERT INTO order_seen (id) VALUES ('x2')" },
    ];
    // The order they ran in is the order of their rows in schema_migrations.
    const db = await openDatabase({ path, migrations: [...ordered].reverse() });
    expect((await db.query<{ id: string }>("SELECT id FROM schema_migrations ORDER BY rowid")).map((r) => r.id)).toEqual(["B_first", "a_notes", "x2", "x_2"]);
    await db.close();
  });

  it("rolls back a savepoint that throws without touching the transaction, and runs after-commit callbacks once committed", async () => {
    const db = await openDatabase({ path: join(dir, "nested.db"), migrations });
    const committed: string[] = [];
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO notes (text) VALUES ($1)", ["outer"]);
      tx.afterCommit(() => committed.push("outer"));
      await expect(
        tx.savepoint(async (inner) => {
          await inner.run("INSERT INTO notes (text) VALUES ($1)", ["inner"]);
          inner.afterCommit(() => committed.push("inner"));
          throw new Error("inner fails");
        }),
      ).rejects.toThrow("inner fails");
      await tx.savepoint((inner) => inner.run("INSERT INTO notes (text) VALUES ($1)", ["second inner"]));
      expect(committed).toEqual([]);
    });
    expect(committed).toEqual(["outer"]);
    expect((await db.query<{ text: string }>("SELECT text FROM notes ORDER BY rowid")).map((r) => r.text)).toEqual(["outer", "second inner"]);
    await expect(
      db.transaction(async (tx) => {
        await tx.run("INSERT INTO notes (text) VALUES ($1)", ["lost"]);
        tx.afterCommit(() => committed.push("lost"));
        throw new Error("outer fails");
      }),
    ).rejects.toThrow("outer fails");
    expect(committed).toEqual(["outer"]);
    expect(await db.query("SELECT count(*) AS n FROM notes")).toEqual([{ n: 2 }]);
    await db.close();
  });

  it("writes staged items just before the commit, without those of a savepoint that rolled back", async () => {
    const db = await openDatabase({ path: join(dir, "staged.db"), migrations });
    const { flushed, notes } = stagedNotes();
    await db.transaction(async (tx) => {
      tx.stage(notes, "a");
      await tx.savepoint(async (inner) => inner.stage(notes, "b"));
      await tx
        .savepoint(async (inner) => {
          inner.stage(notes, "dropped");
          throw new Error("no");
        })
        .catch(() => undefined);
      tx.stage(notes, "c");
      expect(flushed).toEqual([]);
    });
    expect(flushed).toEqual([["a", "b", "c"]]);
    expect((await db.query<{ text: string }>("SELECT text FROM notes ORDER BY rowid")).map((r) => r.text)).toEqual(["a", "b", "c"]);
    await db.close();
  });

  it("refuses a write staged or a callback asked for through a transaction or savepoint whose work is over, instead of dropping it without a word", async () => {
    const db = await openDatabase({ path: join(dir, "staged-late.db"), migrations });
    const { flushed, notes } = stagedNotes();
    const ran: string[] = [];
    /** What each late call came to: "done", or its error's message. */
    const late = (call: () => void): string => {
      try {
        call();
        return "done";
      } catch (err) {
        return (err as Error).message;
      }
    };
    const refusedStage = /^the transaction's work had ended when a write was staged through it \(by work not awaited\): it will not be written$/;
    const refusedCallback = /^the transaction's work had ended when an after-commit callback was asked for through it \(by work not awaited\): it will not run$/;
    let committedTx!: Transaction;
    let released!: Transaction;
    let lateInSavepoint: string[] = [];
    await db.transaction(async (tx) => {
      committedTx = tx;
      tx.stage(notes, "kept");
      await tx.savepoint(async (inner) => void (released = inner));
      // The savepoint is released; the transaction around it still runs.
      lateInSavepoint = [late(() => released.stage(notes, "late in savepoint")), late(() => released.afterCommit(() => ran.push("late in savepoint")))];
    });
    let failedTx!: Transaction;
    await expect(
      db.transaction(async (tx) => {
        failedTx = tx;
        throw new Error("failed");
      }),
    ).rejects.toThrow("failed");
    const outcomes = [
      ...lateInSavepoint,
      late(() => committedTx.stage(notes, "late")),
      late(() => committedTx.afterCommit(() => ran.push("late"))),
      late(() => released.stage(notes, "late in savepoint")),
      late(() => failedTx.stage(notes, "late in failed")),
      late(() => failedTx.afterCommit(() => ran.push("late in failed"))),
    ];
    expect(outcomes).toEqual([
      expect.stringMatching(refusedStage),
      expect.stringMatching(refusedCallback),
      expect.stringMatching(refusedStage),
      expect.stringMatching(refusedCallback),
      expect.stringMatching(refusedStage),
      expect.stringMatching(refusedStage),
      expect.stringMatching(refusedCallback),
    ]);
    // Nothing refused went anywhere: the next transaction writes and calls back only its own.
    await db.transaction(async (tx) => {
      tx.stage(notes, "next");
      tx.afterCommit(() => ran.push("next"));
    });
    expect(flushed).toEqual([["kept"], ["next"]]);
    expect(ran).toEqual(["next"]);
    expect((await db.query<{ text: string }>("SELECT text FROM notes ORDER BY rowid")).map((r) => r.text)).toEqual(["kept", "next"]);
    await db.close();
  });

  it("runs a statement sent ahead at once, and fails the transaction, nothing kept, when its row count is not the checked one", async () => {
    const db = await openDatabase({ path: join(dir, "ahead.db"), migrations });
    const expectOne = { rows: 1, error: (changed: number) => new Error(`${changed} rows changed, not 1`) };
    await db.transaction(async (tx) => {
      await sendAhead(tx, "INSERT INTO notes (text) VALUES ($1)", ["one"]);
      await sendAhead(tx, "UPDATE notes SET text = text || '+' WHERE text = $1", ["one"], expectOne);
    });
    let failure: unknown;
    await db
      .transaction(async (tx) => {
        await sendAhead(tx, "INSERT INTO notes (text) VALUES ($1)", ["not kept"]);
        // Caught: the transaction still fails, as a failed statement's would.
        await sendAhead(tx, "UPDATE notes SET text = text WHERE text = $1", ["missing"], expectOne).catch(() => undefined);
      })
      .catch((err: unknown) => (failure = err));
    expect(String(failure)).toContain("0 rows changed, not 1");
    expect(await db.query("SELECT text FROM notes")).toEqual([{ text: "one+" }]);
    await db.close();
  });

  it("runs transactions one at a time, and reads outside them see only what is committed", async () => {
    const db = await openDatabase({ path: join(dir, "queue.db"), migrations });
    let inside = 0;
    let most = 0;
    let readMeanwhile: unknown;
    await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        db.transaction(async (tx) => {
          most = Math.max(most, ++inside);
          await tx.run("INSERT INTO notes (text) VALUES ($1)", [`t${i}`]);
          await new Promise((r) => setTimeout(r, 5));
          if (i === 0) readMeanwhile = await db.query("SELECT count(*) AS n FROM notes");
          inside--;
        }),
      ),
    );
    expect(most).toBe(1);
    expect(readMeanwhile).toEqual([{ n: 0 }]);
    expect(await db.query("SELECT count(*) AS n FROM notes")).toEqual([{ n: 5 }]);
    await db.close();
  });

  it("binds $n parameters in any order and list parameters through anyOf", async () => {
    const db = await openDatabase({ path: join(dir, "params.db"), migrations });
    await db.run("INSERT INTO notes (text) VALUES ($1), ($2), ($3)", ["x", "y", "z"]);
    expect(await db.query("SELECT $2 AS two, $1 AS one, $2 AS again", ["A", "B"])).toEqual([{ two: "B", one: "A", again: "B" }]);
    const picked = await db.query<{ text: string }>(`SELECT text FROM notes WHERE text ${db.dialect.anyOf("$1")} ORDER BY text`, [["z", "x", "nope"]]);
    expect(picked.map((r) => r.text)).toEqual(["x", "z"]);
    await db.close();
  });

  it("names a migration that fails, and keeps nothing of it", async () => {
    const path = join(dir, "bad-migration.db");
    await expect(openDatabase({ path, migrations: [...migrations, { id: "0002_bad", sql: "CREATE TABLE ok (a TEXT);\nCREATE TABLE broken (" }] })).rejects.toThrow(/migration 0002_bad failed/);
    const db = await openDatabase({ path, migrations });
    expect(await db.query("SELECT name FROM sqlite_master WHERE name = 'ok'")).toEqual([]);
    await db.close();
  });

  it("refuses a migration whose SQL SQLite refuses (a typo, an unknown column, a constraint its rows break), naming it, its statement and what to do, on one line", async () => {
    const path = join(dir, "typo-migration.db");
    const typo = { id: "0002_kind", sqlite: "ALTER TABLE notes ADD COLUMN kind TEXT NOT NULL DEFAUT ''", postgres: "ALTER TABLE notes ADD COLUMN kind TEXT NOT NULL DEFAULT ''" };
    const refused = await openDatabase({ path, migrations: [...migrations, typo] }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(StatusError);
    expect((refused as StatusError).code).toBe(Code.FAILED_PRECONDITION);
    expect((refused as StatusError).message).toBe(
      `migration 0002_kind failed: near "DEFAUT": syntax error (statement "ALTER TABLE notes ADD COLUMN kind TEXT NOT NULL DEFAUT ''"), on SQLite; ` +
        "it was rolled back, nothing of it is applied. Correct its sqlite SQL (or the rows it trips on) and start again",
    );
    const db = await openDatabase({ path, migrations });
    await db.run("INSERT INTO notes (text) VALUES ('a'), ('a')");
    await db.close();
    const unique = { id: "0002_unique", sql: "CREATE TABLE tags (name TEXT);\nCREATE UNIQUE INDEX notes_text ON notes (text)" };
    await expect(openDatabase({ path, migrations: [...migrations, unique] })).rejects.toMatchObject({
      code: Code.FAILED_PRECONDITION,
      message: expect.stringMatching(/^migration 0002_unique failed: UNIQUE constraint failed: notes\.text \(statement "CREATE UNIQUE INDEX notes_text ON notes \(text\)"\), on SQLite; .* Correct its SQL \(or/),
    });
    const again = await openDatabase({ path, migrations });
    expect(await again.query("SELECT name FROM sqlite_master WHERE name IN ('tags', 'notes_text')")).toEqual([]);
    await again.close();
  });

  it("runs a migration marked to run outside a transaction in one, as any other, and refuses one it could not run so on PostgreSQL before migrating", async () => {
    const path = join(dir, "outside-transaction.db");
    const byText = { id: "0002_by_text", transaction: false, sqlite: "CREATE INDEX notes_by_text ON notes (text)", postgres: "CREATE INDEX CONCURRENTLY IF NOT EXISTS notes_by_text ON notes (text)" };
    const twoStatements = { id: "0003_two", transaction: false, sql: "CREATE TABLE a (x TEXT); CREATE TABLE b (x TEXT)" };
    const unnamed = { id: "0003_unnamed", transaction: false, sqlite: "SELECT 1", postgres: "CREATE INDEX CONCURRENTLY ON notes (text)" };
    const notIfNotExists = { id: "0003_again", transaction: false, sqlite: "SELECT 1", postgres: "CREATE UNIQUE INDEX CONCURRENTLY notes_unique ON notes (text)" };
    await expect(openDatabase({ path, migrations: [...migrations, byText, twoStatements] })).rejects.toThrow(/^migration 0003_two runs outside a transaction, so it must be one statement; it has 2$/);
    for (const refused of [unnamed, notIfNotExists]) {
      await expect(openDatabase({ path, migrations: [...migrations, byText, refused] })).rejects.toThrow(`migration ${refused.id}: write CREATE INDEX CONCURRENTLY IF NOT EXISTS <name> ON <table>`);
    }
    // Refused before anything was migrated.
    const fresh = new BetterSqlite3(path);
    expect(fresh.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all()).toEqual([]);
    fresh.close();
    const db = await openDatabase({ path, migrations: [...migrations, byText] });
    expect(await db.query("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'notes_by_text'")).toEqual([{ name: "notes_by_text" }]);
    expect(await db.query("SELECT id FROM schema_migrations ORDER BY id")).toEqual([{ id: "0001_notes" }, { id: "0002_by_text" }]);
    await db.close();
  });

  it("ends a transaction whose COMMIT fails (a deferred constraint), so the next one runs", async () => {
    const db = await openDatabase({
      path: join(dir, "failed-commit.db"),
      migrations: [
        {
          id: "0001_deferred",
          sql: "CREATE TABLE parents (id TEXT PRIMARY KEY);\nCREATE TABLE children (parent TEXT NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)",
        },
      ],
    });
    // The foreign key is checked at COMMIT, which fails.
    await expect(db.transaction((tx) => tx.run("INSERT INTO children (parent) VALUES ('none')"))).rejects.toThrow(/FOREIGN KEY constraint failed/);
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO parents (id) VALUES ('p')");
      await tx.run("INSERT INTO children (parent) VALUES ('p')");
    });
    expect(await db.query("SELECT parent FROM children")).toEqual([{ parent: "p" }]);
    await db.close();
  });

  it("checkpoints after commits, never inside one, and bounds the log when the event loop does not turn", async () => {
    const path = join(dir, "checkpoint.db");
    (await openDatabase({ path, migrations })).close();
    const db = openSqlite(path);
    expect(db.writer.pragma("wal_autocheckpoint", { simple: true })).toBe(0);
    const size = (file: string) => statSync(file).size;
    const before = size(path);
    // 2 MB in 200 transactions, the event loop turning between them: well under SQLite's own 1,000-page threshold.
    const text = "x".repeat(10_000);
    for (let i = 0; i < 200; i++) {
      await db.transaction((tx) => tx.run("INSERT INTO notes (text) VALUES ($1)", [text]));
      await new Promise((r) => setImmediate(r));
    }
    for (let waited = 0; size(path) < before + 2_000_000 && waited < 5_000; waited += 20) await new Promise((r) => setTimeout(r, 20));
    expect(size(path)).toBeGreaterThan(before + 2_000_000);
    // A loop that never lets the event loop turn: the committing connection checkpoints every 1,000 commits itself.
    for (let i = 0; i < 3_000; i++) await db.transaction((tx) => tx.run("INSERT INTO notes (text) VALUES ($1)", [text]));
    // About 1,000 commits of 4 pages each at most; without the bound it would hold all 3,000 (49 MB).
    expect(size(`${path}-wal`)).toBeLessThan(30_000_000);
    expect(await db.query("SELECT count(*) AS n FROM notes")).toEqual([{ n: 3_200 }]);
    await db.close();
  });
  it("starts the log again under steady writes: it never grows past about SQLite's own 1,000-page threshold", async () => {
    const path = join(dir, "steady.db");
    (await openDatabase({ path, migrations })).close();
    const db = openSqlite(path);
    const text = "x".repeat(2_000);
    let largest = 0;
    const salts = new Set<string>();
    // 9,000 commits, the event loop turning between them, so that some always land while a checkpoint flushes.
    for (let i = 0; i < 9_000; i++) {
      await db.transaction((tx) => tx.run("INSERT INTO notes (text) VALUES ($1)", [text]));
      if (i % 100 === 0) {
        largest = Math.max(largest, statSync(`${path}-wal`).size);
        salts.add(readFileSync(`${path}-wal`).subarray(16, 24).toString("hex"));
      }
      await new Promise((r) => setImmediate(r));
    }
    largest = Math.max(largest, statSync(`${path}-wal`).size);
    // Each start of the log gives it new salts. Without a rewind the log holds all 9,000 commits (about 22 MB here).
    expect(salts.size).toBeGreaterThan(2);
    expect(largest).toBeLessThan(16_000_000);
    expect(await db.query("SELECT count(*) AS n FROM notes")).toEqual([{ n: 9_000 }]);
    await db.close();
  });

  it("starts the log again during a burst of transactions queued at once", async () => {
    const path = join(dir, "burst.db");
    (await openDatabase({ path, migrations })).close();
    const db = openSqlite(path);
    const salts = new Set<string>();
    let largest = 0;
    await Promise.all(
      Array.from({ length: 5_000 }, (_, i) =>
        db.transaction((tx) => tx.run("INSERT INTO notes (text) VALUES ($1)", ["y".repeat(2_000)])).then(() => {
          if (i % 250 === 0) {
            salts.add(readFileSync(`${path}-wal`).subarray(16, 24).toString("hex"));
            largest = Math.max(largest, statSync(`${path}-wal`).size);
          }
        }),
      ),
    );
    expect(await db.query("SELECT count(*) AS n FROM notes")).toEqual([{ n: 5_000 }]);
    await db.close();
    // A rewind waits for no queued transaction: the log starts again several times.
    expect(salts.size).toBeGreaterThan(2);
    expect(largest).toBeLessThan(16_000_000);
  });

  it("checkpoints a database opened through a symbolic link (SQLite keeps the log beside the file itself)", async () => {
    const target = join(dir, "linked-target.db");
    const link = join(dir, "linked.db");
    (await openDatabase({ path: target, migrations })).close();
    symlinkSync(target, link);
    const failures: Error[] = [];
    const db = openSqlite(link, { onCheckpointFailure: (err) => failures.push(err) });
    const before = statSync(target).size;
    for (let i = 0; i < 50; i++) await db.transaction((tx) => tx.run("INSERT INTO notes (text) VALUES ($1)", ["x".repeat(10_000)]));
    for (let waited = 0; statSync(target).size < before + 500_000 && waited < 5_000; waited += 20) await new Promise((r) => setTimeout(r, 20));
    expect(failures).toEqual([]);
    expect(statSync(target).size).toBeGreaterThan(before + 500_000);
    await db.close();
  });

  it("can be closed again when a connection refused to close, and keeps its files and locks until then", async () => {
    const path = join(dir, "busy-close.db");
    (await openDatabase({ path, migrations })).close();
    const db = openSqlite(path);
    await db.transaction((tx) => tx.run("INSERT INTO notes (text) VALUES ('a'), ('b')"));
    // A statement still open on the writing connection: better-sqlite3 refuses to close it.
    const rows = db.writer.prepare("SELECT text FROM notes").iterate();
    rows.next();
    await expect(db.close()).rejects.toThrow(/busy/i);
    expect(db.writer.open).toBe(true);
    rows.return?.();
    await db.close();
    expect(db.writer.open).toBe(false);
    expect(existsSync(`${path}-wal`)).toBe(false);
  });

  it("keeps every acknowledged commit and a sound file when the process is killed while it checkpoints", async () => {
    const path = join(dir, "killed.db");
    // Commits of 8 KB rows, the event loop turning between them so that checkpoints run; each id is printed once committed.
    const script = `
      const { openSqlite } = await import("./platform/sql/sqlite.ts");
      const db = openSqlite(${JSON.stringify(path)});
      await db.run("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)");
      const text = "x".repeat(8000);
      for (let id = 1; ; id++) {
        await db.transaction((tx) => tx.run("INSERT INTO notes (id, text) VALUES ($1, $2)", [id, text]));
        process.stdout.write(id + "\\n");
        if (id % 4 === 0) await new Promise((r) => setImmediate(r));
      }`;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    let acknowledged = 0;
    let stderr = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    await new Promise<void>((resolve, reject) => {
      child.on("exit", () => reject(new Error(`the writer exited: ${stderr}`)));
      child.stdout.on("data", (chunk: Buffer) => {
        const ids = chunk.toString().trim().split("\n");
        acknowledged = Number(ids.at(-1));
        if (acknowledged >= 3_000) resolve();
      });
    });
    child.removeAllListeners("exit");
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    const db = new BetterSqlite3(path);
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
      const { n, top } = db.prepare("SELECT count(*) AS n, max(id) AS top FROM notes").get() as { n: number; top: number };
      expect(n).toBe(top);
      expect(n).toBeGreaterThanOrEqual(acknowledged);
    } finally {
      db.close();
    }
  });
});

describe("the Postgres driver", () => {
  it("is loaded only once a Postgres database is opened: a service on SQLite never loads it", () => {
    const script = `
      import { createRequire } from "node:module";
      const loaded = () => Object.keys(createRequire(import.meta.url).cache).some((k) => /node_modules\\/pg\\//.test(k));
      await import("./services/orders/app.ts");
      await import("./services/products/app.ts");
      const { openDatabase } = await import("./platform/sql/index.ts");
      const db = await openDatabase({ path: ":memory:", migrations: [] });
      await db.query("SELECT 1");
      await db.close();
      const onSqlite = loaded();
      const failed = await openDatabase({ path: "postgres://127.0.0.1:9/none", migrations: [] }).then(() => "opened", (err) => err.code);
      console.log(JSON.stringify({ onSqlite, failed, onPostgres: loaded() }));`;
    const child = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", timeout: 60_000 });
    expect(child.stderr).toBe("");
    // 14 is UNAVAILABLE: nothing listens on port 9.
    expect(JSON.parse(child.stdout.trim().split("\n").at(-1)!)).toEqual({ onSqlite: false, failed: 14, onPostgres: true });
  });
});

describe("a PostgreSQL server that accepts connections and never answers", () => {
  it("fails queries, transactions, the relay's lock and LISTEN as UNAVAILABLE once the connect timeout passes, and holds no pooled connection", async () => {
    const { createServer } = await import("node:net");
    const { openPostgres } = await import("./postgres.js");
    const { StatusError } = await import("../errors/index.js");
    const sockets = new Set<import("node:net").Socket>();
    const silent = createServer((socket) => void sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as import("node:net").AddressInfo;
    const db = openPostgres(`postgres://concord@127.0.0.1:${port}/none`, { poolSize: 2, connectTimeoutMs: 300 });
    const outcome = (work: Promise<unknown>) => {
      const started = performance.now();
      return work.then(
        () => ({ code: "resolved", ms: performance.now() - started }),
        (err: unknown) => ({ code: err instanceof StatusError ? err.code : `not a StatusError: ${String(err)}`, ms: performance.now() - started }),
      );
    };
    try {
      // More callers than pooled connections: each connection that timed out is given back, so the rest get theirs.
      const results = await Promise.all([
        outcome(db.query("SELECT 1")),
        outcome(db.transaction((tx) => tx.query("SELECT 1"))),
        outcome(db.query("SELECT 2")),
        outcome(db.tryLock(7)),
        outcome(db.listen("outbox", () => undefined)),
      ]);
      for (const r of results) {
        expect(r.code).toBe(14); // UNAVAILABLE
        expect(r.ms).toBeLessThan(10_000);
      }
      expect(db.pool.totalCount).toBe(0);
    } finally {
      await db.close();
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});

describe("redact", () => {
  it("shows a connection URL without its password, as the services and npm start print it", () => {
    expect(redact("postgres://shop:s3cret@db.internal:5432/orders?sslmode=require")).toBe("postgres://shop:***@db.internal:5432/orders?sslmode=require");
    expect(redact("postgres://postgres@127.0.0.1:54320/orders")).toBe("postgres://postgres@127.0.0.1:54320/orders");
    expect(redact("postgres://shop:s3cret@[bad")).not.toContain("s3cret");
    expect(redact("postgres://shop:s3/cret@db.internal/orders")).toBe("postgres://shop:***@db.internal/orders");
    expect(redact("postgres://shop@db.internal/orders?password=s3cret")).toBe("postgres://shop@db.internal/orders?password=***");
  });
});
