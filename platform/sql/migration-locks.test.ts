import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { usePostgresServer } from "../../test/support/postgres.js";
import { Code, StatusError } from "../errors/index.js";
import { type Database, type MigrationLockRetry, openDatabase } from "./index.js";

const notes = {
  id: "t_0001_notes",
  sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL); INSERT INTO notes (id, text) SELECT n, 'note ' || n FROM generate_series(1, 100) AS n",
};
const addKind = { id: "t_0002_notes_kind", sql: "ALTER TABLE notes ADD COLUMN kind TEXT NOT NULL DEFAULT 'plain'" };

describe("a PostgreSQL migration whose table another transaction holds", () => {
  const postgres = usePostgresServer();
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  });
  /** A session of its own, ended after the test. */
  const session = async (url: string): Promise<pg.Client> => {
    const client = new pg.Client({ connectionString: url });
    client.on("error", () => undefined);
    await client.connect();
    cleanups.push(() => client.end());
    return client;
  };
  const opened = (db: Database): Database => (cleanups.push(() => db.close()), db);
  /** A database with the notes table, and a session in a transaction that has read it (an ACCESS SHARE lock on it, kept). */
  const heldNotes = async (name: string) => {
    const url = await postgres().createDatabase(name);
    await (await openDatabase({ path: url, migrations: [notes] })).close();
    const holder = await session(url);
    await holder.query("BEGIN");
    await holder.query("SELECT count(*) FROM notes");
    return { url, holder, observer: await session(url) };
  };
  /** Resolves once a statement waits in the queue for a lock on `table`. */
  const queuedOn = (observer: pg.Client, table: string) =>
    expect
      .poll(async () => (await observer.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks WHERE relation = to_regclass($1) AND NOT granted", [table])).rows[0].n, {
        interval: 10,
      })
      .toBeGreaterThan(0);
  const hasKind = async (observer: pg.Client) =>
    (await observer.query("SELECT 1 FROM information_schema.columns WHERE table_name = 'notes' AND column_name = 'kind'")).rowCount === 1;
  const recorded = async (observer: pg.Client, id: string) => (await observer.query<{ n: number }>("SELECT count(*)::int AS n FROM schema_migrations WHERE id = $1", [id])).rows[0].n;

  it("gives the table up at its lock timeout, so queries on it go on, says so, and applies the migration once the lock is free", async () => {
    const { url, holder, observer } = await heldNotes("lock_retry");
    const retries: MigrationLockRetry[] = [];
    let retried!: () => void;
    const firstRetry = new Promise<void>((resolve) => (retried = resolve));
    const opening = openDatabase({
      path: url,
      migrations: [notes, addKind],
      migrationLockTimeoutMs: 1_000,
      onMigrationLockRetry(retry) {
        retries.push(retry);
        retried();
      },
    }).then(opened);
    opening.catch(() => undefined);
    await queuedOn(observer, "notes");
    // Queries that come after the ALTER TABLE queue behind it: they wait at most for its lock timeout, not for the holder.
    const reader = await session(url);
    const startedAt = performance.now();
    const reading = reader.query("SELECT count(*)::int AS n FROM notes").then(({ rows }) => rows[0].n as number);
    // The holder keeps its transaction open until the reader has read and the migration has let go once (at most 8 s).
    const release = Promise.race([Promise.all([reading, firstRetry]), sleep(8_000)]).then(() => holder.query("COMMIT"));
    expect(await reading).toBe(100);
    const readMs = performance.now() - startedAt;
    await release;
    expect(readMs).toBeLessThan(2_000);
    const db = await opening;
    expect(retries.length).toBeGreaterThanOrEqual(1);
    expect(retries.map((r) => r.attempt)).toEqual(retries.map((_, i) => i + 1));
    expect(retries[0]).toMatchObject({ migration: "t_0002_notes_kind", attempt: 1, statement: addKind.sql, cause: expect.objectContaining({ code: "55P03" }) });
    expect(retries[0].retryInMs).toBeGreaterThanOrEqual(500);
    expect(await hasKind(observer)).toBe(true);
    expect(await recorded(observer, addKind.id)).toBe(1);
    expect(await db.query("SELECT kind FROM notes WHERE id = 1")).toEqual([{ kind: "plain" }]);
  });

  it("fails after its retry limit, naming the migration and the lock another transaction holds, with nothing of it applied", async () => {
    const { url, holder, observer } = await heldNotes("lock_given_up");
    const retries: MigrationLockRetry[] = [];
    const startedAt = performance.now();
    const opening = openDatabase({
      path: url,
      migrations: [notes, addKind],
      migrationLockTimeoutMs: 200,
      migrationLockRetryLimitMs: 1_500,
      onMigrationLockRetry: (retry) => void retries.push(retry),
    }).then(opened);
    const outcome = await Promise.race([opening.then(() => "applied", (err: Error) => err), sleep(10_000).then(() => "still waiting after 10 s")]);
    const tookMs = performance.now() - startedAt;
    await holder.query("ROLLBACK");
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as Error).message).toMatch(
      /^migration t_0002_notes_kind failed: another transaction holds a lock on a table it changes\. Its statement "ALTER TABLE notes ADD COLUMN kind .*" waited 200 ms for it \d+ times over \d+ s, and the migration was rolled back each time \(nothing of it is applied\)/,
    );
    expect((outcome as Error).cause).toMatchObject({ code: "55P03" });
    expect(tookMs).toBeLessThan(4_000);
    expect(retries.length).toBeGreaterThanOrEqual(2);
    expect(await hasKind(observer)).toBe(false);
    expect(await recorded(observer, addKind.id)).toBe(0);
    expect(await recorded(observer, notes.id)).toBe(1);
  });

  it("refuses a migration whose SQL PostgreSQL refuses (a typo, an unknown column) at once, naming it, its statement and what to do, with nothing of it applied", async () => {
    const url = await postgres().createDatabase("migration_typo");
    await opened(await openDatabase({ path: url, migrations: [notes] })).close();
    const typo = { id: "t_0002_notes_kind", sqlite: "ALTER TABLE notes ADD COLUMN kind TEXT NOT NULL DEFAULT ''", postgres: "ALTER TABLE notes ADD COLUMN kind TEXT NOT NULL DEFAULT '';\nUPDATE notes SET knd = 'plain'" };
    const refused = await openDatabase({ path: url, migrations: [notes, typo] }).then(opened, (err: unknown) => err);
    expect(refused).toBeInstanceOf(StatusError);
    expect((refused as StatusError).code).toBe(Code.FAILED_PRECONDITION);
    expect((refused as StatusError).message).toBe(
      `migration t_0002_notes_kind failed: column "knd" of relation "notes" does not exist (statement "UPDATE notes SET knd = 'plain'"), on PostgreSQL; ` +
        "it was rolled back, nothing of it is applied. Correct its postgres SQL (or the rows it trips on) and start again",
    );
    const observer = await session(url);
    expect(await hasKind(observer)).toBe(false);
    expect(await recorded(observer, typo.id)).toBe(0);
  });
});

