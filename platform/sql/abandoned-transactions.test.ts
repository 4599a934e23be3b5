import pg from "pg";
import { describe, expect, it } from "vitest";
import { usePostgresServer } from "../../test/support/postgres.js";
import { Code, StatusError } from "../errors/index.js";
import { type Database, openDatabase } from "./index.js";

describe("a PostgreSQL transaction whose caller has gone", () => {
  const postgres = usePostgresServer();

  /** A database with rows 1 and 2 in `things`, and another client's transaction holding row 1 until `release`. */
  async function rowHeld(name: string, query = ""): Promise<{ db: Database; url: string; release: () => Promise<void>; close: () => Promise<void> }> {
    const url = await postgres().createDatabase(name);
    const db = await openDatabase({ path: `${url}${query}`, migrations: [], poolSize: 2 });
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    await db.run("CREATE TABLE things (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)");
    await db.run("INSERT INTO things VALUES (1, 0), (2, 0)");
    await holder.query("BEGIN");
    await holder.query("SELECT * FROM things WHERE id = 1 FOR UPDATE");
    return { db, url, release: async () => void (await holder.query("ROLLBACK")), close: async () => (await holder.end(), await db.close()) };
  }
  const addOne = (db: Database, id: number, options?: Parameters<Database["transaction"]>[1]) =>
    db.transaction(async (tx) => void (await tx.run("UPDATE things SET n = n + 1 WHERE id = $1", [id])), options);
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  /** How many sessions on the database at `url` wait on a lock, asked on a connection of its own (the pool's are taken). */
  const sessionsWaitingOnLocks = async (url: string): Promise<number> => {
    const observer = new pg.Client({ connectionString: url });
    await observer.connect();
    try {
      const { rows } = await observer.query("SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");
      return rows[0].waiting as number;
    } finally {
      await observer.end();
    }
  };

  it("has the statement it waits on cancelled, so its pooled connection serves other work at once", async () => {
    const { db, url, release, close } = await rowHeld("abandoned", "?statement_timeout=20000");
    try {
      const callers = [new AbortController(), new AbortController()];
      const waiting = callers.map((c) => addOne(db, 1, { signal: c.signal }).then(() => "committed", (err: unknown) => err));
      // Both wait on the row before their callers go: a fixed pause of 300 ms let a loaded machine abort them before
      // their statements were sent, and the test passed without the cancel it is about.
      await expect.poll(() => sessionsWaitingOnLocks(url), { timeout: 10_000 }).toBe(2);
      for (const c of callers) c.abort(new Error("the caller has gone"));
      // Both pooled connections waited on the row until the statement timeout, 20 s, and this waited with them.
      const started = Date.now();
      await addOne(db, 2);
      expect(Date.now() - started).toBeLessThan(3_000);
      for (const outcome of await Promise.all(waiting)) expect(outcome).not.toBe("committed");
      await release();
      // Nothing of the abandoned transactions was written, and the row is free again.
      expect(await db.query("SELECT id, n FROM things ORDER BY id")).toEqual([{ id: 1, n: 0 }, { id: 2, n: 1 }]);
      await addOne(db, 1);
      const [{ waiting: stillWaiting }] = await db.query<{ waiting: number }>("SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");
      expect(stillWaiting).toBe(0);
    } finally {
      await close();
    }
  }, 60_000);

  it("gives up a row held for longer than its lockWaitMs, ABORTED with nothing written, giving its connection back in slices meanwhile (a call's transaction)", async () => {
    const { db, release, close } = await rowHeld("lock_wait_slices");
    try {
      // Six callers for the held row on a pool of two, each willing to wait 3 s.
      const settled: string[] = [];
      const waiting = Array.from({ length: 6 }, (_, i) =>
        addOne(db, 1, { lockWaitMs: 3_000 }).then(
          () => "committed",
          (err: unknown) => (settled.push(`waiter ${i}`), err),
        ),
      );
      await pause(100);
      // Another caller's work is served between their slices: it queued for a connection behind four waiters,
      // which each held theirs for the whole 3 s before, so that it came after two of them had given up.
      await addOne(db, 2);
      expect(settled, "no waiter had given up when the other row's change committed").toEqual([]);
      for (const outcome of await Promise.all(waiting)) {
        expect(outcome).toBeInstanceOf(StatusError);
        expect((outcome as StatusError).code).toBe(Code.ABORTED);
        expect((outcome as StatusError).message).toBe(
          "a row or lock this change needs was held by another session for more than 3000 ms (a long transaction, a migration); nothing was changed, try again",
        );
      }
      await release();
      expect(await db.query("SELECT id, n FROM things ORDER BY id")).toEqual([{ id: 1, n: 0 }, { id: 2, n: 1 }]);
      await addOne(db, 1, { lockWaitMs: 3_000 });
    } finally {
      await close();
    }
  }, 60_000);

  it("runs to its end once started when told to finish (a consumer's batch in flight as its service stops)", async () => {
    const { db, release, close } = await rowHeld("finishing");
    try {
      const stopping = new AbortController();
      const batch = addOne(db, 1, { signal: stopping.signal, finishOnceStarted: true });
      await pause(300);
      stopping.abort(new Error("stopping"));
      await pause(300);
      await release();
      await batch;
      expect(await db.query("SELECT id, n FROM things ORDER BY id")).toEqual([{ id: 1, n: 1 }, { id: 2, n: 0 }]);
    } finally {
      await close();
    }
  }, 60_000);
});
