import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { sampleStream, ThingHappened } from "../../test/support/sample-events.js";
import { createLogger, type Logger } from "../log/index.js";
import { openDatabase, type Database } from "../sql/index.js";
import { bindConsumer, consumerPipeline, createInbox, createOutbox, defaultInboxRetentionMs, type Delivery, eventMigrations, inboxRetention } from "./index.js";
import { InboxRaceError } from "./inbox.js";

const logger = createLogger({ service: "inbox-test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
const dir = tempDirForSuite("concord-inbox-");
const day = 24 * 3_600_000;
const inbox = createInbox();
const claim = (db: Database, consumer: string, eventId: string) => db.transaction((tx) => inbox.claim(tx, consumer, eventId));
const ageBy = (db: Database, ms: number, where: string) => db.run(`UPDATE event_inbox SET processed_at = processed_at - $1 WHERE ${where}`, [ms]);
const ids = async (db: Database) => (await db.query<{ event_id: string }>("SELECT event_id FROM event_inbox ORDER BY event_id")).map((r) => r.event_id);

describe("the inbox", () => {
  it("claims an event once per consumer, and a rolled-back claim leaves nothing", async () => {
    const db = await openDatabase({ path: join(dir, "claim.db"), migrations: eventMigrations });
    expect(await claim(db, "a", "e-1")).toBe(true);
    expect(await claim(db, "a", "e-1")).toBe(false);
    expect(await claim(db, "b", "e-1")).toBe(true);
    await expect(db.transaction(async (tx) => {
      await inbox.claim(tx, "a", "e-2");
      throw new Error("the handler failed");
    })).rejects.toThrow("the handler failed");
    expect(await claim(db, "a", "e-2")).toBe(true);
    await db.close();
  });
});

/** The keys of the JSON object on `line`, in the order written, a repeated one as often as written (JSON.parse keeps one). */
function keysWritten(line: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < line.length; i++) {
    if (line[i] === '"') {
      let end = i + 1;
      while (line[end] !== '"') end += line[end] === "\\" ? 2 : 1;
      if (depth === 1 && line[end + 1] === ":") keys.push(JSON.parse(line.slice(i, end + 1)));
      i = end;
    } else if (line[i] === "{" || line[i] === "[") depth++;
    else if (line[i] === "}" || line[i] === "]") depth--;
  }
  return keys;
}

describe("the inbox step's lines", () => {
  it("name the consumer once, whether the logger given binds it already (startConsumers's does) or not", async () => {
    const db = await openDatabase({ path: join(dir, "lines.db"), migrations: eventMigrations });
    const sample = sampleStream("lines");
    const spec = sample.consumerSpec("lines-worker");
    let failures = 1;
    const binding = bindConsumer({
      spec,
      descriptor: sample.event,
      handle() {
        if (failures-- > 0) throw new Error("not yet");
      },
    });
    const outbox = createOutbox({ db, source: "things" });
    const event = { thingId: "t-1", note: "once" };
    const delivery = (eventId: string, deliveryCount: number): Delivery => ({
      consumer: spec.durable,
      stream: spec.stream,
      subject: "test.lines.thing.t-1.happened",
      streamSequence: deliveryCount,
      deliveryCount,
      headers: { "ce-specversion": "1.0", "ce-id": eventId, "ce-type": spec.eventType, "ce-source": "things" },
      data: ThingHappened.encode(event).finish(),
      storedAt: new Date(),
    });
    const written: string[] = [];
    const root = createLogger({ service: "things", level: "debug", destination: { write: (line: string) => void written.push(line) } });
    const loggers: Record<string, Logger> = { "bound as startConsumers binds it": root.child({ component: "event-consumer" }).child({ consumer: spec.durable, stream: spec.stream }), bare: root };
    for (const [name, logger] of Object.entries(loggers)) {
      written.length = 0;
      failures = 1;
      const pipeline = consumerPipeline({ binding, outbox, logger });
      const eventId = `e-${name}`;
      // A failed attempt (retried), the attempt that processes it, and a delivery of it again (acked by the inbox).
      const settled = [];
      for (const count of [1, 2, 3]) settled.push((await db.transaction((tx) => pipeline(delivery(eventId, count), tx))).kind);
      expect(settled, name).toEqual(["retry", "ack", "ack"]);
      const lines = written.map((line) => ({ keys: keysWritten(line), fields: JSON.parse(line) as Record<string, unknown> }));
      expect(lines.map((l) => l.fields.msg), name).toEqual(["event handler failed; retrying", "event already processed; acked without running the handler"]);
      for (const { keys, fields } of lines) {
        expect(keys, `${name}: ${fields.msg}`).toEqual([...new Set(keys)]);
        expect(fields, `${name}: ${fields.msg}`).toMatchObject({ consumer: spec.durable, stream: spec.stream });
      }
      expect(lines[1]!.fields).toMatchObject({ eventId, streamSequence: 3 });
    }
    await db.close();
  });
});

describe("the inbox's batch claims (processed, then record)", () => {
  it("lists the processed events among many in one query, writes staged records at the commit, and fails the commit when a record was made first", async () => {
    const db = await openDatabase({ path: join(dir, "batch.db"), migrations: eventMigrations });
    await claim(db, "a", "e-1");
    await claim(db, "b", "e-2");
    expect(await inbox.processed(db, "a", ["e-1", "e-2", "e-3"])).toEqual(new Set(["e-1"]));
    expect(await inbox.processed(db, "a", [])).toEqual(new Set());
    await db.transaction(async (tx) => {
      inbox.record(tx, "a", "e-2");
      inbox.record(tx, "a", "e-3");
      // Staged: nothing is written before the commit.
      expect(await inbox.processed(tx, "a", ["e-2", "e-3"])).toEqual(new Set());
    });
    expect(await inbox.processed(db, "a", ["e-1", "e-2", "e-3"])).toEqual(new Set(["e-1", "e-2", "e-3"]));
    // A record another transaction made first (an event processed twice at once) voids the whole transaction.
    await expect(
      db.transaction(async (tx) => {
        inbox.record(tx, "b", "e-3");
        inbox.record(tx, "b", "e-2");
      }),
    ).rejects.toBeInstanceOf(InboxRaceError);
    expect(await inbox.processed(db, "b", ["e-2", "e-3"])).toEqual(new Set(["e-2"]));
    await db.close();
  });

  it("writes staged records in one order, by consumer then event id, whatever order they were staged in (two transactions sharing events wait rather than deadlock)", async () => {
    const db = await openDatabase({ path: join(dir, "order.db"), migrations: eventMigrations });
    // A trigger fires once per row as the INSERT writes it: the log keeps the order of the writes.
    await db.run("CREATE TABLE written (n INTEGER PRIMARY KEY, consumer TEXT, event_id TEXT)");
    await db.run("CREATE TRIGGER log_writes AFTER INSERT ON event_inbox BEGIN INSERT INTO written (consumer, event_id) VALUES (new.consumer, new.event_id); END");
    const staged = [["b", "e-1"], ["a", "e-3"], ["a", "e-10"], ["b", "e-0"], ["a", "e-2"]];
    await db.transaction(async (tx) => {
      for (const [consumer, eventId] of staged) inbox.record(tx, consumer, eventId);
    });
    const written = await db.query<{ consumer: string; event_id: string }>("SELECT consumer, event_id FROM written ORDER BY n");
    expect(written.map((r) => `${r.consumer}/${r.event_id}`)).toEqual(["a/e-10", "a/e-2", "a/e-3", "b/e-0", "b/e-1"]);
    await db.close();
  });
});

describe("inboxRetention", () => {
  it("forgets processed events older than the retention (7 days by default) and keeps ignoring recent ones that come again", async () => {
    const db = await openDatabase({ path: join(dir, "inbox.db"), migrations: eventMigrations });
    for (const id of ["old-1", "old-2", "recent-1"]) await claim(db, "orders-stock-reserved", id);
    await claim(db, "orders-product-created", "recent-2");
    await ageBy(db, 8 * day, "event_id LIKE 'old-%'");
    await ageBy(db, 6 * day, "event_id = 'recent-2'");
    const retention = inboxRetention({ db, logger });
    try {
      expect(defaultInboxRetentionMs).toBe(7 * day);
      expect(await retention.prune()).toBe(2);
      expect(await ids(db)).toEqual(["recent-1", "recent-2"]);
      // A recent event that comes again still has no second effect.
      expect(await claim(db, "orders-stock-reserved", "recent-1")).toBe(false);
      expect(await claim(db, "orders-product-created", "recent-2")).toBe(false);
    } finally {
      await retention.stop();
      await db.close();
    }
  });

  it("keeps rows as long as a shorter retention says, and no longer", async () => {
    const db = await openDatabase({ path: join(dir, "short.db"), migrations: eventMigrations });
    await claim(db, "c", "two-hours-old");
    await claim(db, "c", "fresh");
    await ageBy(db, 2 * 3_600_000, "event_id = 'two-hours-old'");
    const retention = inboxRetention({ db, logger, retentionMs: 3_600_000 });
    try {
      expect(await retention.prune()).toBe(1);
      expect(await ids(db)).toEqual(["fresh"]);
    } finally {
      await retention.stop();
      await db.close();
    }
  });
});