describe("the lock under which PostgreSQL instances migrate", () => {
  const postgres = usePostgresServer();
  const opened: Database[] = [];
  afterEach(async () => {
    for (const db of opened.splice(0)) await db.close().catch(() => undefined);
  });

  it("gives up waiting for it when the opening's signal aborts, rejecting with the signal's reason", { timeout: 50_000 }, async () => {
    const url = await postgres().createDatabase("lock_wait_aborted");
    const holder = new pg.Client({ connectionString: url });
    holder.on("error", () => undefined);
    await holder.connect();
    try {
      // The key openDatabase migrates under ("Conc"), held by another session that never lets it go.
      await holder.query("SELECT pg_advisory_lock($1)", [0x436f6e63]);
      const stop = new AbortController();
      const opening = openDatabase({ path: url, migrations: [notes], migrationLockPollMs: 120_000, signal: stop.signal });
      // Waiting for the lock: its LISTEN is up.
      await expect.poll(async () => (await holder.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'")).rows[0].n, { interval: 20 }).toBe(1);
      const reason = new Error("stopping");
      stop.abort(reason);
      await expect(opening).rejects.toBe(reason);
    } finally {
      await holder.end();
    }
  });

  it("goes to an instance waiting for it as soon as its holder is done, not at the waiter's next ask", { timeout: 50_000 }, async () => {
    // Long enough for the second instance to be waiting by the time the first is done.
    const pause = { id: "t_0002_pause", sql: "SELECT pg_sleep(0.6)" };
    // The waiter's own asks a minute apart: only the holder's word hands it the lock within the test's time; without it, the
    // second instance waited for its next ask, up to half a second later by default, past the test's end here.
    const opening = (url: string) => openDatabase({ path: url, migrations: [notes, pause], migrationLockPollMs: 120_000 }).then((db) => (opened.push(db), db));
    // Each round one handover, the second instance started at a random moment of the first's pause.
    for (let round = 0; round < 3; round++) {
      const url = await postgres().createDatabase(`lock_handover_${round}`);
      const observer = new pg.Client({ connectionString: url });
      observer.on("error", () => undefined);
      await observer.connect();
      try {
        const first = opening(url);
        await expect
          .poll(async () => (await observer.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()")).rows[0].n, { interval: 10 })
          .toBe(1);
        await sleep(Math.random() * 300);
        await Promise.all([first, opening(url)]);
        expect((await observer.query("SELECT id FROM schema_migrations ORDER BY id")).rows).toEqual([{ id: notes.id }, { id: pause.id }]);
      } finally {
        await observer.end();
      }
      for (const db of opened.splice(0)) await db.close();
    }
  });
});
