import { join } from "node:path";
import { connect } from "nats";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startNatsServer, useNatsServer } from "../../test/support/nats-server.js";
import { sampleStream, ThingHappened } from "../../test/support/sample-events.js";
import { eventually, readStream } from "../../test/support/streams.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { createLogger } from "../log/index.js";
import { openDatabase, type Database, type Transaction } from "../sql/index.js";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { OrderPlacedEvent } from "../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { createMessageChecker } from "../contracts/index.js";
import { Code, StatusError } from "../errors/index.js";
import { outboxAtShutdownLine } from "./event-runtime.js";
import { OutboxRelayGaveUp, OutboxUnread } from "./outbox-relay.js";
import { connectEventBus, createOutbox, createOutboxRelay, ensureStreams, InvalidEventError, outboxMigrations, parkedEvents, retryParked, type EventBus, type OutboxRelay } from "./index.js";

const logger = createLogger({ service: "outbox-test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
const dir = tempDirForSuite("concord-outbox-");
// Short timings keep the outage tests quick.
const fast = { sweepIntervalMs: 200, publishTimeoutMs: 1_000, retryMinMs: 50, retryMaxMs: 300 };

describe("outbox and relay", () => {
  const server = useNatsServer();
  let bus: EventBus;
  const cleanups: Array<() => Promise<void> | void> = [];
  let n = 0;

  const setup = async (key: string) => {
    const sample = sampleStream(key);
    const { atomicBatch: batchStreams } = await ensureStreams(bus.jsm, [sample.stream]);
    const db: Database = await openDatabase({ path: join(dir, `${key}-${++n}.db`), migrations: outboxMigrations });
    cleanups.push(() => db.close());
    const outbox = createOutbox({ db, source: "things" });
    /** Commits one transaction adding the events `add` makes, and resolves with what it returns. */
    const commit = <T>(add: (tx: Transaction) => T): Promise<T> => db.transaction(async (tx) => add(tx));
    return { sample, db, outbox, commit, batchStreams };
  };
  /** `db` whose queries are refused UNAVAILABLE (connection refused) while `state.away` is set. */
  const awayWhen = (db: Database, state: { away: boolean }): Database => ({
    ...db,
    query: ((sql: string, params?: Parameters<Database["query"]>[1]) =>
      state.away ? Promise.reject(StatusError.unavailable("the database is unavailable; try again shortly", new Error("connect ECONNREFUSED 127.0.0.1:5432"))) : db.query(sql, params)) as Database["query"],
  });
  const startRelay = (db: Database, extra: Partial<Parameters<typeof createOutboxRelay>[0]> = {}): OutboxRelay => {
    const relay = createOutboxRelay({ db, nc: bus.nc, logger, ...fast, ...extra });
    cleanups.unshift(() => relay.stop());
    return relay;
  };

  beforeAll(async () => {
    bus = await connectEventBus({ url: server().url, name: "outbox-test", logger });
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });
  afterAll(async () => {
    await bus?.close();
  });

  it("stores nothing from a rolled-back transaction or savepoint, or for a subject it cannot build", async () => {
    const { sample, db, outbox, commit } = await setup("rollback");
    await expect(
      db.transaction(async (tx) => {
        outbox.add(tx, sample.event, { thingId: "t-1", note: "" });
        throw new Error("the change failed");
      }),
    ).rejects.toThrow("the change failed");
    await expect(
      db.transaction(async (tx) => {
        await tx.savepoint(async (inner) => {
          outbox.add(inner, sample.event, { thingId: "t-2", note: "" });
          throw new Error("this part failed");
        }).catch(() => undefined);
      }),
    ).resolves.toBeUndefined();
    await expect(commit((tx) => outbox.add(tx, sample.event, { thingId: "a.b", note: "" }))).rejects.toThrow(/thing_id/);
    expect(await outbox.pending()).toBe(0);
    const relay = startRelay(db);
    await relay.flush();
    expect((await bus.jsm.streams.info(sample.stream.name)).state.messages).toBe(0);
  });

  it("publishes right after commit and flush waits for it", async () => {
    const { sample, db, outbox, commit } = await setup("commit");
    const relay = startRelay(db, { sweepIntervalMs: 60_000 });
    const trace = { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tracestate: "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE" };
    const id = await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-1", note: "first" }, trace));
    await relay.flush();
    const [stored] = await readStream(bus.jsm, sample.stream.name);
    expect(stored.subject).toBe("test.commit.thing.t-1.happened");
    expect(stored.headers.get("ce-id")).toBe(id);
    expect(stored.headers.get("Nats-Msg-Id")).toBe(id);
    expect(stored.headers.get("ce-source")).toBe("things");
    // The CloudEvents distributed tracing extension as the NATS binding maps it, and W3C trace context again under its own names.
    expect(stored.headers.get("traceparent")).toBe(trace.traceparent);
    expect(stored.headers.get("ce-traceparent")).toBe(trace.traceparent);
    expect(stored.headers.get("tracestate")).toBe("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    expect(stored.headers.get("ce-tracestate")).toBe("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    expect(stored.headers.get("ce-specversion")).toBe("1.0");
    expect(stored.headers.get("ce-type")).toBe(sample.event.typeName);
    expect(stored.headers.get("content-type")).toBe("application/protobuf");
    expect(stored.headers.get("ce-datacontenttype")).toBe("application/protobuf");
    expect(Math.abs(Date.parse(stored.headers.get("ce-time")) - Date.now())).toBeLessThan(60_000);
    expect([...stored.headers.keys()].sort()).toEqual([
      "Nats-Msg-Id", "ce-datacontenttype", "ce-id", "ce-source", "ce-specversion", "ce-time", "ce-traceparent", "ce-tracestate", "ce-type", "content-type", "traceparent", "tracestate",
    ]);
    expect(ThingHappened.decode(stored.data).note).toBe("first");
    expect(await outbox.pending()).toBe(0);
  });

  it("drops a tracestate that is not W3C (no header line can be smuggled in with it), and one whose traceparent was not kept", async () => {
    const { sample, db, outbox, commit } = await setup("tracestate");
    const relay = startRelay(db, { sweepIntervalMs: 60_000 });
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-1", note: "" }, { traceparent, tracestate: "a=1\r\nNats-Msg-Id: x" }));
    await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-2", note: "" }, { traceparent: "not-a-trace", tracestate: "a=1" }));
    await relay.flush();
    const [first, second] = await readStream(bus.jsm, sample.stream.name);
    expect(first.headers.get("traceparent")).toBe(traceparent);
    expect(first.headers.has("tracestate")).toBe(false);
    expect(first.headers.has("ce-tracestate")).toBe(false);
    expect(second.headers.get("traceparent")).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(second.headers.has("tracestate")).toBe(false);
  });

  it("keeps events while NATS is down and publishes each once, in order, when it is back", async () => {
    const { sample, db, outbox, commit } = await setup("outage");
    const { lines, logger: captured } = capturedLogger();
    const relay = startRelay(db, { logger: captured });
    await server().stopForRestart();
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(await commit((tx) => outbox.add(tx, sample.event, { thingId: `t-${i}`, note: String(i) })));
    expect(await outbox.pending()).toBe(20);
    await new Promise((r) => setTimeout(r, 500)); // the relay tries and fails meanwhile
    await server().restart();
    await relay.flush();

    const stored = await readStream(bus.jsm, sample.stream.name);
    expect(stored.map((m) => m.headers.get("ce-id"))).toEqual(ids);
    expect(stored.map((m) => ThingHappened.decode(m.data).note)).toEqual(ids.map((_, i) => String(i)));
    expect(await outbox.pending()).toBe(0);
    // The outage's end is logged once, however many events went out after it.
    await eventually("the relay logs that it publishes again", async () => lines.some((l) => l.component === "outbox-relay" && l.level === "info" && typeof l.msg === "string" && l.msg.startsWith("publishing outbox events works again after")));
    expect(lines.filter((l) => typeof l.msg === "string" && l.msg.startsWith("publishing outbox events works again after"))).toHaveLength(1);
  });

  it("publishes again after a crash between PubAck and mark, and JetStream drops the copies", async () => {
    const { sample, db, outbox, commit } = await setup("crash");
    let crashes = 0;
    const relay = startRelay(db, {
      beforeMarkSent: () => {
        if (crashes++ === 0) throw new Error("killed before marking the events sent");
      },
    });
    const ids = await commit((tx) => Array.from({ length: 10 }, (_, i) => outbox.add(tx, sample.event, { thingId: `t-${i}`, note: "" })));
    await relay.flush();

    // The first mark fails, so the events it covered (those whose PubAcks came in the first read) go out again.
    expect(crashes).toBeGreaterThanOrEqual(2);
    const { published, duplicates } = relay.stats();
    expect(published).toBe(10);
    expect(duplicates).toBeGreaterThanOrEqual(1);
    expect(await outbox.pending()).toBe(0);
    const stored = await readStream(bus.jsm, sample.stream.name);
    expect(stored.map((m) => m.headers.get("ce-id"))).toEqual(ids);
  });

  it("deletes acknowledged events once the database takes writes again, though nothing new is committed to wake it", async () => {
    const { sample, db, outbox, commit } = await setup("refused-mark");
    // The database takes no writes for a while (a full disk: 53100): the deletions of the events JetStream has fail,
    // the loop's own and its retry's, and the outbox then goes quiet.
    let refusals = 0;
    const relay = startRelay(db, {
      beforeMarkSent: () => {
        if (refusals < 3) {
          refusals++;
          throw Object.assign(new Error("could not extend file: No space left on device"), { code: "53100" });
        }
      },
    });
    const ids = await commit((tx) => Array.from({ length: 10 }, (_, i) => outbox.add(tx, sample.event, { thingId: `t-${i}`, note: "" })));
    await eventually("the deletions were refused three times", () => refusals === 3);
    await eventually("the outbox is emptied", async () => (await outbox.pending()) === 0, 5_000);
    // Deleted, not published again: JetStream has each once, and none went out twice.
    expect(relay.stats()).toEqual({ published: 10, duplicates: 0, parked: 0 });
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual(ids);
  });

  it("logs a mark that goes on failing once with its stack, not at every retry, and once that it works again", async () => {
    const { sample, db, outbox, commit } = await setup("failing-mark");
    const captured = capturedLogger("outbox-test");
    // As a service whose SQLite file was deleted under it refuses every write: the relay logged a stack at each retry.
    let refusals = 0;
    const relay = startRelay(db, {
      logger: captured.logger,
      beforeMarkSent: () => {
        if (refusals < 6) {
          refusals++;
          throw new StatusError(Code.UNAVAILABLE, "the service's database file was deleted or replaced while it ran");
        }
      },
    });
    const ids = await commit((tx) => Array.from({ length: 5 }, (_, i) => outbox.add(tx, sample.event, { thingId: `t-${i}`, note: "" })));
    await eventually("the marks were refused six times", () => refusals === 6, 10_000);
    await eventually("the outbox is emptied", async () => (await outbox.pending()) === 0, 5_000);
    const failed = captured.lines.filter((l) => /^(deleting|marking) published outbox events failed/.test(String(l.msg)));
    expect(failed).toHaveLength(1);
    expect((failed[0].err as { stack?: string }).stack).toMatch(/deleted or replaced/);
    expect(captured.lines.filter((l) => l.msg === "deleting published outbox events works again")).toHaveLength(1);
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual(ids);
    expect(relay.stats().published).toBe(5);
  });

  it("keeps an event no stream captures, publishes the ones after it, and sends it once a stream does", async () => {
    const { sample, db, outbox, commit } = await setup("captured");
    const orphan = sampleStream("uncaptured");
    const relay = startRelay(db, { sweepIntervalMs: 100 });
    const lost = await commit((tx) => outbox.add(tx, orphan.event, { thingId: "t-0", note: "" }));
    const later = await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-1", note: "" }));
    await eventually("the captured event is published", async () => (await bus.jsm.streams.info(sample.stream.name)).state.messages === 1);
    expect(await outbox.pending()).toBe(1);
    await ensureStreams(bus.jsm, [orphan.stream]);
    await relay.flush();
    expect((await readStream(bus.jsm, orphan.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([lost]);
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([later]);
  });

  it("logs once at info, after each outage, that publishing works again: how long it was held up and how many events wait", async () => {
    const { db, outbox, commit } = await setup("resumed");
    const refused = sampleStream("resumedlater");
    const { lines, logger: captured } = capturedLogger();
    const relay = startRelay(db, { logger: captured });
    const relayLines = () => lines.filter((l) => l.component === "outbox-relay");
    const resumedLines = () => relayLines().filter((l) => typeof l.msg === "string" && l.msg.startsWith("publishing outbox events works again"));
    for (let outage = 1; outage <= 2; outage++) {
      // No stream captures the subject: JetStream answers no PubAck and the relay retries, logging each failure.
      for (let i = 0; i < 5; i++) await commit((tx) => outbox.add(tx, refused.event, { thingId: `t-${outage}-${i}`, note: "" }));
      await eventually("the relay logs failures", async () => relayLines().filter((l) => typeof l.msg === "string" && l.msg.startsWith("publishing outbox events failed; they stay in the outbox")).length >= 2 * outage);
      await new Promise((r) => setTimeout(r, 300));
      expect(resumedLines()).toHaveLength(outage - 1);
      await ensureStreams(bus.jsm, [refused.stream]);
      await relay.flush();
      await eventually("the relay logs that it publishes again", async () => resumedLines().length === outage);
      const line = resumedLines()[outage - 1];
      expect(line).toMatchObject({ level: "info", waiting: 5 });
      expect(line.heldUpForMs).toBeGreaterThanOrEqual(300);
      expect(line.msg).toMatch(/^publishing outbox events works again after \d+\.\d s held up; 5 events wait in the outbox$/);
      // More events while nothing fails: no line of their own.
      for (let i = 0; i < 3; i++) await commit((tx) => outbox.add(tx, refused.event, { thingId: `u-${outage}-${i}`, note: "" }));
      await relay.flush();
      await new Promise((r) => setTimeout(r, 100));
      expect(resumedLines()).toHaveLength(outage);
      await bus.jsm.streams.delete(refused.stream.name);
    }
    expect(await outbox.pending()).toBe(0);
  });

  it("sends no event twice while the deletion of acknowledged ones waits behind a transaction", async () => {
    const { sample, db, outbox, commit } = await setup("held-mark");
    let reads = 0;
    const counting: Database = { ...db, query: (sql, params) => (/FROM event_outbox WHERE seq >/.test(sql) && reads++, db.query(sql, params)) };
    let held: Promise<unknown> | undefined;
    const relay = startRelay(counting, {
      sweepIntervalMs: 20,
      // Called just before the mark's DELETE is queued: a transaction queued first holds it until the loop has read twice.
      beforeMarkSent: () => {
        if (held) return;
        const from = reads;
        held = db.transaction(async () => {
          while (reads < from + 2) await new Promise((resolve) => setTimeout(resolve, 5));
        });
      },
    });
    const ids = await commit((tx) => Array.from({ length: 10 }, (_, i) => outbox.add(tx, sample.event, { thingId: `t-${i}`, note: "" })));
    await eventually("a mark waited behind the transaction", () => held !== undefined);
    await held;
    await relay.flush();
    // Stopping marks whatever was acknowledged since, a copy sent meanwhile included.
    await relay.stop();
    expect(relay.stats()).toEqual({ published: 10, duplicates: 0, parked: 0 });
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual(ids);
  });

  it("publishes at once an event whose commit takes again the seq of rows a mark has just deleted", async () => {
    const { sample, db, outbox, commit } = await setup("seq-again");
    let late: Promise<{ id: string; lastSeqBefore: number | null }> | undefined;
    const relay = startRelay(db, {
      // No sweep comes to the rescue: only the loop's own reads can find the late event.
      sweepIntervalMs: 60_000,
      beforeMarkSent: () => {
        if (late) return;
        // Queued before the mark's DELETE: holds it a little. Queued right after it: the late commit, into an empty outbox.
        void db.transaction(() => new Promise((resolve) => setTimeout(resolve, 100)));
        queueMicrotask(() => {
          late = db.transaction(async (tx) => {
            const [{ seq }] = await tx.query<{ seq: number | null }>("SELECT max(seq) AS seq FROM event_outbox");
            return { id: outbox.add(tx, sample.event, { thingId: "late", note: "" }), lastSeqBefore: seq };
          });
        });
      },
    });
    const ids = await commit((tx) => Array.from({ length: 3 }, (_, i) => outbox.add(tx, sample.event, { thingId: `t-${i}`, note: "" })));
    await eventually("the late commit is queued", () => late !== undefined);
    const { id, lastSeqBefore } = await late!;
    expect(lastSeqBefore, "the outbox was empty, so the late event took seq 1 again").toBeNull();
    await eventually("the late event is published", async () => (await bus.jsm.streams.info(sample.stream.name)).state.messages === 4, 5_000);
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([...ids, id]);
    await relay.stop();
    expect(relay.stats()).toEqual({ published: 4, duplicates: 0, parked: 0 });
  });

  it("ends, keeping its events, when its NATS connection is closed under it, without holding up the event loop", async () => {
    const { sample, db, outbox, commit } = await setup("closed-under");
    const nc = await connect({ servers: server().url });
    const relay = createOutboxRelay({ db, nc, logger, ...fast });
    cleanups.unshift(() => relay.stop());
    await new Promise((resolve) => setTimeout(resolve, 100));
    await nc.close();
    await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-0", note: "" }));
    let ticks = 0;
    const ticking = setInterval(() => ticks++, 10);
    await new Promise((resolve) => setTimeout(resolve, 300));
    clearInterval(ticking);
    // A relay that tried again at once, forever, left a 10 ms timer about one tick in 100 ms.
    expect(ticks).toBeGreaterThan(10);
    await relay.stop();
    expect(await outbox.pending()).toBe(1);
  });

  it("publishes many events pipelined, in commit order", async () => {
    const { sample, db, outbox, commit } = await setup("bulk");
    const relay = startRelay(db, { maxInFlight: 64 });
    const ids: string[] = [];
    for (let t = 0; t < 10; t++) await commit((tx) => { for (let i = 0; i < 50; i++) ids.push(outbox.add(tx, sample.event, { thingId: `t-${t}-${i}`, note: "" })); });
    await relay.flush();
    const stored = await readStream(bus.jsm, sample.stream.name);
    expect(stored.map((m) => m.headers.get("ce-id"))).toEqual(ids);
    expect(relay.stats().duplicates).toBe(0);
  });

  it("publishes a backlog of events for a stream that allows atomic batches in batches, a trickle one by one, in commit order", async () => {
    const { sample, db, outbox, commit, batchStreams } = await setup("batched");
    expect(batchStreams.map((b) => b.name)).toEqual([sample.stream.name]);
    const seen = { batched: 0, alone: 0 };
    const sub = bus.nc.subscribe("test.batched.>", { callback: (_, m) => void (m.headers?.get("Nats-Batch-Id") ? seen.batched++ : seen.alone++) });
    const relay = startRelay(db, { maxInFlight: 64, batchStreams, batchWhen: "backlog" });
    const ids: string[] = [];
    // A trickle: each event is out before the next commits, and none waits to make a batch.
    for (let t = 0; t < 5; t++) {
      ids.push(await commit((tx) => outbox.add(tx, sample.event, { thingId: `trickle-${t}`, note: "" })));
      await relay.flush();
    }
    await bus.nc.flush();
    expect(seen).toEqual({ batched: 0, alone: 5 });
    for (let t = 0; t < 10; t++) await commit((tx) => { for (let i = 0; i < 50; i++) ids.push(outbox.add(tx, sample.event, { thingId: `t-${t}-${i}`, note: "" })); });
    await relay.flush();
    await bus.nc.flush();
    sub.unsubscribe();
    const stored = await readStream(bus.jsm, sample.stream.name);
    expect(stored.map((m) => m.headers.get("ce-id"))).toEqual(ids);
    expect(seen.batched + seen.alone).toBe(505);
    expect(seen.batched).toBeGreaterThan(400);
    expect(relay.stats()).toEqual({ published: 505, duplicates: 0, parked: 0 });
  });

  it("tries a backlog one by one and then in batches, on a server that fsyncs each message and on one that does not, in commit order", async () => {
    const backlog = async (on: EventBus, name: string) => {
      const sample = sampleStream(name);
      const { atomicBatch: batchStreams } = await ensureStreams(on.jsm, [sample.stream]);
      const db = await openDatabase({ path: join(dir, `${name}.db`), migrations: outboxMigrations });
      cleanups.push(() => db.close());
      const outbox = createOutbox({ db, source: "test" });
      const seen: boolean[] = [];
      const sub = on.nc.subscribe(`test.${name}.>`, { callback: (_, m) => void seen.push(Boolean(m.headers?.get("Nats-Batch-Id"))) });
      const ids: string[] = [];
      for (let t = 0; t < 6; t++) await db.transaction(async (tx) => { for (let i = 0; i < 500; i++) ids.push(outbox.add(tx, sample.event, { thingId: `t-${t}-${i}`, note: "" })); });
      const relay = createOutboxRelay({ db, nc: on.nc, logger, ...fast, batchStreams });
      cleanups.unshift(() => relay.stop());
      await relay.flush();
      await on.nc.flush();
      sub.unsubscribe();
      expect((await readStream(on.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual(ids);
      return seen;
    };
    // On any server, one that fsyncs each message or not, the first block of a backlog goes out one by one and the next
    // is tried in batches, in commit order. Which wins depends on the machine's speed at that moment (batch-trial.test.ts
    // decides on given rates; the bench's durability scenario measures the relay on a syncing server).
    const syncing = await startNatsServer({ syncAlways: true });
    const syncingBus = await connectEventBus({ url: syncing.url, name: "outbox-test-sync", logger });
    cleanups.push(async () => {
      await syncingBus.close();
      await syncing.stop();
    });
    for (const [on, name] of [[syncingBus, "paced-sync"], [bus, "paced-usual"]] as const) {
      const seen = await backlog(on, name);
      expect(seen.slice(0, 1_024).filter(Boolean)).toHaveLength(0);
      expect(seen.slice(1_024, 2_048).some(Boolean)).toBe(true);
    }
  }, 120_000);

  it("sends a batch holding events the stream already has (a relay that died between PubAck and mark) one by one, each stored once, in order", async () => {
    const { sample, db, outbox, commit, batchStreams } = await setup("batchcrash");
    const ids = await commit((tx) => Array.from({ length: 10 }, (_, i) => outbox.add(tx, sample.event, { thingId: `t-${i}`, note: "" })));
    const dying = createOutboxRelay({ db, nc: bus.nc, logger, ...fast, batchStreams, batchWhen: "backlog", beforeMarkSent: () => { throw new Error("killed before marking the events sent"); } });
    await eventually("the stream holds the events", async () => (await bus.jsm.streams.info(sample.stream.name)).state.messages === 10);
    await dying.stop();
    expect(await outbox.pending()).toBe(10);
    // The next relay's first batch holds ten events the stream has: the stream refuses it whole, and they go one by one.
    const relay = startRelay(db, { batchStreams, minBatch: 2, batchWhen: "backlog" });
    await relay.flush();
    expect(relay.stats()).toMatchObject({ published: 10, duplicates: 10 });
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual(ids);
  });

  it("sends a batch holding an event the stream refuses for good one by one: that event is parked, the others stored in order", async () => {
    const { sample, db, outbox, commit, batchStreams } = await setup("batchparked");
    await bus.jsm.streams.update(sample.stream.name, { max_msg_size: 512 });
    const [first, big, later] = await commit((tx) => [
      outbox.add(tx, sample.event, { thingId: "t-0", note: "" }),
      outbox.add(tx, sample.event, { thingId: "t-1", note: "n".repeat(1_000) }),
      outbox.add(tx, sample.event, { thingId: "t-2", note: "" }),
    ]);
    const relay = startRelay(db, { sweepIntervalMs: 100, batchStreams, minBatch: 2, batchWhen: "backlog" });
    await relay.flush();
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([first, later]);
    expect((await parkedEvents(db)).map((p) => p.eventId)).toEqual([big]);
  });

  it("stores events within the limit their stream is provisioned with, batch headers and all, and parks one over it with JetStream's reason, later events flowing", async () => {
    const { sample, db, outbox, commit, batchStreams } = await setup("provisionedlimit");
    // The limit a contract gives (its events' largest, with room for headers), set by the operator's provisioning.
    await ensureStreams(bus.jsm, [{ ...sample.stream, maxMessageBytes: 4_096 }], { operator: true });
    const [first, fits, big, later] = await commit((tx) => [
      outbox.add(tx, sample.event, { thingId: "t-0", note: "" }),
      outbox.add(tx, sample.event, { thingId: "t-1", note: "n".repeat(3_000) }),
      outbox.add(tx, sample.event, { thingId: "t-2", note: "n".repeat(5_000) }),
      outbox.add(tx, sample.event, { thingId: "t-3", note: "" }),
    ]);
    const relay = startRelay(db, { sweepIntervalMs: 100, batchStreams, minBatch: 2, batchWhen: "backlog" });
    await relay.flush();
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([first, fits, later]);
    const parked = await parkedEvents(db);
    expect(parked.map((p) => p.eventId)).toEqual([big]);
    expect(parked[0].reason).toMatch(/message size exceeds maximum allowed \(10054\)/);
    expect(await outbox.pending()).toBe(0);
  });

  it("stops retrying once the process began to stop: a failure from then on ends the relay, its events left in the outbox, said once by the stop's line", async () => {
    const { sample, db, outbox, commit } = await setup("gaveup");
    const state = { away: false };
    const wrapped = awayWhen(db, state);
    const { lines, logger: captured } = capturedLogger();
    const relay = startRelay(wrapped, { logger: captured, sweepIntervalMs: 50 });
    await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-0", note: "" }));
    await relay.flush();
    // Before the stop, an outage is retried and said.
    state.away = true;
    await eventually("the relay retries the outage", async () => lines.some((l) => String(l.msg).startsWith("the outbox relay cannot read the database; retrying")));
    relay.standDown();
    const from = lines.length;
    // Committed as the service stops: left in the outbox, not read again.
    state.away = false;
    await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-1", note: "" }));
    state.away = true;
    await new Promise((r) => setTimeout(r, 1_000));
    expect(lines.slice(from).filter((l) => l.level === "warn" || l.level === "error").map((l) => l.msg)).toEqual([]);
    const left = await relay.flush().catch((err: unknown) => err);
    expect(left).toBeInstanceOf(OutboxRelayGaveUp);
    expect(outboxAtShutdownLine(left, false, new Error("not flushed within 5000 ms"), 5_000)).toEqual({
      fields: { reason: "the outbox could not be read: the database is unavailable; try again shortly" },
      msg:
        "the outbox relay stopped at a failure as the service stops, and did not retry it (the outbox could not be read: the database is unavailable; try again shortly); " +
        "events committed and not yet published, if any, stay in the outbox and go out at the next start",
    });
    await relay.stop();
    state.away = false;
    expect(await outbox.pending()).toBe(1);
  });

  it("stops within about a second past its PubAck timeout while the database hangs, leaving its statement under way", async () => {
    const { db } = await setup("hungstop");
    const state = { hung: false };
    const wrapped: Database = {
      ...db,
      query: ((sql: string, params?: Parameters<Database["query"]>[1]) => (state.hung ? new Promise(() => {}) : db.query(sql, params))) as Database["query"],
    };
    const relay = startRelay(wrapped, { sweepIntervalMs: 50 });
    await relay.flush();
    state.hung = true;
    // The next sweep's read is under way, and never answered.
    await new Promise((r) => setTimeout(r, 300));
    const started = performance.now();
    await relay.stop();
    // publishTimeoutMs (1 s) and a second for the last mark: it waited for the read, for ever.
    expect(performance.now() - started).toBeLessThan(3_000);
  });

  it("says a flush that could not read the outbox (the database away) could not, and tells once it has read events to publish", async () => {
    const { sample, db, outbox, commit } = await setup("unread");
    const state = { away: false };
    const wrapped = awayWhen(db, state);
    const relay = startRelay(wrapped);
    state.away = true;
    let read = false;
    const failed = await relay.flush(() => (read = true)).catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(OutboxUnread);
    expect(read).toBe(false);
    const timedOut = new Error("not flushed within 5000 ms");
    // It said "events left in the outbox at shutdown", with the driver's stack, of an outbox it could not read.
    expect(outboxAtShutdownLine(failed, read, timedOut, 5_000)).toEqual({
      fields: { reason: "the database is unavailable; try again shortly" },
      msg: "the outbox could not be read at shutdown (the database is unavailable; try again shortly); events committed and not yet published, if any, go out at the next start",
    });
    // A database that hangs: no answer in time, nothing read.
    expect(outboxAtShutdownLine(timedOut, false, timedOut, 5_000).msg).toBe(
      "the outbox could not be read at shutdown (no answer within 5000 ms); events committed and not yet published, if any, go out at the next start",
    );
    // Read, events there, not published in time (NATS hanging): they are left.
    expect(outboxAtShutdownLine(timedOut, true, timedOut, 5_000).msg).toBe("events left in the outbox at shutdown (not flushed within 5000 ms); nothing is lost: they go out at the next start");
    state.away = false;
    await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-1", note: "" }));
    await relay.flush(() => (read = true));
    expect(read).toBe(true);
    expect(await outbox.pending()).toBe(0);
  });

  it("leaves events for the next start once stopped", async () => {
    const { sample, db, outbox, commit } = await setup("stop");
    const relay = startRelay(db);
    await relay.stop();
    await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-1", note: "" }));
    await expect(relay.flush()).rejects.toThrow(/stopped/);
    expect(await outbox.pending()).toBe(1);
    await startRelay(db).flush();
    expect(await outbox.pending()).toBe(0);
    expect((await bus.jsm.streams.info(sample.stream.name)).state.messages).toBe(1);
  });

  it("refuses an event that breaks its contract or is over the server's max_payload, and stores nothing", async () => {
    const { sample, db, commit } = await setup("rules");
    const outbox = createOutbox({ db, source: "orders", checker: createMessageChecker(descriptorSet), maxPayloadBytes: () => 4_096 });
    const placed = {
      orderId: "0190a5b4-7c4e-7d3e-9f1a-123456789abc",
      customerId: "c-1",
      lines: [{ productId: "x".repeat(600), productName: "Teapot", quantity: 1, unitPrice: { currencyCode: "EUR", amountMinor: 1 }, lineTotal: { currencyCode: "EUR", amountMinor: 1 } }],
      total: { currencyCode: "EUR", amountMinor: 1 },
      linesVersion: 1,
    };
    const refused = await commit((tx) => outbox.add(tx, OrderPlacedEvent, placed)).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(InvalidEventError);
    expect((refused as InvalidEventError).violations.map((v) => v.field)).toEqual(["lines[0].product_id"]);
    expect((refused as Error).message).toMatch(/OrderPlaced event breaks its contract: lines\[0\]\.product_id/);
    const big = createOutbox({ db, source: "things", maxPayloadBytes: () => 4_096 });
    await expect(commit((tx) => big.add(tx, sample.event, { thingId: "t-1", note: "n".repeat(5_000) }))).rejects.toThrow(/over the server's limit of 4096 \(max_payload\)/);
    expect(await outbox.pending()).toBe(0);
  });

  it("parks an event JetStream refuses for good, with its reason, so later events flow; it can be sent again", async () => {
    const { sample, db, outbox, commit } = await setup("parked");
    // The stream takes messages of at most 512 bytes: the big event can never be stored.
    await bus.jsm.streams.update(sample.stream.name, { max_msg_size: 512 });
    const relay = startRelay(db, { sweepIntervalMs: 100 });
    const first = await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-0", note: "" }));
    const big = await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-1", note: "n".repeat(1_000) }));
    const later = await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-2", note: "" }));
    await relay.flush();
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([first, later]);
    expect(relay.stats().parked).toBe(1);
    const [parked, ...others] = (await parkedEvents(db));
    expect(others).toEqual([]);
    expect(parked).toMatchObject({ eventId: big, subject: "test.parked.thing.t-1.happened", type: sample.event.typeName });
    expect(parked.reason).toMatch(/message size exceeds maximum allowed \(10054\)/);
    // A row stored before the outbox checked sizes, over the server's max_payload: parked too.
    const huge = "0190a5b4-7c4e-7d3e-9f1a-123456789abd";
    await db.run("INSERT INTO event_outbox (event_id, subject, type, payload, headers, created_at) VALUES ($1, $2, $3, $4, $5, $6)", [
      huge,
      "test.parked.thing.t-3.happened",
      sample.event.typeName,
      Buffer.alloc(1_200_000),
      Buffer.from(`NATS/1.0\r\nce-id: ${huge}\r\nNats-Msg-Id: ${huge}\r\n\r\n`),
      Date.now(),
    ]);
    const after = await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-4", note: "" }));
    await relay.flush();
    expect((await parkedEvents(db)).map((p) => p.eventId)).toEqual([big, huge]);
    expect((await parkedEvents(db))[1].reason).toMatch(/MAX_PAYLOAD_EXCEEDED|max_payload|maximum payload/i);
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([first, later, after]);
    // The operator raises the stream's limit and sends the parked event again.
    await bus.jsm.streams.update(sample.stream.name, { max_msg_size: -1 });
    expect(await retryParked(db, [big])).toBe(1);
    await relay.flush();
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([first, later, after, big]);
    expect((await parkedEvents(db)).map((p) => p.eventId)).toEqual([huge]);
  });

  it("parks a row whose subject NATS cannot carry (white space in it), alone or in a batch, without the server dropping the connection", async () => {
    const { sample, db, outbox, commit, batchStreams } = await setup("badsubject");
    const clientIdBefore = bus.nc.info?.client_id;
    const first = await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-0", note: "" }));
    // Rows the outbox itself would not write (it checks each subject token): put there by hand, or by an older version.
    const spaced = "0190a5b4-7c4e-7d3e-9f1a-123456789ac1";
    const crlf = "0190a5b4-7c4e-7d3e-9f1a-123456789ac2";
    for (const [id, subject] of [[spaced, "test.badsubject.thing.t 1.happened"], [crlf, "test.badsubject.thing.t-2.happened\r\nPUB x 0"]]) {
      await db.run("INSERT INTO event_outbox (event_id, subject, type, payload, headers, created_at) VALUES ($1, $2, $3, $4, $5, $6)", [
        id, subject, sample.event.typeName, Buffer.alloc(0), Buffer.from(`NATS/1.0\r\nce-id: ${id}\r\nNats-Msg-Id: ${id}\r\n\r\n`), Date.now(),
      ]);
    }
    const later = await commit((tx) => outbox.add(tx, sample.event, { thingId: "t-3", note: "" }));
    const relay = startRelay(db, { sweepIntervalMs: 100, batchStreams, minBatch: 2, batchWhen: "backlog" });
    await relay.flush();
    expect((await readStream(bus.jsm, sample.stream.name)).map((m) => m.headers.get("ce-id"))).toEqual([first, later]);
    const parked = await parkedEvents(db);
    expect(parked.map((p) => p.eventId).sort()).toEqual([spaced, crlf].sort());
    for (const p of parked) expect(p.reason).toMatch(/subject .* cannot be sent: NATS subjects hold no white space/);
    // The server gives a connection made again another client id.
    expect(bus.nc.info?.client_id).toBe(clientIdBefore);
  });

  it("validates its options", async () => {
    const { db } = await setup("options");
    expect(() => createOutboxRelay({ db, nc: bus.nc, logger, maxInFlight: 0 })).toThrow(/maxInFlight/);
    expect(() => createOutboxRelay({ db, nc: bus.nc, logger, bogus: true } as never)).toThrow(/unknown option bogus/);
    expect(() => createOutbox({ db, source: "things", bogus: 1 } as never)).toThrow(/unknown option bogus/);
  });
});
