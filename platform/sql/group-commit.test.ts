import BetterSqlite3 from "better-sqlite3";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { openDatabase } from "./database.js";
import type { Database } from "./types.js";

const dir = tempDirForSuite();
const migrations = [
  { id: "0001_notes", sql: "CREATE TABLE notes (text TEXT NOT NULL)" },
  { id: "0002_parents", sql: "CREATE TABLE parents (id INTEGER PRIMARY KEY); CREATE TABLE children (parent INTEGER NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)" },
];

let opened = 0;
/** A database of its own, and a second connection on its file that sees only what is committed. */
async function fresh(): Promise<{ db: Database; committed: () => string[] }> {
  const path = join(dir, `group-${++opened}.db`);
  const db = await openDatabase({ path, migrations });
  const other = new BetterSqlite3(path, { readonly: true });
  onTestFinished(() => void other.close());
  const committed = () => (other.prepare("SELECT text FROM notes ORDER BY rowid").all() as Array<{ text: string }>).map((r) => r.text);
  return { db, committed };
}

const insert = (text: string) => (tx: { run(sql: string, params: string[]): Promise<number> }) => tx.run("INSERT INTO notes (text) VALUES ($1)", [text]);

describe("SQLite group commit", () => {
  it("commits transactions queued behind each other with one COMMIT, answering each only once it is committed", async () => {
    const { db, committed } = await fresh();
    const answered: string[] = [];
    const seenInB: string[][] = [];
    const afterCommitSaw: string[][] = [];
    const a = db.transaction(async (tx) => {
      await insert("a")(tx);
      tx.afterCommit(() => afterCommitSaw.push(committed()));
    });
    const b = db.transaction(async (tx) => {
      // a's work is done, but its transaction is still open for this one: not committed, not answered.
      seenInB.push(committed(), [...answered]);
      await insert("b")(tx);
    });
    const c = db.transaction(insert("c"));
    await Promise.all([a.then(() => answered.push("a")), b.then(() => answered.push("b")), c.then(() => answered.push("c"))]);
    expect(seenInB).toEqual([[], []]);
    // The callbacks a transaction asks for run once its writes are committed.
    expect(afterCommitSaw).toEqual([["a", "b", "c"]]);
    expect(committed()).toEqual(["a", "b", "c"]);
    // With nothing queued behind it, a transaction commits as soon as its work is done.
    await db.transaction(insert("alone"));
    expect(committed()).toEqual(["a", "b", "c", "alone"]);
    await db.close();
  });

  it("rolls back only the writes of a transaction that fails in a group, first or not", async () => {
    const { db, committed } = await fresh();
    const failing = (text: string) => async (tx: Parameters<Parameters<Database["transaction"]>[0]>[0]) => {
      await insert(text)(tx);
      throw new Error(`${text} failed`);
    };
    const results = await Promise.allSettled([
      db.transaction(failing("first")),
      db.transaction(insert("second")),
      db.transaction(failing("third")),
      db.transaction(insert("fourth")),
    ]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "fulfilled", "rejected", "fulfilled"]);
    expect((results[2] as PromiseRejectedResult).reason.message).toBe("third failed");
    expect(committed()).toEqual(["second", "fourth"]);
    await db.close();
  });

  it("fails every transaction of a group whose COMMIT fails, with its error, and writes none of them", async () => {
    const { db, committed } = await fresh();
    // A deferred foreign key is checked only at COMMIT: the orphan fails the whole group.
    const results = await Promise.allSettled([
      db.transaction(insert("before")),
      db.transaction((tx) => tx.run("INSERT INTO children (parent) VALUES (99)")),
      db.transaction(insert("after")),
    ]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "rejected"]);
    for (const r of results) expect((r as PromiseRejectedResult).reason.message).toMatch(/FOREIGN KEY constraint failed/);
    expect(committed()).toEqual([]);
    expect(await db.query("SELECT count(*) AS n FROM children")).toEqual([{ n: 0 }]);
    // The database goes on taking transactions.
    await db.transaction(insert("later"));
    expect(committed()).toEqual(["later"]);
    await db.close();
  });

  it("fails the transactions before one that ended the whole transaction (as SQLite does on a full disk), and writes none of them", async () => {
    const { db, committed } = await fresh();
    const results = await Promise.allSettled([
      db.transaction(insert("a")),
      db.transaction(async (tx) => {
        await insert("b")(tx);
        await tx.run("ROLLBACK");
        throw new Error("the whole transaction is gone");
      }),
      db.transaction(insert("c")),
    ]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "fulfilled"]);
    expect((results[0] as PromiseRejectedResult).reason.message).toBe("the whole transaction is gone");
    expect(committed()).toEqual(["c"]);
    await db.close();
  });

  it("commits a group left open for a transaction that is cancelled before its turn", async () => {
    const { db, committed } = await fresh();
    const cancel = new AbortController();
    const a = db.transaction(async (tx) => {
      await insert("a")(tx);
      cancel.abort(new Error("caller gone"));
    });
    const b = db.transaction(insert("b"), { signal: cancel.signal });
    await expect(b).rejects.toThrow("caller gone");
    await a;
    expect(committed()).toEqual(["a"]);
    await db.close();
  });

  it("commits the group before a statement run alone, which is committed when it is answered", async () => {
    const { db, committed } = await fresh();
    let seenAfterRun: string[] = [];
    const a = db.transaction(insert("a"));
    const run = db.run("INSERT INTO notes (text) VALUES ('run')").then(() => (seenAfterRun = committed()));
    const b = db.transaction(insert("b"));
    await Promise.all([a, run, b]);
    expect(seenAfterRun).toEqual(["a", "run"]);
    expect(committed()).toEqual(["a", "run", "b"]);
    await db.close();
  });
});
