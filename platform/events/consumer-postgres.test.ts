/**
 * The consumer's group commit on Postgres, where every statement is a round
 * trip: a batch's transaction reads and writes the inbox once for all its
 * events; another instance may record one of them first, or hold the rows
 * an event needs, and the events before it commit rather than wait with
 * their locks held.
 */
import { headers as natsHeaders, type StoredMsg } from "nats";
import pg from "pg";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsServer } from "../../test/support/nats-server.js";
import { usePostgresServer } from "../../test/support/postgres.js";
import { recordStatements } from "../../test/support/pg-statements.js";
import { sampleStream, type SampleStream, type ThingHappened } from "../../test/support/sample-events.js";
import { eventually } from "../../test/support/streams.js";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { createLogger } from "../log/index.js";
import { openDatabase, sendAhead, type Database } from "../sql/index.js";
import { bindConsumer, connectEventBus, type BatchLocks, consumerMetrics, createEventPublisher, deadLetterStreamSpec, deadLetterSubject, ensureStreams, eventMigrations, startConsumers, type ConsumerBinding, type ConsumerSpec, type EventBus, type EventContext } from "./index.js";

const logger = createLogger({ service: "consumer-postgres-test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
const countersTable = { id: "test_0001_counters", sql: "CREATE TABLE counters (id TEXT PRIMARY KEY, n INTEGER NOT NULL)" };
const effectsTable = { id: "test_0002_effects", sql: "CREATE TABLE effects (event_id TEXT NOT NULL, note TEXT NOT NULL)" };

describe("a consumer's batch on Postgres", () => {
  const postgres = usePostgresServer();
  const nats = useNatsServer();
  let bus: EventBus;

  beforeAll(async () => {
    bus = await connectEventBus({ url: nats().url, name: "consumer-postgres-test", logger });
  }, 60_000);
  afterAll(async () => {
    await bus?.close();
  });

  /** A consumer `durable` of the sample's event on `db`, as service "worker". */
  const startWorker = (db: Database, sample: SampleStream, durable: string, handle: ConsumerBinding<ThingHappened>["handle"], overrides?: Partial<ConsumerSpec>) =>
    startConsumers({ nc: bus.nc, db, service: "worker", logger, consumers: [bindConsumer({ spec: sample.consumerSpec(durable, overrides), descriptor: sample.event, handle })] });
  /** The handler most tests use: one effects row per event. */
  const recordEffect = async (event: ThingHappened, context: EventContext) => {
    await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, event.note]);
  };
  const settled = (sample: SampleStream, durable: string) =>
    eventually("the consumer has nothing pending", async () => {
      const info = await bus.jsm.consumers.info(sample.stream.name, durable);
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
  /** What a test of `withWorker` is given: the database, and the letters its consumer has dead-lettered. */
  interface Worker {
    readonly db: Database;
    readonly sample: SampleStream;
    readonly durable: string;
    /** The stream sequences of the events dead-lettered, in order. */
    letters(): Promise<string[]>;
    /** The last event dead-lettered. */
    lastLetter(): Promise<StoredMsg>;
    /** The effects rows' notes, sorted. */
    effects(): Promise<string[]>;
  }
  /**
   * A database and a stream of their own (`name`), `notes` published in
   * order (stream sequences 1, 2, ...) before a worker consumes them with
   * `handle` (in one batch); `test` runs, then the worker stops and the
   * database closes.
   */
  const withWorker = async (
    name: string,
    notes: readonly string[],
    handle: ConsumerBinding<ThingHappened>["handle"],
    test: (worker: Worker) => Promise<void>,
    overrides?: Partial<ConsumerSpec>,
  ) => {
    const db = await openDatabase({ path: await postgres().createDatabase(name), migrations: [...eventMigrations, effectsTable] });
    const sample = sampleStream(name.replace(/_/g, ""));
    await ensureStreams(bus.jsm, [sample.stream, deadLetterStreamSpec]);
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    for (const note of notes) await publisher.publish(sample.event, { thingId: `t-${note}`, note });
    const durable = `${name.replace(/_/g, "")}-worker`;
    const consumers = await startWorker(db, sample, durable, handle, overrides);
    const subject = deadLetterSubject(deadLetterStreamSpec, sample.stream.name, durable);
    try {
      await test({
        db,
        sample,
        durable,
        async letters() {
          const sequences: string[] = [];
          const info = await bus.jsm.streams.info(deadLetterStreamSpec.name);
          for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
            const letter = await bus.jsm.streams.getMessage(deadLetterStreamSpec.name, { seq }).catch(() => undefined);
            if (letter?.subject === subject) sequences.push(letter.header.get("concord-dlq-stream-sequence"));
          }
          return sequences;
        },
        lastLetter: () => bus.jsm.streams.getMessage(deadLetterStreamSpec.name, { last_by_subj: subject }),
        effects: async () => (await db.query<{ note: string }>("SELECT note FROM effects ORDER BY note")).map((r) => r.note),
      });
    } finally {
      await consumers.stop();
      await db.close();
    }
  };
  /** Waits until `worker` has dead-lettered an event. */
  const someLetter = (worker: Worker) => eventually("an event is dead-lettered", () => worker.lastLetter().then(() => true, () => false), 15_000);

  it("commits the events before one that would wait for a locked row, and handles that one once the row is free", async () => {
    const url = await postgres().createDatabase("batch_locks");
    const db = await openDatabase({ path: url, migrations: [...eventMigrations, countersTable] });
    await db.run("INSERT INTO counters (id, n) VALUES ('a', 0), ('b', 0)");
    const sample = sampleStream("batchlocks");
    await ensureStreams(bus.jsm, [sample.stream]);
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    // Published before the consumer starts, so that they arrive together in one batch.
    for (const note of ["a", "b", "a"]) await publisher.publish(sample.event, { thingId: `t-${note}`, note });

    // Another transaction (another instance's batch, say) holds row b.
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    await other.query("BEGIN");
    await other.query("SELECT n FROM counters WHERE id = 'b' FOR UPDATE");

    let calls = 0;
    const consumers = await startWorker(db, sample, "batchlocks-worker", async (event, context) => {
      calls++;
      await context.tx.run("UPDATE counters SET n = n + 1 WHERE id = $1", [event.note]);
    });
    const counter = async (id: string) => (await db.query<{ n: number }>("SELECT n FROM counters WHERE id = $1", [id]))[0].n;
    try {
      // The first event is committed while row b is still held: it did not wait with the batch.
      await eventually("the event before the locked row is committed", async () => (await counter("a")) === 1, 5_000);
      expect(await counter("b")).toBe(0);
      await other.query("COMMIT");
      await eventually("every event is handled once the row is free", async () => (await counter("b")) === 1 && (await counter("a")) === 2, 10_000);
      const info = await bus.jsm.consumers.info(sample.stream.name, "batchlocks-worker");
      expect(info.num_redelivered, "nothing was redelivered: the waiting event ran again in the next transaction").toBe(0);
      expect(calls).toBeGreaterThanOrEqual(3);
    } finally {
      await other.end();
      await consumers.stop();
      await db.close();
    }
  });

  it("spends no attempt on an event whose row another session holds for longer than its lock wait: it comes back, and is handled once the row is free", async () => {
    // A statement timeout of 15 s, above the first event's lock wait (10 s): the wait fails as a lock timeout.
    const url = await postgres().createDatabase("held_long");
    const db = await openDatabase({ path: `${url}?statement_timeout=15000`, migrations: [...eventMigrations, countersTable] });
    await db.run("INSERT INTO counters (id, n) VALUES ('a', 0), ('b', 0)");
    const sample = sampleStream("heldlong");
    await ensureStreams(bus.jsm, [sample.stream, deadLetterStreamSpec]);
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    for (const note of ["b", "a"]) await publisher.publish(sample.event, { thingId: `t-${note}`, note });
    // Another session (an operator's open transaction, a migration) holds row b for longer than the lock wait.
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    await other.query("BEGIN");
    await other.query("SELECT n FROM counters WHERE id = 'b' FOR UPDATE");
    const consumers = await startWorker(db, sample, "heldlong-worker", async (event, context) => {
      await context.tx.run("UPDATE counters SET n = n + 1 WHERE id = $1", [event.note]);
    }, { maxDeliver: 2, backoffMs: [100] });
    const counter = async (id: string) => (await db.query<{ n: number }>("SELECT n FROM counters WHERE id = $1", [id]))[0].n;
    try {
      // The event after it is handled while the row is still held.
      await eventually("the event behind the held row is handled", async () => (await counter("a")) === 1, 15_000);
      // Past the statement timeout (15 s): formerly its first attempt failed there, its second at 30 s, and it was dead-lettered.
      await new Promise((resolve) => setTimeout(resolve, 20_000));
      expect(await counter("b")).toBe(0);
      await other.query("COMMIT");
      await eventually("the held event is handled once the row is free", async () => (await counter("b")) === 1, 15_000);
      const [{ failures }] = await db.query<{ failures: number }>("SELECT coalesce(max(failures), 0)::int AS failures FROM event_failures");
      // The redelivery that ran to its end had its attempt counted ahead, as every redelivery's is; the waits none.
      expect(failures, "no attempt was spent on the lock waits").toBeLessThanOrEqual(1);
      const info = await bus.jsm.streams.info(deadLetterStreamSpec.name);
      const subject = deadLetterSubject(deadLetterStreamSpec, sample.stream.name, "heldlong-worker");
      const letters = info.state.messages === 0 ? [] : await bus.jsm.streams.getMessage(deadLetterStreamSpec.name, { last_by_subj: subject }).then(() => [1], () => []);
      expect(letters).toEqual([]);
    } finally {
      await other.end();
      await consumers.stop();
      await db.close();
    }
  }, 90_000);

  it("logs ten lines in ten seconds about events that wait for a held row, however many there are, and counts the rest in one line", async () => {
    // A statement timeout of 2 s: a transaction's first event waits 1 s for a lock, and once one has timed out 100 ms.
    const url = await postgres().createDatabase("held_lines");
    const db = await openDatabase({ path: `${url}?statement_timeout=2000`, migrations: [...eventMigrations, countersTable] });
    await db.run("INSERT INTO counters (id, n) VALUES ('b', 0)");
    const sample = sampleStream("heldlines");
    await ensureStreams(bus.jsm, [sample.stream, deadLetterStreamSpec]);
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    for (let i = 0; i < 20; i++) await publisher.publish(sample.event, { thingId: `t-${i}`, note: "b" });
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    await other.query("BEGIN");
    await other.query("SELECT n FROM counters WHERE id = 'b' FOR UPDATE");
    const { lines, logger: captured } = capturedLogger("worker");
    const consumers = await startConsumers({
      nc: bus.nc,
      db,
      service: "worker",
      logger: captured,
      consumers: [
        bindConsumer({
          spec: sample.consumerSpec("heldlines-worker", { backoffMs: [100] }),
          descriptor: sample.event,
          handle: async (event, context) => {
            await context.tx.run("UPDATE counters SET n = n + 1 WHERE id = $1", [event.note]);
          },
        }),
      ],
    });
    const waited = () => lines.filter((line) => String(line.msg).includes("waited too long for a lock"));
    try {
      // Each of the 20 events comes back every 200 ms or so, and times out again, for as long as the row is held.
      await new Promise((resolve) => setTimeout(resolve, 12_000));
      await other.query("COMMIT");
      await eventually("every event is handled once the row is free", async () => (await db.query<{ n: number }>("SELECT n FROM counters WHERE id = 'b'"))[0].n === 20, 15_000);
    } finally {
      await other.end();
      await consumers.stop();
      await db.close();
    }
    const own = waited().filter((line) => line.streamSequence !== undefined);
    const told = waited().filter((line) => line.events !== undefined);
    // Two windows of ten seconds at most while the row was held: ten lines each, and a count of the rest.
    expect(own.length).toBeLessThanOrEqual(20);
    expect(told.length).toBeGreaterThanOrEqual(1);
    expect(told[0].msg).toMatch(/^\d+ more events waited too long for a lock another session holds, past the 10 logged one by one in 10 s; they come back, no attempt spent$/);
    expect(own.length + told.reduce((sum, line) => sum + Number(line.events), 0)).toBeGreaterThan(40);
  }, 60_000);

  it("reads and writes the inbox once per transaction, not once per event, and has each event's effect once", async () => {
    const url = await postgres().createDatabase("batch_inbox");
    const db = await openDatabase({ path: url, migrations: [...eventMigrations, effectsTable] });
    const sample = sampleStream("batchinbox");
    await ensureStreams(bus.jsm, [sample.stream]);
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    const notes = Array.from({ length: 20 }, (_, i) => `n${i}`);
    // Published before the consumer starts, so that they arrive together in one batch.
    for (const note of notes) await publisher.publish(sample.event, { thingId: `t-${note}`, note });
    const sent = recordStatements(db);
    const consumers = await startWorker(db, sample, "batchinbox-worker", recordEffect);
    try {
      await eventually("every event is handled", async () => (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM effects"))[0].n === notes.length, 10_000);
      // Per transaction: its events (an effects row each), inbox reads and writes. The events may come in more than
      // one pull; a transaction of one event claims it with its INSERT alone, without a read.
      const transactions: Array<{ events: number; reads: number; writes: number }> = [];
      for (const sql of sent) {
        if (sql === "BEGIN") transactions.push({ events: 0, reads: 0, writes: 0 });
        const current = transactions.at(-1);
        if (!current) continue;
        if (sql.startsWith("INSERT INTO effects")) current.events++;
        if (sql.startsWith("SELECT event_id FROM event_inbox")) current.reads++;
        if (sql.startsWith("INSERT INTO event_inbox")) current.writes++;
      }
      const handling = transactions.filter((t) => t.events > 0);
      expect(handling.reduce((n, t) => n + t.events, 0)).toBe(notes.length);
      expect(handling.length, JSON.stringify(handling)).toBeLessThan(notes.length);
      for (const t of handling) expect(t, JSON.stringify(handling)).toEqual({ events: t.events, reads: t.events > 1 ? 1 : 0, writes: 1 });
      expect((await db.query<{ n: number }>("SELECT count(*)::int AS n FROM event_inbox"))[0].n).toBe(notes.length);
    } finally {
      await consumers.stop();
      await db.close();
    }
  });

  it("runs a transaction again when another one recorded one of its events first: that event has no second effect, the others one each", async () => {
    const url = await postgres().createDatabase("inbox_race");
    const db = await openDatabase({ path: url, migrations: [...eventMigrations, effectsTable] });
    const sample = sampleStream("inboxrace");
    await ensureStreams(bus.jsm, [sample.stream]);
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    for (const note of ["before", "raced", "after"]) await publisher.publish(sample.event, { thingId: `t-${note}`, note });
    // Another instance, given the same event, records it while this one's handler runs.
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    const calls = new Map<string, number>();
    const durable = "inboxrace-worker";
    const consumers = await startWorker(db, sample, durable, async (event, context) => {
      calls.set(event.note, (calls.get(event.note) ?? 0) + 1);
      if (event.note === "raced" && calls.get("raced") === 1) {
        await other.query("INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES ($1, $2, 0)", [durable, context.eventId]);
      }
      await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, event.note]);
    });
    const effects = async (note: string) => (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM effects WHERE note = $1", [note]))[0].n;
    try {
      await eventually("the events around the raced one are handled", async () => (await effects("before")) === 1 && (await effects("after")) === 1, 10_000);
      await settled(sample, durable);
      expect(await effects("raced"), "the other instance processed it; this one's effects were rolled back").toBe(0);
      expect(calls.get("raced"), "run once; on the second attempt the inbox had it").toBe(1);
      // Twice when it shared the raced event's transaction; once when it came in a pull of its own (a busy machine).
      expect([1, 2]).toContain(calls.get("before"));
      expect((await bus.jsm.consumers.info(sample.stream.name, durable)).num_redelivered).toBe(0);
    } finally {
      await other.end();
      await consumers.stop();
      await db.close();
    }
  });

  it.each([{ delivery: "first delivery", redelivered: false }, { delivery: "redelivery (its attempt counted ahead under no id)", redelivered: true }])("dead-letters an event whose ce-id PostgreSQL cannot store (a NUL) without holding up the batch it came in: $delivery", async ({ redelivered }) => {
    const url = await postgres().createDatabase(redelivered ? "bad_ids_again" : "bad_ids");
    const db = await openDatabase({ path: url, migrations: [...eventMigrations, effectsTable] });
    const sample = sampleStream(redelivered ? "badidsagain" : "badids");
    await ensureStreams(bus.jsm, [sample.stream, deadLetterStreamSpec]);
    const durable = `${redelivered ? "badidsagain" : "badids"}-worker`;
    if (redelivered) await (await startWorker(db, sample, durable, recordEffect)).stop();
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    await publisher.publish(sample.event, { thingId: "t-a", note: "a" });
    const h = natsHeaders();
    for (const [name, value] of Object.entries({ "ce-specversion": "1.0", "ce-id": "nul\u0000id", "ce-type": sample.event.typeName, "ce-source": "things" })) h.set(name, value);
    await bus.js.publish(`${sample.stream.subjects[0].slice(0, -2)}.thing.t-n.happened`, sample.event.codec.encode({ thingId: "t-n", note: "n" }).finish(), { headers: h });
    await publisher.publish(sample.event, { thingId: "t-b", note: "b" });
    if (redelivered) {
      // Handed back untried, as a stopping consumer hands back what it pulled ahead.
      const raw = await bus.js.consumers.get(sample.stream.name, durable);
      for await (const m of await raw.fetch({ max_messages: 3, expires: 5_000 })) m.nak();
    }
    const consumers = await startWorker(db, sample, durable, recordEffect);
    try {
      await eventually("the well-formed events are handled", async () => (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM effects"))[0].n === 2, 10_000);
      const letter = await bus.jsm.streams.getMessage(deadLetterStreamSpec.name, { last_by_subj: deadLetterSubject(deadLetterStreamSpec, sample.stream.name, durable) });
      expect(letter.header.get("concord-dlq-reason")).toMatch(/has a control character in its ce-id, so it cannot be deduplicated/);
      const info = await bus.jsm.consumers.info(sample.stream.name, durable);
      expect(info.num_redelivered).toBe(0);
      // Each redelivery's attempt was counted before it ran; the one with the NUL under no id.
      if (redelivered) expect((await db.query<{ event_id: string }>("SELECT event_id FROM event_failures ORDER BY stream_sequence")).map((r) => r.event_id === "")).toEqual([false, true, false]);
    } finally {
      await consumers.stop();
      await db.close();
    }
  });

  it("does not count as handled an event whose handler caught a failed statement (PostgreSQL would roll its COMMIT back and report success): it is retried, then dead-lettered; its neighbours are handled", async () => {
    const handle = async (event: ThingHappened, context: EventContext) => {
      await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, event.note]);
      // "Insert, or ignore the failure": the idiom that leaves a PostgreSQL transaction aborted.
      if (event.note === "swallows") await context.tx.run("INSERT INTO no_such_table VALUES (1)").catch(() => undefined);
    };
    await withWorker("caught", ["before", "swallows", "after"], handle, async (worker) => {
      await someLetter(worker);
      expect((await worker.lastLetter()).header.get("concord-dlq-reason")).toMatch(/a statement failed and its error was caught without being rethrown.*no_such_table/);
      await settled(worker.sample, worker.durable);
      expect(await worker.effects()).toEqual(["after", "before"]);
      expect((await worker.db.query<{ n: number }>("SELECT count(*)::int AS n FROM event_inbox"))[0].n).toBe(2);
    });
  });

  it("blames a write an event sent ahead on that event, not on the next one whose statement it went with: the next is handled without a failed attempt", async () => {
    const handle = async (event: ThingHappened, context: EventContext) => {
      await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, event.note]);
      // Its last write goes with the next statement, which is the next event's.
      if (event.note === "sendsbad") await sendAhead(context.tx, "INSERT INTO no_such_table VALUES (1)");
    };
    // Stream sequences 1, 2 and 3, in one batch.
    await withWorker("sent_ahead", ["before", "sendsbad", "after"], handle, async (worker) => {
      await someLetter(worker);
      const letter = await worker.lastLetter();
      expect(letter.header.get("concord-dlq-stream-sequence")).toBe("2");
      expect(letter.header.get("concord-dlq-reason")).toMatch(/no_such_table/);
      await settled(worker.sample, worker.durable);
      expect(await worker.effects()).toEqual(["after", "before"]);
      // Only the event that sent the write had failed attempts counted.
      expect((await worker.db.query<{ s: number }>("SELECT DISTINCT stream_sequence AS s FROM event_failures")).map((r) => Number(r.s))).toEqual([2]);
    });
  });

  it("blames a write an event sent ahead on that event at once when it fails with the event's own statement: its handler runs once an attempt", async () => {
    let runs = 0;
    const handle = async (event: ThingHappened, context: EventContext) => {
      await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, event.note]);
      if (event.note !== "ownbad") return;
      runs++;
      // Sent ahead, it fails with the event's own next statement (as a lock that times out fails the read after it).
      await sendAhead(context.tx, "INSERT INTO no_such_table VALUES (1)");
      await context.tx.query("SELECT 1");
    };
    await withWorker("own_ahead", ["before", "ownbad", "after"], handle, async (worker) => {
      await someLetter(worker);
      expect((await worker.lastLetter()).header.get("concord-dlq-stream-sequence")).toBe("2");
      await settled(worker.sample, worker.durable);
      expect(await worker.effects()).toEqual(["after", "before"]);
      const [counted] = await worker.db.query<{ failures: number }>("SELECT failures FROM event_failures WHERE stream_sequence = 2");
      // Known as its own failure in the batch's first pass, it is not run again in the careful pass of the same delivery.
      expect(runs).toBe(Number(counted.failures));
    });
  });

  describe("does not blame an event for a statement the event before it sent ahead (one attempt each: a blamed event would be dead-lettered)", () => {
    /** Events "a" then "b" in one batch, one attempt each; which were dead-lettered, and the effects. */
    const runPair = async (name: string, handle: ConsumerBinding<ThingHappened>["handle"]) => {
      let out: { letters: string[]; effects: string[] } | undefined;
      await withWorker(
        name,
        ["a", "b"],
        handle,
        async (worker) => {
          await settled(worker.sample, worker.durable);
          out = { letters: await worker.letters(), effects: await worker.effects() };
        },
        { maxDeliver: 1 },
      );
      return out;
    };
    const record = (context: EventContext, note: string) => context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, note]);

    it("when it times out as b checks a count of its own before a savepoint", async () => {
      const out = await runPair("ahead_timeout", async (event, context) => {
        if (event.note === "a") {
          await sendAhead(context.tx, "SET LOCAL statement_timeout = 300");
          await sendAhead(context.tx, "SELECT pg_sleep(1)");
          return;
        }
        await sendAhead(context.tx, "INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, "b"], { rows: 1, error: (n) => new Error(`${n} rows`) });
        await context.tx.savepoint((inner) => inner.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, "b in its savepoint"]));
      });
      expect(out).toEqual({ letters: ["1"], effects: ["b", "b in its savepoint"] });
    });

    it("when it fails ahead of b's savepoint, which the server then never opened", async () => {
      const out = await runPair("ahead_savepoint", async (event, context) => {
        if (event.note === "a") return void (await sendAhead(context.tx, "INSERT INTO no_such_table VALUES (1)"));
        await context.tx.savepoint((inner) => record({ ...context, tx: inner }, "b"));
      });
      expect(out).toEqual({ letters: ["1"], effects: ["b"] });
    });

    it("when b's handler catches that failure and then fails otherwise", async () => {
      const out = await runPair("ahead_caught", async (event, context) => {
        if (event.note === "a") return void (await sendAhead(context.tx, "INSERT INTO no_such_table VALUES (1)"));
        await context.tx.query("SELECT 1").catch(() => undefined);
        await record(context, "b");
      });
      expect(out).toEqual({ letters: ["1"], effects: ["b"] });
    });

    it("when b's savepoint work catches that failure and then fails otherwise", async () => {
      const out = await runPair("ahead_savepoint_caught", async (event, context) => {
        if (event.note === "a") return void (await sendAhead(context.tx, "INSERT INTO no_such_table VALUES (1)"));
        await context.tx.savepoint(async (inner) => {
          await inner.query("SELECT 1").catch(() => undefined);
          await record({ ...context, tx: inner }, "b");
        });
      });
      expect(out).toEqual({ letters: ["1"], effects: ["b"] });
    });

    it("nor for the database going away under its statement when its handler catches that and throws an error of its own: the batch is held and runs again", async () => {
      let cut = false;
      const out = await runPair("lost_caught", async (event, context) => {
        if (event.note === "a") return void (await record(context, "a"));
        if (!cut) {
          cut = true;
          await context.tx.query("SELECT pg_terminate_backend(pg_backend_pid())").catch(() => undefined);
          throw new Error("could not record b");
        }
        await record(context, "b");
      });
      expect(out).toEqual({ letters: [], effects: ["a", "b"] });
    });
  });
  it("decides a forged event that follows one whose write sent ahead fails in the run with savepoints, each dead letter counted once", async () => {
    const db = await openDatabase({ path: await postgres().createDatabase("forged_after_ahead"), migrations: [...eventMigrations, effectsTable] });
    const sample = sampleStream("forgedafterahead");
    await ensureStreams(bus.jsm, [sample.stream, deadLetterStreamSpec]);
    const things = createEventPublisher({ nc: bus.nc, source: "things" });
    await things.publish(sample.event, { thingId: "t-1", note: "sendsbad" });
    // Refused by the source check, outside the handler: its dead letter's reason is the batch's next statement.
    await createEventPublisher({ nc: bus.nc, source: "forger" }).publish(sample.event, { thingId: "t-2", note: "forged" });
    await things.publish(sample.event, { thingId: "t-3", note: "after" });
    const durable = "forgedafterahead-worker";
    const registry = new Registry();
    const consumers = await startConsumers({
      nc: bus.nc,
      db,
      service: "worker",
      logger,
      middleware: [consumerMetrics(registry)],
      streamSources: { [sample.stream.name]: "things" },
      consumers: [
        bindConsumer({
          spec: sample.consumerSpec(durable, { maxDeliver: 1 }),
          descriptor: sample.event,
          async handle(event, context) {
            await recordEffect(event, context);
            if (event.note === "sendsbad") await sendAhead(context.tx, "INSERT INTO no_such_table VALUES (1)");
          },
        }),
      ],
    });
    try {
      await settled(sample, durable);
      const subject = deadLetterSubject(deadLetterStreamSpec, sample.stream.name, durable);
      const { state } = await bus.jsm.streams.info(deadLetterStreamSpec.name);
      const letters: string[] = [];
      for (let seq = state.first_seq; seq <= state.last_seq; seq++) {
        const letter = await bus.jsm.streams.getMessage(deadLetterStreamSpec.name, { seq }).catch(() => undefined);
        if (letter?.subject === subject) letters.push(`${letter.header.get("concord-dlq-stream-sequence")}: ${letter.header.get("concord-dlq-reason")}`);
      }
      expect(letters).toEqual([expect.stringMatching(/^1: .*no_such_table/), expect.stringMatching(/^2: .*"forger"/)]);
      expect(await registry.getSingleMetricAsString("concord_consumer_dead_lettered_total")).toContain(`concord_consumer_dead_lettered_total{consumer="${durable}"} 2`);
      expect((await db.query<{ note: string }>("SELECT note FROM effects ORDER BY note")).map((r) => r.note)).toEqual(["after"]);
    } finally {
      await consumers.stop();
      await db.close();
    }
  });

  /**
   * Two instances, each with a batch of two events on a stream of its own,
   * in one database: the first instance's events update counters k3 then k1,
   * the second's k1 then k3, each row locked by its event's handler. Each
   * first event, its row locked, waits (at most `waitMs`) until the other
   * instance's first event has locked its row too, so that without batch
   * locks the two batches hold one row each and want the other's. Resolves
   * with the handlers' calls (instance:row) once both have settled, and the
   * counters.
   *
   * The consumers' ack wait is 40 s, so a transaction's budget is 5 s
   * (ackWaitMs / 8) and a batch's locks are waited for 10 s: a first event
   * that waited past the budget would commit alone, and no circle would
   * form. With the usual 5 s (a budget of 625 ms), an instance that began its
   * batch more than that after the other, as on a loaded machine, missed it.
   */
  const crossingBatches = async (name: string, lockBatch: BatchLocks<ThingHappened> | undefined, waitMs: number) => {
    const url = await postgres().createDatabase(name);
    const dbs = [await openDatabase({ path: url, migrations: [...eventMigrations, countersTable] })];
    dbs.push(await openDatabase({ path: url, migrations: [...eventMigrations, countersTable] }));
    await dbs[0].run("INSERT INTO counters (id, n) VALUES ('k1', 0), ('k3', 0)");
    const things = createEventPublisher({ nc: bus.nc, source: "things" });
    const instances = [["k3", "k1"], ["k1", "k3"]].map((rows, i) => {
      let locked!: () => void;
      const firstLocked = new Promise<void>((resolve) => (locked = resolve));
      return { rows, sample: sampleStream(`${name.replace(/_/g, "")}${i}`), durable: `${name.replace(/_/g, "")}-${i}`, firstLocked, locked };
    });
    for (const { sample, rows } of instances) {
      await ensureStreams(bus.jsm, [sample.stream]);
      // Published before the consumers start, so that each instance's two arrive together in one batch.
      for (const row of rows) await things.publish(sample.event, { thingId: `t-${row}`, note: row });
    }
    const calls: string[] = [];
    const running = await Promise.all(
      instances.map(({ sample, durable, rows, locked }, i) =>
        startConsumers({
          nc: bus.nc,
          db: dbs[i],
          service: "worker",
          logger,
          consumers: [
            bindConsumer({
              spec: sample.consumerSpec(durable, { ackWaitMs: 40_000 }),
              descriptor: sample.event,
              async handle(event, context) {
                calls.push(`${i}:${event.note}`);
                await context.tx.query("SELECT n FROM counters WHERE id = $1 FOR UPDATE", [event.note]);
                await context.tx.run("UPDATE counters SET n = n + 1 WHERE id = $1", [event.note]);
                if (event.note !== rows[0]) return;
                locked();
                await Promise.race([instances[1 - i].firstLocked, new Promise((resolve) => setTimeout(resolve, waitMs))]);
              },
              ...(lockBatch && { lockBatch }),
            }),
          ],
        }),
      ),
    );
    try {
      for (const { sample, durable } of instances) await settled(sample, durable);
      for (const { sample, durable } of instances) expect((await bus.jsm.consumers.info(sample.stream.name, durable)).num_redelivered).toBe(0);
      const counters = await dbs[0].query<{ id: string; n: number }>("SELECT id, n FROM counters ORDER BY id");
      return { calls: calls.sort(), counters: counters.map((c) => `${c.id}=${c.n}`) };
    } finally {
      await Promise.all(running.map((r) => r.stop()));
      await Promise.all(dbs.map((db) => db.close()));
    }
  };

  it("with batch locks, two instances' crossing batches take turns: each handler runs once, no lock wait ends in a timeout, no batch runs again", async () => {
    const taken: string[][] = [];
    const lockBatch: BatchLocks<ThingHappened> = async (events, tx) => {
      taken.push(events.map((e) => e.note));
      await tx.query("SELECT n FROM counters WHERE id = ANY($1) ORDER BY id FOR UPDATE", [[...new Set(events.map((e) => e.note))]]);
    };
    // The other instance cannot lock while this one's batch holds both rows: the first event's wait runs out.
    const { calls, counters } = await crossingBatches("crossing_locked", lockBatch, 1_000);
    expect(calls).toEqual(["0:k1", "0:k3", "1:k1", "1:k3"]);
    expect(counters).toEqual(["k1=2", "k3=2"]);
    // Each batch's first transaction held both events; a transaction of one event takes its locks alone.
    expect(taken.map((notes) => notes.join(" ")).sort()).toEqual(["k1 k3", "k3 k1"]);
  });

  it("without batch locks, the same crossing batches wait on each other in a circle until a lock wait ends, and their work is done again", async () => {
    // The other instance's first event locks its row once its batch begins: waited for up to 4 s, within the budget.
    const { calls, counters } = await crossingBatches("crossing_unlocked", undefined, 4_000);
    expect(calls.length).toBeGreaterThan(4);
    expect(counters).toEqual(["k1=2", "k3=2"]);
  });

  it("with batch locks, a row another session holds for long holds up only the event that needs it: the batch's events then take their own locks as they go", async () => {
    const url = await postgres().createDatabase("locks_held_long");
    const db = await openDatabase({ path: url, migrations: [...eventMigrations, countersTable] });
    await db.run("INSERT INTO counters (id, n) VALUES ('a', 0), ('b', 0)");
    const sample = sampleStream("locksheldlong");
    await ensureStreams(bus.jsm, [sample.stream]);
    const things = createEventPublisher({ nc: bus.nc, source: "things" });
    for (const note of ["a", "b", "a"]) await things.publish(sample.event, { thingId: `t-${note}`, note });
    // Another session (an operator's open transaction, a migration) holds row b.
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    await other.query("BEGIN");
    await other.query("SELECT n FROM counters WHERE id = 'b' FOR UPDATE");
    const consumers = await startConsumers({
      nc: bus.nc,
      db,
      service: "worker",
      logger,
      consumers: [
        bindConsumer({
          spec: sample.consumerSpec("locksheldlong-worker"),
          descriptor: sample.event,
          async handle(event, context) {
            await context.tx.run("UPDATE counters SET n = n + 1 WHERE id = $1", [event.note]);
          },
          async lockBatch(events, tx) {
            await tx.query("SELECT n FROM counters WHERE id = ANY($1) ORDER BY id FOR UPDATE", [[...new Set(events.map((e) => e.note))]]);
          },
        }),
      ],
    });
    const counter = async (id: string) => (await db.query<{ n: number }>("SELECT n FROM counters WHERE id = $1", [id]))[0].n;
    try {
      // Not after the first event's lock wait (10 s): after the wait for the batch's locks (twice the transaction's budget, 1.25 s here).
      await eventually("the event before the one that needs the held row is handled", async () => (await counter("a")) >= 1, 5_000);
      expect(await counter("b")).toBe(0);
      await other.query("COMMIT");
      await eventually("every event is handled once the row is free", async () => (await counter("b")) === 1 && (await counter("a")) === 2, 20_000);
    } finally {
      await other.end();
      await consumers.stop();
      await db.close();
    }
  });

  it("decodes a batch's events once: each handler gets the event its batch's locks were given", async () => {
    const db = await openDatabase({ path: await postgres().createDatabase("locks_decoded_once"), migrations: [...eventMigrations, effectsTable] });
    const sample = sampleStream("locksdecodedonce");
    await ensureStreams(bus.jsm, [sample.stream]);
    const things = createEventPublisher({ nc: bus.nc, source: "things" });
    const notes = ["one", "two", "three", "four", "five"];
    for (const note of notes) await things.publish(sample.event, { thingId: `t-${note}`, note });
    const durable = "locksdecodedonce-worker";
    const locked = new Set<ThingHappened>();
    const handled: Array<{ note: string; locked: boolean }> = [];
    const consumers = await startConsumers({
      nc: bus.nc,
      db,
      service: "worker",
      logger,
      consumers: [
        bindConsumer({
          spec: sample.consumerSpec(durable),
          descriptor: sample.event,
          async handle(event, context) {
            handled.push({ note: event.note, locked: locked.has(event) });
            await recordEffect(event, context);
          },
          async lockBatch(events) {
            for (const event of events) locked.add(event);
          },
        }),
      ],
    });
    try {
      await settled(sample, durable);
      expect(locked.size).toBe(notes.length);
      expect(handled).toEqual(notes.map((note) => ({ note, locked: true })));
      expect((await db.query<{ note: string }>("SELECT note FROM effects ORDER BY note")).map((r) => r.note)).toEqual([...notes].sort());
    } finally {
      await consumers.stop();
      await db.close();
    }
  });

  it("hands batch locks only the events that pass their checks; one that does not is dead-lettered as before", async () => {
    const db = await openDatabase({ path: await postgres().createDatabase("locks_checked"), migrations: [...eventMigrations, effectsTable] });
    const sample = sampleStream("lockschecked");
    await ensureStreams(bus.jsm, [sample.stream, deadLetterStreamSpec]);
    const things = createEventPublisher({ nc: bus.nc, source: "things" });
    await things.publish(sample.event, { thingId: "t-1", note: "one" });
    await createEventPublisher({ nc: bus.nc, source: "forger" }).publish(sample.event, { thingId: "t-2", note: "forged" });
    const h = natsHeaders();
    h.set("ce-specversion", "1.0");
    h.set("ce-id", "undecodable");
    h.set("ce-type", sample.event.typeName);
    h.set("ce-source", "things");
    await bus.js.publish("test.lockschecked.thing.t-x.happened", Uint8Array.of(0x0a, 0x05, 0x61), { headers: h });
    await things.publish(sample.event, { thingId: "t-4", note: "four" });
    const durable = "lockschecked-worker";
    const taken: string[][] = [];
    const consumers = await startConsumers({
      nc: bus.nc,
      db,
      service: "worker",
      logger,
      streamSources: { [sample.stream.name]: "things" },
      consumers: [
        bindConsumer({
          spec: sample.consumerSpec(durable),
          descriptor: sample.event,
          handle: recordEffect,
          async lockBatch(events) {
            taken.push(events.map((e) => e.note));
          },
        }),
      ],
    });
    try {
      await settled(sample, durable);
      // Run again with a savepoint per event, as the events that are refused void the first run: the same events each time.
      expect(taken.length).toBeGreaterThan(0);
      for (const notes of taken) expect(notes).toEqual(["one", "four"]);
      expect((await db.query<{ note: string }>("SELECT note FROM effects ORDER BY note")).map((r) => r.note)).toEqual(["four", "one"]);
      const subject = deadLetterSubject(deadLetterStreamSpec, sample.stream.name, durable);
      const { state } = await bus.jsm.streams.info(deadLetterStreamSpec.name);
      const reasons: string[] = [];
      for (let seq = state.first_seq; seq <= state.last_seq; seq++) {
        const letter = await bus.jsm.streams.getMessage(deadLetterStreamSpec.name, { seq }).catch(() => undefined);
        if (letter?.subject === subject) reasons.push(`${letter.header.get("concord-dlq-stream-sequence")}: ${letter.header.get("concord-dlq-reason")}`);
      }
      expect(reasons).toEqual([expect.stringMatching(/^2: .*"forger"/), expect.stringMatching(/^3: .*cannot be decoded/)]);
    } finally {
      await consumers.stop();
      await db.close();
    }
  });
});
