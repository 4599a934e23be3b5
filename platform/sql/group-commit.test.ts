import BetterSqlite3 from "better-sqlite3";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { openDatabase } from "./database.js";
import type { FlushedFile } from "./sqlite-checkpointer.js";
import { openSqlite } from "./sqlite.js";
import type { Database } from "./types.js";
import { createOutbox, onOutboxCommit, outboxMigrations } from "../events/outbox.js";
import { sampleStream } from "../../test/support/sample-events.js";

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

type Tx = Parameters<Parameters<Database["transaction"]>[0]>[0];
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
        // As SQLite itself ends it (a transaction's own ROLLBACK is refused).
        (db as Database & { writer: BetterSqlite3.Database }).writer.exec("ROLLBACK");
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

  it("answers a committed transaction whose after-commit callback throws, alone or in a group, runs its other callbacks, and tells of the failure once", async () => {
    const failures: unknown[] = [];
    const path = join(dir, `group-${++opened}.db`);
    const db = await openDatabase({ path, migrations, onAfterCommitFailure: (err) => failures.push(err) });
    const other = new BetterSqlite3(path, { readonly: true });
    onTestFinished(() => void other.close());
    const committed = () => (other.prepare("SELECT text FROM notes ORDER BY rowid").all() as Array<{ text: string }>).map((r) => r.text);
    const ran: string[] = [];
    const throwing = (text: string) => async (tx: Parameters<Parameters<Database["transaction"]>[0]>[0]) => {
      await insert(text)(tx);
      tx.afterCommit(() => {
        throw new Error(`${text}'s callback failed`);
      });
      tx.afterCommit(() => ran.push(`${text}'s second callback`));
      return `${text} done`;
    };
    expect(await db.transaction(throwing("alone"))).toBe("alone done");
    const grouped = await Promise.allSettled([db.transaction(insert("a")), db.transaction(throwing("b")), db.transaction(insert("c"))]);
    expect(grouped.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled"]);
    expect((grouped[1] as PromiseFulfilledResult<string>).value).toBe("b done");
    // A callback that returns a promise which rejects is told of too, instead of rejecting unheard.
    await db.transaction(async (tx) => {
      await insert("async")(tx);
      tx.afterCommit((async () => {
        throw new Error("async's callback failed");
      }) as () => void);
    });
    await expect.poll(() => failures.length).toBe(3);
    expect(failures.map((err) => (err as Error).message)).toEqual(["alone's callback failed", "b's callback failed", "async's callback failed"]);
    expect(ran).toEqual(["alone's second callback", "b's second callback"]);
    expect(committed()).toEqual(["alone", "a", "b", "c", "async"]);
    await db.close();
  });

  it("runs a transaction an after-commit callback starts after the group it follows, and tells of one that fails", async () => {
    const failures: unknown[] = [];
    const path = join(dir, `group-${++opened}.db`);
    const db = await openDatabase({ path, migrations, onAfterCommitFailure: (err) => failures.push(err) });
    const started: Promise<unknown>[] = [];
    const seenByFollower: string[][] = [];
    const results = await Promise.allSettled([
      db.transaction(async (tx: Tx) => {
        await insert("a")(tx);
        tx.afterCommit(() => {
          started.push(
            db.transaction(async (follower: Tx) => {
              seenByFollower.push((await follower.query<{ text: string }>("SELECT text FROM notes ORDER BY rowid")).map((r) => r.text));
              await insert("after a")(follower);
            }),
          );
        });
      }),
      db.transaction(async (tx: Tx) => {
        await insert("b")(tx);
        // Returned, so that its failure is told of.
        tx.afterCommit(() => db.transaction((follower: Tx) => follower.run("INSERT INTO nowhere VALUES (1)")) as unknown as void);
      }),
      db.transaction(insert("c")),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled"]);
    await Promise.all(started);
    await expect.poll(() => failures.length).toBe(1);
    expect((failures[0] as Error).message).toMatch(/no such table: nowhere/);
    expect(seenByFollower).toEqual([["a", "b", "c"]]);
    expect(await db.query("SELECT text FROM notes ORDER BY rowid")).toEqual([{ text: "a" }, { text: "b" }, { text: "c" }, { text: "after a" }]);
    await db.close();
  });

  it("answers and commits a group left open across the event loop's turns when closed meanwhile, then closes", async () => {
    const { db, committed } = await fresh();
    let goOn!: () => void;
    const later = new Promise<void>((resolve) => (goOn = resolve));
    const answered: string[] = [];
    const a = db.transaction(async (tx: Tx) => {
      await insert("a")(tx);
      await later;
    }).then(() => answered.push("a"));
    const b = db.transaction(insert("b")).then(() => answered.push("b"));
    let closed = false;
    const closing = db.close().then(() => (closed = true));
    // Asked for again (a stop while a start-up's failure closes it, say), it is done only once the first is.
    const closingAgain = db.close().then(() => [...answered]);
    // The event loop turns with the group open: the close waits for it.
    await new Promise((resolve) => setImmediate(resolve));
    expect(closed).toBe(false);
    goOn();
    await Promise.all([a, b, closing]);
    expect(answered).toEqual(["a", "b"]);
    expect(await closingAgain).toEqual(["a", "b"]);
    expect(committed()).toEqual(["a", "b"]);
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

describe("SQLite group commit, the hard cases", () => {
  /** A row that fills a database made `nearlyFull`. */
  const big = "x".repeat(64 * 1024);
  /** A database of its own that takes two pages more (SQLITE_FULL then), and its writing connection. */
  async function nearlyFull(): Promise<Awaited<ReturnType<typeof fresh>> & { writer: BetterSqlite3.Database }> {
    const opened = await fresh();
    const writer = (opened.db as Database & { writer: BetterSqlite3.Database }).writer;
    writer.pragma(`max_page_count = ${(writer.pragma("page_count", { simple: true }) as number) + 2}`);
    return { ...opened, writer };
  }

  it("keeps the other transactions' writes when one, joining the group, fails in a nested savepoint or catches a statement error", async () => {
    const { db, committed } = await fresh();
    const results = await Promise.allSettled([
      db.transaction(insert("first")),
      // A savepoint that fails and is caught: its writes go, the rest of the transaction stays.
      db.transaction(async (tx: Tx) => {
        await insert("outer")(tx);
        await tx
          .savepoint(async (sp) => {
            await insert("inner lost")(sp);
            throw new Error("inner failed");
          })
          .catch(() => undefined);
        await tx.savepoint(insert("inner kept"));
      }),
      // A statement error caught by the work: the transaction cannot commit, and only its writes go.
      db.transaction(async (tx: Tx) => {
        await insert("caught")(tx);
        await tx.run("INSERT INTO nowhere VALUES (1)").catch(() => undefined);
      }),
      // The same, inside a savepoint that the work lets fail.
      db.transaction(async (tx: Tx) => {
        await insert("caught in savepoint")(tx);
        await tx.savepoint(async (sp) => {
          await sp.run("INSERT INTO nowhere VALUES (1)").catch(() => undefined);
        });
      }),
      db.transaction(insert("last")),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "rejected", "rejected", "fulfilled"]);
    expect((results[2] as PromiseRejectedResult).reason.name).toBe("CaughtStatementError");
    expect((results[3] as PromiseRejectedResult).reason.name).toBe("CaughtStatementError");
    expect(committed()).toEqual(["first", "outer", "inner kept", "last"]);
    await db.close();
  });

  it("refuses a statement run through a transaction after its work has ended (not awaited), which would otherwise run in the next one's", async () => {
    const { db, committed } = await fresh();
    /** What each statement not awaited came to, its error taken at once. */
    const strays: Promise<unknown>[] = [];
    const stray = (running: Promise<unknown>) => void strays.push(running.then((result) => result, (err: unknown) => err));
    const results = await Promise.allSettled([
      db.transaction(insert("first")),
      // A savepoint not awaited: its SAVEPOINT would go after this work's rollback, into the next transaction's unit.
      db.transaction(async (tx: Tx) => {
        await insert("failed")(tx);
        stray(tx.savepoint(insert("stray savepoint")));
        throw new Error("failed");
      }),
      // A statement run after something outside the database, not awaited, by work that has returned.
      db.transaction(async (tx: Tx) => {
        await insert("kept")(tx);
        stray(new Promise((resolve) => setImmediate(resolve)).then(() => insert("stray statement")(tx)));
      }),
      db.transaction(async (tx: Tx) => {
        await new Promise((resolve) => setImmediate(resolve));
        await new Promise((resolve) => setImmediate(resolve));
        await insert("last")(tx);
      }),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "fulfilled"]);
    const outcomes = await Promise.all(strays);
    expect(committed()).toEqual(["first", "kept", "last"]);
    expect(outcomes).toHaveLength(2);
    for (const outcome of outcomes) expect(outcome).toMatchObject({ message: expect.stringMatching(/^the transaction's work had ended/) });
    await db.close();
  });

  it("refuses transaction control run through a transaction or the database, which would commit the group early or leave the writer inside a transaction", async () => {
    const { db, committed } = await fresh();
    const caught: unknown[] = [];
    const results = await Promise.allSettled([
      db.transaction(insert("first")),
      // Its COMMIT would commit the group so far, and the group's own COMMIT would then fail every caller in it.
      db.transaction(async (tx: Tx) => {
        await insert("second")(tx);
        await tx.run("COMMIT");
      }),
      // Refused, not run: work that catches the refusal goes on, and what it wrote is kept.
      db.transaction(async (tx: Tx) => {
        await insert("third")(tx);
        for (const control of ["/* the group's */ -- own\n  release savepoint concord_unit", "ROLLBACK", "savepoint mine", "END TRANSACTION", "BEGIN"]) {
          await tx.query(control).catch((err: unknown) => caught.push(err));
        }
      }),
      db.transaction(insert("last")),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "fulfilled"]);
    expect((results[1] as PromiseRejectedResult).reason.message).toMatch(/^COMMIT was refused, nothing run: a transaction is begun by the database's transaction\(\)/);
    expect(caught.map((err) => (err as Error).message.split(" was refused")[0])).toEqual(["RELEASE", "ROLLBACK", "SAVEPOINT", "END", "BEGIN"]);
    // Through the database, outside any transaction: a BEGIN would hold the writer inside one for good.
    await expect(db.run("BEGIN IMMEDIATE")).rejects.toThrow(/^BEGIN was refused, nothing run/);
    await expect(db.query("commit")).rejects.toThrow(/^COMMIT was refused, nothing run/);
    await expect(db.runAlone("SAVEPOINT x", { statementTimeoutMs: 0 })).rejects.toThrow(/^SAVEPOINT was refused/);
    await db.transaction(insert("after"));
    expect(committed()).toEqual(["first", "third", "last", "after"]);
    // Words that only contain a control word are statements like any other.
    await db.run("CREATE TABLE ended (commit_count INTEGER)");
    await db.transaction((tx: Tx) => tx.run("INSERT INTO ended (commit_count) VALUES (1)"));
    expect(await db.query("SELECT commit_count FROM ended")).toEqual([{ commit_count: 1 }]);
    await db.close();
  });

  it("fails, keeping none of its writes, a transaction whose work returns while a savepoint of it still runs", async () => {
    const { db, committed } = await fresh();
    let savepointOutcome: unknown;
    let goOn!: () => void;
    const later = new Promise<void>((resolve) => (goOn = resolve));
    const results = await Promise.allSettled([
      db.transaction(insert("first")),
      db.transaction(async (tx: Tx) => {
        await insert("outer")(tx);
        // Not awaited: its first statement runs inside this transaction, its second after the work has returned.
        void tx
          .savepoint(async (sp) => {
            await insert("inner 1")(sp);
            await later;
            await insert("inner 2")(sp);
          })
          .catch((err: unknown) => (savepointOutcome = err));
        await new Promise((resolve) => setImmediate(resolve));
        return "returned";
      }),
      db.transaction(insert("last")),
    ]);
    goOn();
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect((results[1] as PromiseRejectedResult).reason.message).toMatch(/^a savepoint was still running when the transaction's work returned/);
    expect(committed()).toEqual(["first", "last"]);
    await expect.poll(() => savepointOutcome).toMatchObject({ message: expect.stringMatching(/^the transaction's work had ended/) });
    await db.close();
  });

  it("fails every transaction of a group whose COMMIT and ROLLBACK both fail, none left waiting, and takes transactions again once they can run", async () => {
    const { db, committed } = await fresh();
    const writer = (db as Database & { writer: BetterSqlite3.Database }).writer;
    // A query left open on the writing connection: better-sqlite3 refuses every other statement there, COMMIT and ROLLBACK too.
    let open: IterableIterator<unknown> | undefined;
    // Opened by the first transaction's work: the next, queued, cannot open its savepoint, and the group's COMMIT fails.
    const results = await Promise.allSettled([
      db.transaction(async (tx: Tx) => {
        await insert("a")(tx);
        open = writer.prepare("SELECT text FROM notes").iterate();
        open.next();
      }),
      db.transaction(insert("b")),
    ]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    for (const r of results) expect((r as PromiseRejectedResult).reason.message).toMatch(/busy/);
    open!.return?.();
    expect(committed()).toEqual([]);
    // A statement run alone is not run inside the transaction left open, to be answered and never committed.
    await db.run("INSERT INTO notes (text) VALUES ('run')");
    expect(committed()).toEqual(["run"]);
    await db.transaction(insert("later"));
    expect(committed()).toEqual(["run", "later"]);
    await db.close();
  });

  it("answers every transaction of a group that fills the database (SQLITE_FULL), and keeps the writes of none that failed", async () => {
    const { db, committed, writer } = await nearlyFull();
    const results = await Promise.allSettled([
      db.transaction(insert("small a")),
      db.transaction(insert(big)),
      db.transaction(insert("small c")),
    ]);
    // SQLite answers the full database by rolling back the whole transaction: the group's earlier transaction with it,
    // failed with that error; the one after starts a group of its own.
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "fulfilled"]);
    for (const r of results.slice(0, 2)) expect((r as PromiseRejectedResult).reason.code).toMatch(/^SQLITE_FULL/);
    expect(committed()).toEqual(["small c"]);
    writer.pragma("max_page_count = 1073741823");
    await db.transaction(insert("after"));
    expect(committed()).toEqual(["small c", "after"]);
    await db.close();
  });

  it("commits nothing a transaction runs after a statement error that rolled back the whole transaction, caught by its work", async () => {
    const { db, committed } = await nearlyFull();
    const catching = (name: string) => async (tx: Tx) => {
      await insert(big)(tx).catch(() => undefined);
      // SQLite has rolled the whole transaction back: these must not run on their own, outside it, and stay.
      await insert(`${name} after`)(tx);
      await tx.savepoint(insert(`${name} in savepoint`)).catch(() => undefined);
    };
    const alone = await Promise.allSettled([db.transaction(catching("alone"))]);
    // The same failure in a savepoint the work lets fail and goes on from: nothing of its scope was caught.
    const inSavepoint = await Promise.allSettled([
      db.transaction(async (tx: Tx) => {
        await tx.savepoint(insert(big)).catch(() => undefined);
        await insert("after the savepoint")(tx);
      }),
    ]);
    expect(inSavepoint[0].status).toBe("rejected");
    const grouped = await Promise.allSettled([db.transaction(insert("a")), db.transaction(catching("joined")), db.transaction(insert("c"))]);
    expect([...alone, ...grouped].map((r) => r.status)).toEqual(["rejected", "rejected", "rejected", "fulfilled"]);
    expect((grouped[0] as PromiseRejectedResult).reason.message).toMatch(/database or disk is full/);
    expect(committed()).toEqual(["c"]);
    await db.close();
  });

  it("answers and commits every one of many transactions queued at once, across groups of 64 and the log's rewinds", async () => {
    const { db, committed } = await fresh();
    // More than 1,000 transactions committed without a checkpoint ask for a rewind of the log, which holds the queued ones back.
    const n = 2_100;
    const afterCommitSaw: number[] = [];
    await Promise.all(
      Array.from({ length: n }, (_, i) =>
        db.transaction(async (tx: Tx) => {
          await insert(String(i))(tx);
          tx.afterCommit(() => {
            if (i % 500 === 0) afterCommitSaw.push(committed().length > i ? 1 : 0);
          });
        }),
      ),
    );
    expect(committed()).toEqual(Array.from({ length: n }, (_, i) => String(i)));
    expect(afterCommitSaw).toEqual([1, 1, 1, 1, 1]);
    await db.close();
  });

  it.each([
    ["commits and answers", false],
    ["fails (its COMMIT and ROLLBACK failing), holding writes back no longer than the rewind,", true],
  ])("%s a group left open when a rewind of the log, asked for by its length, holds writes back", async (_, commitFails) => {
    const path = join(dir, `group-${++opened}.db`);
    await (await openDatabase({ path, migrations })).close();
    // Each flush a checkpoint asks for waits, while `holding`, until the test lets it through.
    const flushes: FlushedFile[] = [];
    const waiting: (() => void)[] = [];
    let holding = true;
    const letThrough = () => {
      for (const go of waiting.splice(0)) go();
    };
    const db = openSqlite(path, {
      checkpointFlush: (_fd, file) => {
        flushes.push(file);
        return holding ? new Promise<void>((resolve) => waiting.push(resolve)) : Promise.resolve();
      },
    });
    onTestFinished(() => {
      holding = false;
      letThrough();
    });
    const other = new BetterSqlite3(path, { readonly: true });
    onTestFinished(() => void other.close());
    const committed = () => (other.prepare("SELECT text FROM notes WHERE length(text) < 10 ORDER BY rowid").all() as Array<{ text: string }>).map((r) => r.text);
    /** The log header's salts: SQLite changes them when it starts the log again. */
    const salts = () => readFileSync(`${path}-wal`).subarray(16, 24).toString("hex");
    // Over 1,000 pages in the log: once a checkpoint has seen them, the next commit asks for a rewind.
    await db.transaction(insert("x".repeat(5_000_000)));
    await expect.poll(() => flushes).toEqual(["log"]);
    // Committed while that checkpoint flushes the log: another checkpoint follows it.
    await db.transaction(insert("s1"));
    letThrough();
    await expect.poll(() => flushes).toEqual(["log", "database"]);
    letThrough();
    await expect.poll(() => flushes).toEqual(["log", "database", "log"]);
    const before = salts();
    // This commit asks for the rewind, which waits for the checkpoint under way, writes going on.
    await db.transaction(insert("t0"));
    let finishT1!: () => void;
    const t1Held = new Promise<void>((resolve) => (finishT1 = resolve));
    const answered: string[] = [];
    const seenByT2: string[][] = [];
    let t1Failed = () => {};
    const t1 = db.transaction(async (tx: Tx) => {
      await insert("t1")(tx);
      await t1Held;
      if (!commitFails) return;
      // A query left open on the writing connection: better-sqlite3 refuses the COMMIT there, and the ROLLBACK; closed once t1 is answered.
      const open = db.writer.prepare("SELECT text FROM notes").iterate();
      open.next();
      t1Failed = () => void open.return?.();
    }).then(() => answered.push("t1"), (err: Error) => {
      t1Failed();
      answered.push(`t1 failed: ${err.message}`);
    });
    const t2 = db.transaction(async (tx: Tx) => {
      seenByT2.push(committed());
      await insert("t2")(tx);
    }).then(() => answered.push("t2"));
    letThrough();
    await expect.poll(() => flushes).toEqual(["log", "database", "log", "database"]);
    holding = false;
    letThrough();
    // The checkpoint ends; the rewind holds writes back and waits for t1, which leaves its group open for t2, queued.
    await new Promise((resolve) => setImmediate(resolve));
    finishT1();
    await Promise.all([t1, t2]);
    if (commitFails) {
      // t1 failed with the COMMIT's error; the writes held back went on, t2 first, the transaction left open ended then.
      expect(answered).toEqual([expect.stringMatching(/^t1 failed: .*busy/), "t2"]);
      expect(seenByT2).toEqual([["s1", "t0"]]);
      expect(committed()).toEqual(["s1", "t0", "t2"]);
      await db.close();
      return;
    }
    // t1's group was committed before the rewind, and t2 started the log again after it, in a group of its own.
    expect(seenByT2).toEqual([["s1", "t0", "t1"]]);
    expect(answered).toEqual(["t1", "t2"]);
    expect(salts()).not.toBe(before);
    expect(committed()).toEqual(["s1", "t0", "t1", "t2"]);
    await db.close();
  });

  it("keeps every answered transaction whole, and nothing of one not answered or failed, when the process is killed with groups open", async () => {
    const path = join(dir, `group-${++opened}.db`);
    // 32 callers at once, each a transaction of two rows, the second in a savepoint; every seventh fails after both.
    // An id is printed once its transaction is answered. The event loop turns now and then, so that checkpoints run too.
    const script = `
      const { openSqlite } = await import("./platform/sql/sqlite.ts");
      const db = openSqlite(${JSON.stringify(path)});
      await db.run("CREATE TABLE pairs (id INTEGER NOT NULL, half INTEGER NOT NULL, text TEXT NOT NULL)");
      const text = "x".repeat(3000);
      let next = 1;
      const caller = async () => {
        for (;;) {
          const id = next++;
          const answered = await db.transaction(async (tx) => {
            await tx.run("INSERT INTO pairs (id, half, text) VALUES ($1, 1, $2)", [id, text]);
            await tx.savepoint((sp) => sp.run("INSERT INTO pairs (id, half, text) VALUES ($1, 2, $2)", [id, text]));
            if (id % 7 === 0) throw new Error("failed");
            return true;
          }).catch(() => false);
          if (answered) process.stdout.write(id + "\\n");
          if (id % 100 === 0) await new Promise((r) => setImmediate(r));
        }
      };
      await Promise.all(Array.from({ length: 32 }, caller));`;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    const acknowledged = new Set<number>();
    let stderr = "";
    let partial = "";
    child.stderr.on("data", (chunk) => (stderr += chunk));
    await new Promise<void>((resolve, reject) => {
      child.on("exit", () => reject(new Error(`the writer exited: ${stderr}`)));
      child.stdout.on("data", (chunk: Buffer) => {
        const lines = (partial + chunk.toString()).split("\n");
        partial = lines.pop()!;
        for (const line of lines) acknowledged.add(Number(line));
        if (acknowledged.size >= 5_000) resolve();
      });
    });
    child.removeAllListeners("exit");
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
    const db = new BetterSqlite3(path);
    onTestFinished(() => void db.close());
    expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    const halves = new Map((db.prepare("SELECT id, count(*) AS n FROM pairs GROUP BY id").all() as Array<{ id: number; n: number }>).map((r) => [r.id, r.n]));
    expect([...acknowledged].filter((id) => halves.get(id) !== 2)).toEqual([]);
    expect([...halves].filter(([id, n]) => n !== 2 || id % 7 === 0)).toEqual([]);
  });

  it("runs a read on an in-memory database, made while a group is open, after it: never amid its uncommitted writes", async () => {
    const db = await openDatabase({ path: ":memory:", migrations });
    let started!: () => void;
    const bStarted = new Promise<void>((resolve) => (started = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const a = db.transaction(insert("a"));
    const b = db.transaction(async (tx: Tx) => {
      started();
      await gate;
      await insert("b")(tx);
    });
    await bStarted;
    // a's write is in the open group, b's work under way: the read waits for both to be committed.
    const read = db.query<{ text: string }>("SELECT text FROM notes ORDER BY rowid");
    release();
    await Promise.all([a, b]);
    expect((await read).map((r) => r.text)).toEqual(["a", "b"]);
    await db.transaction(insert("c"));
    expect(await db.query("SELECT count(*) AS n FROM notes")).toEqual([{ n: 3 }]);
    await db.close();
  });

  it("commits what is queued when closed, answering every caller first", async () => {
    const { db, committed } = await fresh();
    const answered: string[] = [];
    const all = ["a", "b", "c"].map((t) => db.transaction(insert(t)).then(() => answered.push(t)));
    const closing = db.close();
    await Promise.all([...all, closing]);
    expect(answered).toEqual(["a", "b", "c"]);
    expect(committed()).toEqual(["a", "b", "c"]);
  });

  it("commits a transaction asked for before close, whatever is asked for after it, which is refused without joining its group", async () => {
    for (const path of [join(dir, `group-${++opened}.db`), ":memory:"]) {
      const db = await openDatabase({ path, migrations });
      const a = db.transaction(insert("a"));
      const closing = db.close();
      const b = db.transaction(insert("b"));
      const results = await Promise.allSettled([a, closing, b]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "rejected"]);
      expect((results[2] as PromiseRejectedResult).reason.message).toBe("the database is closed: no transaction starts on it");
      if (path === ":memory:") continue;
      const copy = new BetterSqlite3(path, { readonly: true });
      expect(copy.prepare("SELECT text FROM notes").all()).toEqual([{ text: "a" }]);
      copy.close();
    }
  });

  it("commits the group of a file deleted under it when the transaction it waits for is refused, and saves it", async () => {
    const path = join(dir, `group-${++opened}.db`);
    let saved: string | undefined;
    let told!: () => void;
    const detachedTold = new Promise<void>((resolve) => (told = resolve));
    const db = await openDatabase({
      path,
      migrations,
      onDetached: (d) => {
        if ("savedTo" in d) saved = d.savedTo;
        told();
      },
    });
    const { unlinkSync } = await import("node:fs");
    const a = db.transaction(async (tx: Tx) => {
      await insert("a")(tx);
      unlinkSync(path);
      // The readiness check sees it at once: writes are refused from now on (c, asked for now, at once), and the data is
      // saved once b, queued for the group, has been refused and has committed it.
      await expect(db.ping()).rejects.toThrow(/deleted or replaced/);
      c = db.transaction(insert("c"));
    });
    const b = db.transaction(insert("b"));
    let c!: Promise<number>;
    await expect(b).rejects.toThrow(/deleted or replaced/);
    await expect(c).rejects.toThrow(/deleted or replaced/);
    await a;
    await detachedTold;
    expect(saved).toBeDefined();
    const copy = new BetterSqlite3(saved!, { readonly: true });
    onTestFinished(() => void copy.close());
    expect(copy.prepare("SELECT text FROM notes ORDER BY rowid").all()).toEqual([{ text: "a" }]);
    await db.close();
  });

  it("writes the outbox events of exactly the grouped transactions that commit, and wakes the relay only once they are visible", async () => {
    const path = join(dir, `group-${++opened}.db`);
    const db = await openDatabase({ path, migrations: [...outboxMigrations, ...migrations] });
    const other = new BetterSqlite3(path, { readonly: true });
    onTestFinished(() => void other.close());
    const stored = () => (other.prepare("SELECT event_id FROM event_outbox ORDER BY seq").all() as Array<{ event_id: string }>).map((r) => r.event_id);
    const outbox = createOutbox({ db, source: "group-commit-test" });
    const { event } = sampleStream("group");
    // What another connection (the relay's reads) saw of a transaction's own event once it was answered, and at each wake.
    const unseenWhenAnswered: string[] = [];
    let wakes = 0;
    let unseenAtWake = 0;
    const off = onOutboxCommit(db, () => {
      wakes++;
      const visible = new Set(stored());
      unseenAtWake += answered.filter((id) => !visible.has(id)).length;
      return true;
    });
    onTestFinished(off);
    const answered: string[] = [];
    const results = await Promise.allSettled(
      Array.from({ length: 200 }, (_, i) =>
        db.transaction(async (tx: Tx) => {
          const kept = outbox.add(tx, event, { thingId: `t-${i}`, note: "" });
          tx.afterCommit(() => {
            if (!stored().includes(kept)) unseenWhenAnswered.push(kept);
          });
          // Every fifth adds a second event in a savepoint that fails, which drops it; every seventh fails whole.
          if (i % 5 === 0) {
            await tx
              .savepoint(async (sp) => {
                outbox.add(sp, event, { thingId: `dropped-${i}`, note: "" });
                throw new Error("dropped");
              })
              .catch(() => undefined);
          }
          if (i % 7 === 0) throw new Error(`${i} failed`);
          return kept;
        }).then((id) => {
          answered.push(id);
          return id;
        }),
      ),
    );
    const committedIds = results.filter((r) => r.status === "fulfilled").map((r) => (r as PromiseFulfilledResult<string>).value);
    expect(committedIds).toHaveLength(200 - Math.ceil(200 / 7));
    expect(stored()).toEqual(committedIds);
    expect(unseenWhenAnswered).toEqual([]);
    expect(wakes).toBeGreaterThan(0);
    expect(unseenAtWake).toBe(0);
    await db.close();
  });
});
