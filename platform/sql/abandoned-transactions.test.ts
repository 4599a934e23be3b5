import pg from "pg";
import { describe, expect, it } from "vitest";
import { usePostgresServer } from "../../test/support/postgres.js";
import { openDatabase } from "./index.js";

describe("a PostgreSQL transaction whose caller has gone", () => {
  const postgres = usePostgresServer();

  it("has the statement it waits on cancelled, so its pooled connection serves other work at once", async () => {
    const url = await postgres().createDatabase("abandoned");
    const db = await openDatabase({ path: `${url}?statement_timeout=20000`, migrations: [], poolSize: 2 });
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      await db.run("CREATE TABLE things (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)");
      await db.run("INSERT INTO things VALUES (1, 0), (2, 0)");
      // Another client's transaction holds row 1 for longer than any caller waits.
      await holder.query("BEGIN");
      await holder.query("SELECT * FROM things WHERE id = 1 FOR UPDATE");
      const callers = [new AbortController(), new AbortController()];
      const waiting = callers.map((c) =>
        db.transaction(async (tx) => {
          await tx.query("SELECT * FROM things WHERE id = 1 FOR UPDATE");
          await tx.run("UPDATE things SET n = n + 1 WHERE id = 1");
        }, { signal: c.signal }).then(() => "committed", (err: unknown) => err),
      );
      await new Promise((r) => setTimeout(r, 300));
      for (const c of callers) c.abort(new Error("the caller has gone"));
      // Both pooled connections waited on the row until the statement timeout, 20 s, and this waited with them.
      const started = Date.now();
      await db.transaction(async (tx) => void (await tx.run("UPDATE things SET n = n + 1 WHERE id = 2")));
      expect(Date.now() - started).toBeLessThan(3_000);
      for (const outcome of await Promise.all(waiting)) expect(outcome).not.toBe("committed");
      await holder.query("ROLLBACK");
      // Nothing of the abandoned transactions was written, and the row is free again.
      expect(await db.query("SELECT id, n FROM things ORDER BY id")).toEqual([{ id: 1, n: 0 }, { id: 2, n: 1 }]);
      await db.transaction(async (tx) => void (await tx.run("UPDATE things SET n = n + 1 WHERE id = 1")));
      const [{ waiting: stillWaiting }] = await db.query<{ waiting: string }>("SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");
      expect(Number(stillWaiting)).toBe(0);
    } finally {
      await holder.end();
      await db.close();
    }
  }, 60_000);

  it("runs to its end once started when told to finish (a consumer's batch in flight as its service stops)", async () => {
    const url = await postgres().createDatabase("finishing");
    const db = await openDatabase({ path: url, migrations: [], poolSize: 2 });
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      await db.run("CREATE TABLE things (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)");
      await db.run("INSERT INTO things VALUES (1, 0)");
      await holder.query("BEGIN");
      await holder.query("SELECT * FROM things WHERE id = 1 FOR UPDATE");
      const stopping = new AbortController();
      const batch = db.transaction(async (tx) => void (await tx.run("UPDATE things SET n = n + 1 WHERE id = 1")), { signal: stopping.signal, finishOnceStarted: true });
      await new Promise((r) => setTimeout(r, 300));
      stopping.abort(new Error("stopping"));
      await new Promise((r) => setTimeout(r, 300));
      await holder.query("ROLLBACK");
      await batch;
      expect(await db.query("SELECT n FROM things")).toEqual([{ n: 1 }]);
    } finally {
      await holder.end();
      await db.close();
    }
  }, 60_000);
});
