/**
 * The outbox on Postgres, where commits that write events run side by side:
 * a transaction can take its seq before another that commits first. The
 * relay must still publish it, and before any later event of the same
 * aggregate, which waited for the first transaction's lock.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsServer } from "../../test/support/nats-server.js";
import { usePostgresServer } from "../../test/support/postgres.js";
import { sampleStream } from "../../test/support/sample-events.js";
import { eventually, readStream } from "../../test/support/streams.js";
import { createLogger } from "../log/index.js";
import { openDatabase, type Database, type StagedWrites } from "../sql/index.js";
import { connectEventBus, createOutbox, createOutboxRelay, ensureStreams, outboxMigrations, type EventBus } from "./index.js";

const logger = createLogger({ service: "outbox-postgres-test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
const aggregates = { id: "test_0001_things", sql: "CREATE TABLE things (id TEXT PRIMARY KEY, version INTEGER NOT NULL)" };

describe("the outbox relay on Postgres", () => {
  const postgres = usePostgresServer();
  const nats = useNatsServer();
  let bus: EventBus;

  beforeAll(async () => {
    bus = await connectEventBus({ url: nats().url, name: "outbox-postgres-test", logger });
  }, 60_000);
  afterAll(async () => {
    await bus?.close();
  });

  /** Two processes of one service on a new database `name`: their connections, a sample stream, and the second's outbox. */
  const twoInstances = async (name: string) => {
    const url = await postgres().createDatabase(name);
    const [first, second] = await Promise.all([0, 1].map(() => openDatabase({ path: url, migrations: outboxMigrations })));
    const sample = sampleStream(name.replaceAll("_", ""));
    await ensureStreams(bus.jsm, [sample.stream]);
    return { first, second, sample, outbox: createOutbox({ db: second, source: "things" }) };
  };

  it("publishes an event whose transaction commits after a later seq's, before the next event of its aggregate", async () => {
    const db = await openDatabase({ path: await postgres().createDatabase("late_commit"), migrations: [...outboxMigrations, aggregates] });
    await db.run("INSERT INTO things (id, version) VALUES ('x', 0), ('y', 0)");
    const sample = sampleStream("latecommit");
    await ensureStreams(bus.jsm, [sample.stream]);
    const outbox = createOutbox({ db, source: "things" });
    const relay = createOutboxRelay({ db, nc: bus.nc, logger, sweepIntervalMs: 200 });
    try {
      /** Changes thing `id` and writes its event, as a service does: under the row's lock. */
      const change = (tx: Parameters<Parameters<typeof db.transaction>[0]>[0], id: string, note: string) =>
        tx.run("UPDATE things SET version = version + 1 WHERE id = $1", [id]).then(() => outbox.add(tx, sample.event, { thingId: id, note }));

      // x1 takes its seq (the outbox's insert runs before COMMIT), then its commit is held up.
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let inserted!: () => void;
      const seqTaken = new Promise<void>((resolve) => (inserted = resolve));
      const holdCommit: StagedWrites<null> = {
        name: "hold",
        async flush() {
          inserted();
          await held;
        },
      };
      const x1 = db.transaction(async (tx) => {
        const id = await change(tx, "x", "x1");
        tx.stage(holdCommit, null);
        return id;
      });
      await seqTaken;

      // y1 gets a later seq and commits first; the relay publishes it.
      const y1 = await db.transaction((tx) => change(tx, "y", "y1"));
      await eventually("y1 is published", async () => (await readStream(bus.jsm, sample.stream.name)).length === 1);

      // x2 waits for x1's row lock, so it commits after x1.
      const x2 = db.transaction((tx) => change(tx, "x", "x2"));
      release();
      const ids = await Promise.all([x1, x2]);
      await relay.flush();
      await eventually("every event is published", async () => (await readStream(bus.jsm, sample.stream.name)).length === 3);
      expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([y1, ...ids]);
      expect(await outbox.pending()).toBe(0);
    } finally {
      await relay.stop();
      await db.close();
    }
  });

  it("publishes an event another process commits while the relay reads, though no sweep comes and nothing else is committed", async () => {
    const url = await postgres().createDatabase("wake_in_read");
    // Two instances of one service: the relay runs on the first, events are committed through the second and reach it by NOTIFY.
    const [leading, other] = await Promise.all([0, 1].map(() => openDatabase({ path: url, migrations: outboxMigrations })));
    const sample = sampleStream("wakeinread");
    await ensureStreams(bus.jsm, [sample.stream]);
    const outbox = createOutbox({ db: other, source: "things" });
    const add = (note: string) => other.transaction(async (tx) => outbox.add(tx, sample.event, { thingId: "a", note }));
    let listening = false;
    let heard = (): void => undefined;
    /** Runs once, inside the first read that finds events: after the read's statement, before the relay sees its rows. */
    let duringRead: (() => Promise<void>) | undefined;
    const observed: Database = {
      ...leading,
      async listen(channel, listener) {
        const unlisten = await leading.listen(channel, () => {
          listener();
          heard();
        });
        listening = true;
        return unlisten;
      },
      async query<R>(sql: string, params?: Parameters<Database["query"]>[1]) {
        const rows = await leading.query<R>(sql, params);
        if (duringRead && rows.length > 0 && /FROM event_outbox WHERE seq >/.test(sql)) {
          const then = duringRead;
          duringRead = undefined;
          await then();
        }
        return rows;
      },
    };
    const relay = createOutboxRelay({ db: observed, nc: bus.nc, logger, sweepIntervalMs: 600_000, leaderPollMs: 100 });
    try {
      await eventually("the relay leads and listens", () => listening);
      let second: string | undefined;
      // The second event commits after the read's snapshot was taken, and its notification wakes the relay before the read ends.
      duringRead = async () => {
        const notified = new Promise<void>((resolve) => (heard = resolve));
        second = await add("second");
        await notified;
      };
      const first = await add("first");
      await eventually("both events are published", async () => (await readStream(bus.jsm, sample.stream.name)).length === 2);
      expect(duringRead, "the second event was committed during a read").toBeUndefined();
      expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([first, second]);
    } finally {
      await relay.stop();
      await Promise.all([leading.close(), other.close()]);
    }
  });

  it("reads once its LISTEN connection is back, publishing what another process committed while it was broken, though no sweep comes", async () => {
    const url = await postgres().createDatabase("listen_broken");
    // Two instances of one service: the relay runs on the first, events are committed through the second.
    const [leading, other] = await Promise.all([0, 1].map(() => openDatabase({ path: url, migrations: outboxMigrations })));
    const sample = sampleStream("listenbroken");
    await ensureStreams(bus.jsm, [sample.stream]);
    const outbox = createOutbox({ db: other, source: "things" });
    const add = (note: string) => other.transaction(async (tx) => outbox.add(tx, sample.event, { thingId: "a", note }));
    const listeners = async () => (await other.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN concord_outbox'")).map((r) => r.pid);
    let listenerPid: number | undefined;
    const observed: Database = {
      ...leading,
      async listen(channel, listener) {
        const unlisten = await leading.listen(channel, listener);
        // Its backend, found by its last statement before the connection's checks (every 5 s) run another.
        [listenerPid] = await listeners();
        return unlisten;
      },
    };
    const relay = createOutboxRelay({ db: observed, nc: bus.nc, logger, sweepIntervalMs: 600_000, leaderPollMs: 100 });
    const stored = async (n: number) => (await readStream(bus.jsm, sample.stream.name)).length === n;
    try {
      await eventually("the relay leads and listens", () => listenerPid !== undefined);
      await add("first");
      await eventually("the first event is published, woken by its notification", () => stored(1));
      // The listening connection breaks, as when its server session is ended; it is made again a second later.
      await other.query("SELECT pg_terminate_backend($1)", [listenerPid!]);
      await eventually("the listening backend is gone", async () => !(await listeners()).includes(listenerPid!));
      await add("second");
      expect(await listeners(), "the second event was committed while nothing listened").toEqual([]);
      await eventually("the listening connection is back", async () => (await listeners()).length === 1);
      await eventually("the second event is published", () => stored(2));
    } finally {
      await relay.stop();
      await Promise.all([leading.close(), other.close()]);
    }
  });

  it("takes the relay over as soon as the relaying process stops, publishing at once what another commits meanwhile, not at its next ask", async () => {
    // Two instances of one service, each with its relay; they would ask for the lock only every 10 s.
    const { first, second, sample, outbox } = await twoInstances("handover");
    const relayOf = (db: Database) => createOutboxRelay({ db, nc: bus.nc, logger, sweepIntervalMs: 600_000, leaderPollMs: 10_000 });
    const leading = relayOf(first);
    let waiting: ReturnType<typeof createOutboxRelay> | undefined;
    try {
      await eventually("the first relay holds the lock", async () => (await advisoryLocks(second)) === 1);
      waiting = relayOf(second);
      // The second has asked (it asks at once), and would ask again 10 s later.
      await new Promise((resolve) => setTimeout(resolve, 500));
      await leading.stop();
      const id = await second.transaction(async (tx) => outbox.add(tx, sample.event, { thingId: "a", note: "after the stop" }));
      const committed = Date.now();
      await eventually("the event is published", async () => (await readStream(bus.jsm, sample.stream.name)).length === 1, 15_000);
      expect(Date.now() - committed, "ms from the commit to the event stored, against 10 s between asks").toBeLessThan(3_000);
      expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([id]);
    } finally {
      await Promise.all([leading.stop(), waiting?.stop()]);
      await Promise.all([first.close(), second.close()]);
    }
  });

  it("publishes what is left once the relaying process stops, without saying it took the relay over, when its own process is stopping too", async () => {
    const { first, second, sample, outbox } = await twoInstances("stopping_handover");
    const lines: { msg: string }[] = [];
    const heard = createLogger({ service: "things", level: "info", destination: { write: (line: string) => void lines.push(JSON.parse(line)) } });
    const leading = createOutboxRelay({ db: first, nc: bus.nc, logger, sweepIntervalMs: 600_000, leaderPollMs: 10_000 });
    let waiting: ReturnType<typeof createOutboxRelay> | undefined;
    try {
      await eventually("the first relay holds the lock", async () => (await advisoryLocks(second)) === 1);
      waiting = createOutboxRelay({ db: second, nc: bus.nc, logger: heard, sweepIntervalMs: 600_000, leaderPollMs: 10_000 });
      await eventually("the second relay waits", async () => lines.some((l) => l.msg.startsWith("another process relays this outbox")));
      // Ctrl-C of the whole system: both processes stop; the second's calls still drain, and commit an event.
      waiting.standDown();
      await leading.stop();
      const id = await second.transaction(async (tx) => outbox.add(tx, sample.event, { thingId: "a", note: "while stopping" }));
      await eventually("the event is published", async () => (await readStream(bus.jsm, sample.stream.name)).length === 1, 15_000);
      expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([id]);
      expect(waiting.relaying()).toBe(true);
      expect(lines.map((l) => l.msg)).not.toContain("took over relaying this outbox");
    } finally {
      await Promise.all([leading.stop(), waiting?.stop()]);
      await Promise.all([first.close(), second.close()]);
    }
  });

  it("deletes what it published, once the database is back, though another process took the relay first, which then does not publish it again past the duplicate window", async () => {
    const url = await postgres().createDatabase("outage_handover");
    const [first, second] = await Promise.all([0, 1].map(() => openDatabase({ path: url, migrations: outboxMigrations })));
    // JetStream drops a copy for a second only, so that an outage can outlast the window.
    const sample = sampleStream("outagehandover");
    const stream = { ...sample.stream, duplicateWindowMs: 1_000 };
    await ensureStreams(bus.jsm, [stream]);
    const outbox = createOutbox({ db: first, source: "things" });
    // The database refuses the first process's deletions, as one that is away does.
    let away = false;
    let refused = 0;
    const flaky: Database = {
      ...first,
      async run(sql, params) {
        if (away && sql.startsWith("DELETE FROM event_outbox")) {
          refused++;
          throw Object.assign(new Error("could not extend file: No space left on device"), { code: "53100" });
        }
        return first.run(sql, params);
      },
    };
    const relayLock = async (granted: boolean) =>
      (await second.query<{ pid: number }>(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND ${granted ? "" : "NOT "}granted`, [0x436f6e65])).map((r) => r.pid);
    const relay = createOutboxRelay({ db: flaky, nc: bus.nc, logger, sweepIntervalMs: 100, leaderPollMs: 100, retryMaxMs: 300 });
    const other = new pg.Client({ connectionString: url });
    let taking: ReturnType<typeof createOutboxRelay> | undefined;
    try {
      await eventually("the first process relays", async () => (await relayLock(true)).length === 1);
      away = true;
      const id = await first.transaction(async (tx) => outbox.add(tx, sample.event, { thingId: "a", note: "published before the outage" }));
      await eventually("the event is published and its deletion refused", async () => (await readStream(bus.jsm, stream.name)).length === 1 && refused > 0);
      // Another process queues for the lock, and gets it as the outage ends the first one's lock session.
      await other.connect();
      const otherHolds = other.query("SELECT pg_advisory_lock($1)", [0x436f6e65]);
      await eventually("another process waits for the lock", async () => (await relayLock(false)).length === 1);
      await second.query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted", [0x436f6e65]);
      await otherHolds;
      away = false;
      await eventually("the first process deletes what it published, though it relays no more", async () => (await outbox.pending()) === 0);
      // The first process stops; the other one's relay starts after a wait longer than the duplicate window.
      await relay.stop();
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      await other.end();
      taking = createOutboxRelay({ db: second, nc: bus.nc, logger, sweepIntervalMs: 100, leaderPollMs: 100 });
      await eventually("the other process relays", async () => (await relayLock(true)).length === 1);
      await taking.flush();
      expect((await readStream(bus.jsm, stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([id]);
    } finally {
      await relay.stop();
      await taking?.stop();
      await other.end().catch(() => undefined);
      await Promise.all([first.close(), second.close()]);
    }
  });

  it("still deletes what it publishes after its lock's connection broke while a deletion was pending", async () => {
    const db = await openDatabase({ path: await postgres().createDatabase("lease_lost"), migrations: outboxMigrations });
    const sample = sampleStream("leaselost");
    await ensureStreams(bus.jsm, [sample.stream]);
    const outbox = createOutbox({ db, source: "things" });
    // Deletions wait five seconds, so the lock can be taken away while one waits (with room for a busy machine).
    const relay = createOutboxRelay({ db, nc: bus.nc, logger, sweepIntervalMs: 100, leaderPollMs: 100, markDelayMs: 5_000 });
    const stored = async (n: number) => (await readStream(bus.jsm, sample.stream.name)).length === n;
    try {
      // An event is published and its deletion waits. The relay deletes at once after a failed read, and a machine
      // stalled for five seconds lets the wait run out: then another event is tried, a few times at most.
      let published = 0;
      let waiting = false;
      while (!waiting && published < 4) {
        await db.transaction(async (tx) => outbox.add(tx, sample.event, { thingId: "a", note: `before ${published}` }));
        published++;
        await eventually(`event ${published} is published`, () => stored(published));
        waiting = (await outbox.pending()) === 1;
      }
      expect(waiting, "an event's deletion is still waiting").toBe(true);
      // The connection holding the relay's lock breaks (as when Postgres restarts); the relay takes the lock again.
      const [{ n }] = await db.query<{ n: number }>(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
      );
      expect(Number(n)).toBe(1);
      await eventually("the waiting deletion is done", async () => (await outbox.pending()) === 0, 20_000);
      await db.transaction(async (tx) => outbox.add(tx, sample.event, { thingId: "a", note: "after" }));
      await eventually("the event after is published", () => stored(published + 1));
      await eventually("the event after has its row deleted too", async () => (await outbox.pending()) === 0, 20_000);
    } finally {
      await relay.stop();
      await db.close();
    }
  });
  it("keeps relaying, and settles a flush that waited, when the database went away while the flush waited", async () => {
    const db = await openDatabase({ path: await postgres().createDatabase("flush_outage"), migrations: outboxMigrations });
    // No stream captures the event yet: JetStream answers 503 and the event stays in the outbox, so the flush waits.
    const orphan = sampleStream("flushoutage");
    const outbox = createOutbox({ db, source: "things" });
    const relay = createOutboxRelay({ db, nc: bus.nc, logger, sweepIntervalMs: 100, retryMinMs: 50, retryMaxMs: 300, leaderPollMs: 100 });
    try {
      const id = await db.transaction(async (tx) => outbox.add(tx, orphan.event, { thingId: "a", note: "" }));
      let flushed: "waiting" | "resolved" | "rejected" = "waiting";
      const flush = relay.flush().then(
        () => void (flushed = "resolved"),
        () => void (flushed = "rejected"),
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Meanwhile the relay reads the outbox, and looks whether the flush's events are out, in vain.
      await postgres().stopForRestart();
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      await postgres().restart();
      await ensureStreams(bus.jsm, [orphan.stream]);
      await eventually("the event is published", async () => (await readStream(bus.jsm, orphan.stream.name)).length === 1, 15_000);
      await eventually("the flush is settled", () => flushed !== "waiting", 5_000);
      await flush;
      expect(flushed).toBe("resolved");
      expect((await readStream(bus.jsm, orphan.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([id]);
      await eventually("the outbox is empty", async () => (await outbox.pending()) === 0);
    } finally {
      await relay.stop();
      await db.close();
    }
  });

  it("logs a database outage that keeps it from asking for its lock once, and again when it is over", async () => {
    const db = await openDatabase({ path: await postgres().createDatabase("lock_outage"), migrations: outboxMigrations });
    const lines: { level: string; msg: string; attempts?: number }[] = [];
    const quiet = createLogger({ service: "things", level: "info", destination: { write: (line: string) => void lines.push(JSON.parse(line)) } });
    const relay = createOutboxRelay({ db, nc: bus.nc, logger: quiet, sweepIntervalMs: 100, leaderPollMs: 50 });
    const about = (text: string) => lines.filter((l) => l.msg.startsWith(text));
    try {
      await eventually("the relay holds its lock", async () => (await advisoryLocks(db)) === 1);
      await postgres().stopForRestart();
      // Said at the first failure; asked every 50 ms for two seconds more: some forty failures, one line.
      await eventually("the relay says asking failed", async () => about("asking for the outbox relay's lock failed").length > 0, 20_000);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      expect(about("asking for the outbox relay's lock failed")).toHaveLength(1);
      await postgres().restart();
      await eventually("the relay says asking works again", async () => about("asking for the outbox relay's lock works again").length === 1, 20_000);
      expect(about("asking for the outbox relay's lock works again")[0].attempts).toBeGreaterThan(5);
      expect(about("asking for the outbox relay's lock failed")).toHaveLength(1);
    } finally {
      await relay.stop();
      await db.close();
    }
  });
});

/** How many advisory locks are held in `db`'s database (the relay's lock, when one relay holds it). */
async function advisoryLocks(db: Database): Promise<number> {
  const [{ n }] = await db.query<{ n: number }>("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())");
  return Number(n);
}
