/**
 * PostgreSQL behind a real PgBouncer. In transaction (or statement) pooling a
 * server session goes from client to client between transactions (or
 * statements), so the relay's session lock and LISTEN would not be one
 * instance's own: such a database is refused when a service opens it, before
 * anything is written. Session pooling keeps a session per client, and the
 * platform works through it.
 */
import { Client } from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsServer } from "../../test/support/nats-server.js";
import { startPgBouncer, type PgBouncerHandle } from "../../test/support/pgbouncer.js";
import { usePostgresServer } from "../../test/support/postgres.js";
import { sampleStream } from "../../test/support/sample-events.js";
import { eventually, readStream } from "../../test/support/streams.js";
import { connectEventBus, createOutbox, createOutboxRelay, ensureStreams, outboxMigrations, type EventBus } from "../events/index.js";
import { createLogger } from "../log/index.js";
import { Code } from "../errors/index.js";
import { openDatabase } from "./index.js";

const logger = createLogger({ service: "pgbouncer-test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
const aggregates = { id: "test_0001_things", sql: "CREATE TABLE things (id TEXT PRIMARY KEY, version INTEGER NOT NULL)" };

/** `sql`'s rows, asked of the server directly. */
async function queryDirect<R extends object>(url: string, sql: string): Promise<R[]> {
  const client = new Client({ connectionString: url });
  client.on("error", () => {});
  try {
    await client.connect();
    return (await client.query<R>(sql)).rows;
  } finally {
    await client.end().catch(() => {});
  }
}

/** The tables of `url`'s database. */
async function tablesOf(url: string): Promise<string[]> {
  return (await queryDirect<{ name: string }>(url, "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")).map((r) => r.name);
}

describe("PostgreSQL through PgBouncer", () => {
  const postgres = usePostgresServer();
  const nats = useNatsServer();
  let bus: EventBus;
  let transactionPooler: PgBouncerHandle;
  let statementPooler: PgBouncerHandle;
  let sessionPooler: PgBouncerHandle;
  let strictPooler: PgBouncerHandle;
  let smallPooler: PgBouncerHandle;

  beforeAll(async () => {
    [transactionPooler, statementPooler, sessionPooler, strictPooler, smallPooler] = await Promise.all([
      startPgBouncer(postgres(), { poolMode: "transaction" }),
      startPgBouncer(postgres(), { poolMode: "statement" }),
      startPgBouncer(postgres(), { poolMode: "session" }),
      startPgBouncer(postgres(), { poolMode: "session", ignoreStartupParameters: false }),
      startPgBouncer(postgres(), { poolMode: "session", poolSize: 1, queryWaitTimeoutS: 1 }),
    ]);
    bus = await connectEventBus({ url: nats().url, name: "pgbouncer-test", logger });
  }, 60_000);
  afterAll(async () => {
    await bus?.close();
    await Promise.all([transactionPooler?.stop(), statementPooler?.stop(), sessionPooler?.stop(), strictPooler?.stop(), smallPooler?.stop()]);
  });

  it.each(["transaction", "statement"] as const)("refuses a database behind %s pooling when a service opens it, saying why and what to use, before any migration", async (mode) => {
    const pooler = mode === "transaction" ? transactionPooler : statementPooler;
    const direct = await postgres().createDatabase(`${mode}_pooled`);
    const waited: unknown[] = [];
    const opening = openDatabase({
      path: pooler.urlOf(`${mode}_pooled`),
      migrations: [...outboxMigrations, aggregates],
      owner: "things",
      onWaiting: (err) => waited.push(err),
    });
    await expect(opening).rejects.toThrow(/does not keep a server session for each connection: (one connection's statements ran in two server sessions|two connections open at once ran their statements in one server session)/);
    await expect(opening).rejects.toThrow(/relay's lock and LISTEN need a session of their own/);
    await expect(opening).rejects.toThrow(/pool_mode = session\) or a URL that goes to PostgreSQL directly/);
    // Refused at once, not waited for as a database that cannot be reached, and nothing written.
    expect(waited).toEqual([]);
    expect(await tablesOf(direct)).toEqual([]);
    // The very database, reached directly, opens.
    const db = await openDatabase({ path: direct, migrations: [...outboxMigrations, aggregates], owner: "things" });
    await db.close();
    expect(await tablesOf(direct)).toContain("things");
  });

  it("refuses at once, naming the setting, a pooler that refuses the platform's startup parameters, rather than waiting on it as an outage", async () => {
    const direct = await postgres().createDatabase("strict_pooled");
    const waited: unknown[] = [];
    const opening = openDatabase({ path: strictPooler.urlOf("strict_pooled"), migrations: [...outboxMigrations, aggregates], owner: "things", onWaiting: (err) => waited.push(err) });
    // PgBouncer answers "unsupported startup parameter" with SQLSTATE 08P01, a connection failure, which alone reads as an outage.
    await expect(opening).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION, cause: { code: "08P01" } });
    await expect(opening).rejects.toThrow(/refuses the startup parameter \w+ .*ignore_startup_parameters = options,statement_timeout,idle_in_transaction_session_timeout/);
    expect(waited).toEqual([]);
    expect(await tablesOf(direct)).toEqual([]);
  });

  it("behind a pooler that drops the timeouts a connection sends at start-up, sets them on each connection itself and says so once", async () => {
    const direct = await postgres().createDatabase("session_timeouts");
    const told: (readonly string[])[] = [];
    const open = (url: string) =>
      openDatabase({ path: `${url}?statement_timeout=2000`, migrations: [aggregates], owner: "things", onStartupSettingsDropped: (names) => told.push(names) });
    const shown = "SELECT current_setting('statement_timeout') AS statement, current_setting('idle_in_transaction_session_timeout') AS idle";
    const db = await open(sessionPooler.urlOf("session_timeouts"));
    try {
      // Each of several pooled connections at once, not only the first, and statements outside transactions too.
      const inTransactions = await Promise.all(Array.from({ length: 5 }, () => db.transaction(async (tx) => (await tx.query(shown))[0])));
      expect([...inTransactions, ...(await db.query(shown))]).toEqual(Array(6).fill({ statement: "2s", idle: "2s" }));
      expect(told).toEqual([["idle_in_transaction_session_timeout", "statement_timeout"]]);
    } finally {
      await db.close();
    }
    // Reached directly, the server takes them at start-up: nothing to set, nothing said.
    const directly = await open(direct);
    try {
      expect(await directly.query(shown)).toEqual([{ statement: "2s", idle: "2s" }]);
      expect(told).toHaveLength(1);
    } finally {
      await directly.close();
    }
  });

  it("says, when the pooler had no server connection free for a statement, that its pool must hold every instance's connections", async () => {
    const direct = await postgres().createDatabase("small_pooled");
    // The check at start holds two connections at once; a pool of one server connection makes the second wait past query_wait_timeout.
    const opening = openDatabase({ path: smallPooler.urlOf("small_pooled"), migrations: [...outboxMigrations, aggregates], owner: "things" });
    // Still UNAVAILABLE, for it passes once connections are given back: PgBouncer answers it with SQLSTATE 08P01 and the bare "query_wait_timeout".
    await expect(opening).rejects.toMatchObject({ code: Code.UNAVAILABLE, cause: { code: "08P01", message: "query_wait_timeout" } });
    await expect(opening).rejects.toThrow(/no server connection free .*query_wait_timeout.*default_pool_size.*every instance's connections/);
    expect(await tablesOf(direct)).toEqual([]);
  });

  it("works behind session pooling: two instances migrate, one holds the relay's lock, LISTEN wakes it, events go out in order", async () => {
    const direct = await postgres().createDatabase("session_pooled");
    const url = sessionPooler.urlOf("session_pooled");
    const [a, b] = await Promise.all([0, 1].map(() => openDatabase({ path: url, migrations: [...outboxMigrations, aggregates], owner: "things" })));
    const relays: ReturnType<typeof createOutboxRelay>[] = [];
    try {
      const key = 0x70676222;
      const held = await a.tryLock(key);
      expect(held).toBeDefined();
      expect(await b.tryLock(key)).toBeUndefined();
      await held!.release();

      await a.run("INSERT INTO things (id, version) VALUES ('x', 0)");
      const sample = sampleStream("pgbouncersession");
      await ensureStreams(bus.jsm, [sample.stream]);
      // No sweep within the test: each event reaches the leading relay by its own process's commit or by NOTIFY.
      for (const db of [a, b]) relays.push(createOutboxRelay({ db, nc: bus.nc, logger, sweepIntervalMs: 600_000, leaderPollMs: 100 }));
      // Written once a relay leads and listens, so that the events written through the other instance wake it by NOTIFY.
      await eventually("a relay listens", async () => (await queryDirect(direct, "SELECT 1 FROM pg_stat_activity WHERE query = 'LISTEN concord_outbox'")).length === 1);
      const outboxes = [a, b].map((db) => createOutbox({ db, source: "things" }));
      const ids: string[] = [];
      for (let n = 0; n < 10; n++) {
        const db = n % 2 === 0 ? a : b;
        ids.push(
          await db.transaction(async (tx) => {
            await tx.run("UPDATE things SET version = version + 1 WHERE id = 'x'");
            return await outboxes[n % 2].add(tx, sample.event, { thingId: "x", note: `n${n}` });
          }),
        );
      }
      await eventually("every event is published", async () => (await readStream(bus.jsm, sample.stream.name)).length === ids.length);
      expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual(ids);
      // One relay published them all: the other never held the lock. Counted once their rows are deleted, a moment after.
      await eventually("both relays' counts are in", async () => relays.reduce((n, r) => n + r.stats().published, 0) === ids.length);
      expect(relays.map((r) => r.stats().published).sort((x, y) => x - y)).toEqual([0, ids.length]);
    } finally {
      await Promise.all(relays.map((r) => r.stop()));
      await Promise.all([a.close(), b.close()]);
    }
  });
});
