import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Registry } from "prom-client";
import { DiscardPolicy, MsgHdrsImpl, headers as natsHeaders } from "nats";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { useNatsServer } from "../../test/support/nats-server.js";
import { wireHeaders } from "./nats-internals.js";
import { sampleStream, ThingHappened, thingHappenedType, type ThingHappened as Thing } from "../../test/support/sample-events.js";
import { eventually } from "../../test/support/streams.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { StatusError } from "../errors/index.js";
import { createLogger } from "../log/index.js";
import { openDatabase, type Database } from "../sql/index.js";
import {
  bindConsumer,
  connectEventBus,
  consumerLagMetrics,
  consumerMetrics,
  createEventPublisher,
  createOutbox,
  deadLetterStreamSpec,
  deadLetterSubject,
  ensureStreams,
  eventMigrations,
  startConsumers,
  type ConsumerSpec,
  type DeliveryMiddleware,
  type Settlement,
  type EventBus,
  type EventContext,
  type RunningConsumers,
  UnprocessableEventError,
} from "./index.js";

// Errors are kept for the tests that read what an operator is told; TEST_LOG_LEVEL shows every line as well.
const logged: Array<Record<string, unknown>> = [];
const logger = createLogger({
  service: "consumer-test",
  level: process.env.TEST_LOG_LEVEL ?? "error",
  destination: {
    write: (line: string) => {
      logged.push(JSON.parse(line));
      if (process.env.TEST_LOG_LEVEL) process.stdout.write(line);
    },
  },
});
const dir = tempDirForSuite("concord-consumer-");
const effectsTable = { id: "test_0001_effects", sql: "CREATE TABLE effects (event_id TEXT NOT NULL, note TEXT NOT NULL)" };

describe("startConsumers", () => {
  const server = useNatsServer();
  let bus: EventBus;
  const cleanups: Array<() => Promise<void> | void> = [];

  beforeAll(async () => {
    bus = await connectEventBus({ url: server().url, name: "consumer-test", logger });
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });
  afterAll(async () => {
    await bus?.close();
  });

  /** A stream, a database and a consumer whose handler records an effect row, or does what `behave` says first. */
  const setup = async (key: string, behave: (event: Thing, context: EventContext) => void = () => {}, spec: Partial<ConsumerSpec> = {}, pullBatch?: number, middleware?: DeliveryMiddleware[]) => {
    const sample = sampleStream(key);
    await ensureStreams(bus.jsm, [sample.stream]);
    const db: Database = await openDatabase({ path: join(dir, `${key}.db`), migrations: [...eventMigrations, effectsTable] });
    cleanups.push(() => db.close());
    const attempts = new Map<string, number>();
    const contexts: EventContext[] = [];
    const consumerSpec = sample.consumerSpec(`${key}-worker`, spec);
    const start = () =>
      startConsumers({
        nc: bus.nc,
        db,
        service: "worker",
        logger,
        ...(pullBatch !== undefined && { pullBatch }),
        ...(middleware && { middleware }),
        consumers: [
          bindConsumer({
            spec: consumerSpec,
            descriptor: sample.event,
            async handle(event, context) {
              attempts.set(event.note, (attempts.get(event.note) ?? 0) + 1);
              contexts.push(context);
              await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, event.note]);
              behave(event, context);
            },
          }),
        ],
      });
    let consumers: RunningConsumers = await start();
    cleanups.unshift(() => consumers.stop());
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    const effects = async (note?: string) =>
      (note === undefined
        ? await db.query<{ n: number }>("SELECT count(*) AS n FROM effects")
        : await db.query<{ n: number }>("SELECT count(*) AS n FROM effects WHERE note = $1", [note]))[0].n;
    const publish = (note: string, traceparent?: string) => publisher.publish(sample.event, { thingId: `t-${note}`, note }, { traceparent });
    const deadLetter = async () => {
      const subject = deadLetterSubject(deadLetterStreamSpec, sample.stream.name, consumerSpec.durable);
      try {
        return await bus.jsm.streams.getMessage(deadLetterStreamSpec.name, { last_by_subj: subject });
      } catch {
        return undefined;
      }
    };
    const settled = async () =>
      eventually("the consumer has nothing pending", async () => {
        const info = await bus.jsm.consumers.info(sample.stream.name, consumerSpec.durable);
        return info.num_pending === 0 && info.num_ack_pending === 0;
      });
    const restart = async () => {
      await consumers.stop();
      consumers = await start();
    };
    const consumerInfo = () => bus.jsm.consumers.info(sample.stream.name, consumerSpec.durable);
    return { sample, db, consumerSpec, attempts, contexts, effects, publish, deadLetter, settled, consumerInfo, restart, stop: () => consumers.stop() };
  };

  it("hands the decoded event and its context to the handler, acks, and provisions the consumer", async () => {
    const t = await setup("roundtrip");
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const published = await t.publish("hello", traceparent);
    await eventually("the event is handled", async () => (await t.effects("hello")) === 1);
    const [context] = t.contexts;
    expect(context).toMatchObject({ eventId: published.eventId, subject: "test.roundtrip.thing.t-hello.happened", traceparent, deliveryCount: 1, streamSequence: published.streamSequence });
    expect(Math.abs(context.time.getTime() - Date.now())).toBeLessThan(10_000);
    expect(context.headers["ce-type"]).toBe(thingHappenedType);
    await t.settled();
    const info = await bus.jsm.consumers.info(t.sample.stream.name, t.consumerSpec.durable);
    expect(info.config).toMatchObject({ filter_subject: t.consumerSpec.filterSubject, max_deliver: -1, ack_policy: "explicit" });
    expect(info.config.ack_wait).toBe(t.consumerSpec.ackWaitMs * 1_000_000);
  });

  it("retries a handler that throws twice, then has its effect once; later events keep flowing", async () => {
    const times: number[] = [];
    const t = await setup(
      "flaky",
      (event, context) => {
        if (event.note !== "flaky") return;
        times.push(Date.now());
        if (context.deliveryCount < 3) throw new Error("not yet");
      },
      { backoffMs: [100, 300], maxDeliver: 5 },
    );
    await t.publish("flaky");
    await t.publish("after");
    await eventually("both events are handled", async () => (await t.effects("flaky")) === 1 && (await t.effects("after")) === 1);
    expect(t.attempts.get("flaky")).toBe(3);
    // The delay follows the delivery count: backoffMs[0] after attempt 1, backoffMs[1] after attempt 2.
    expect(times[1] - times[0]).toBeGreaterThanOrEqual(90);
    expect(times[2] - times[1]).toBeGreaterThanOrEqual(280);
    await t.settled();
    expect(await t.deadLetter()).toBeUndefined();
  });

  it("commits events that arrive together in one transaction, rolling back only the one whose handler throws", async () => {
    const t = await setup(
      "batch",
      (event, context) => {
        if (event.note === "n3" && context.deliveryCount === 1) throw new Error("first try fails");
      },
      { backoffMs: [50], maxDeliver: 3 },
    );
    await t.stop();
    for (let i = 1; i <= 6; i++) await t.publish(`n${i}`);
    await t.restart();
    await eventually("every event has its effect", async () => (await t.effects()) === 6);
    for (let i = 1; i <= 6; i++) expect(await t.effects(`n${i}`)).toBe(1);
    expect(t.attempts.get("n3")).toBe(2);
    await t.settled();
  });

  it("runs a batch without savepoints and, when one event fails, again with one per event: the failing handler runs once per delivery, each delivery is counted once", async () => {
    const registry = new Registry();
    const t = await setup(
      "fastpath",
      (event, context) => {
        if (event.note === "f4" && context.deliveryCount === 1) throw new Error("first try fails");
      },
      { backoffMs: [50], maxDeliver: 3 },
      undefined,
      [consumerMetrics(registry)],
    );
    await t.stop();
    for (let i = 1; i <= 6; i++) await t.publish(`f${i}`);
    await t.restart();
    await eventually("every event has its effect", async () => (await t.effects()) === 6);
    await t.settled();
    for (let i = 1; i <= 6; i++) expect(await t.effects(`f${i}`)).toBe(1);
    // f4 failed once (the run without savepoints), was given its error again in the run with them, then succeeded.
    expect(t.attempts.get("f4")).toBe(2);
    // Events after the failing one were not reached in the first run; those before ran in both, one of which committed.
    for (const note of ["f5", "f6"]) expect(t.attempts.get(note)).toBe(1);
    const text = await registry.metrics();
    const consumer = `consumer="${t.consumerSpec.durable}"`;
    expect(text).toContain(`concord_consumer_handled_total{${consumer}} 6`);
    expect(text).toContain(`concord_consumer_retried_total{${consumer}} 1`);
  });

  it("keeps events of slow handlers, being handled or waiting, from being redelivered while the process lives", async () => {
    const busy = (ms: number) => {
      const until = performance.now() + ms;
      while (performance.now() < until);
    };
    // 12 events of 400 ms each, 6 pulled at a time: the last is handled 4.8 s after it arrived, with ack_wait 3 s.
    const t = await setup("slow", () => busy(400), { ackWaitMs: 3_000 }, 6);
    await t.stop();
    for (let i = 1; i <= 12; i++) await t.publish(`s${i}`);
    await t.restart();
    await eventually("every event is handled", async () => (await t.effects()) === 12, 20_000);
    await t.settled();
    const info = await bus.jsm.consumers.info(t.sample.stream.name, t.consumerSpec.durable);
    expect(info.delivered.consumer_seq).toBe(12);
    expect([...t.attempts.values()].every((n) => n === 1)).toBe(true);
  }, 30_000);

  it("dead-letters an event whose handler always throws after maxDeliver attempts, with reason and origin", async () => {
    const t = await setup("poison", (event) => {
      if (event.note === "poison") throw new Error("cannot handle\nthis one");
    });
    const published = await t.publish("poison");
    await t.publish("after");
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined);
    await eventually("the later event is handled", async () => (await t.effects("after")) === 1);
    expect(t.attempts.get("poison")).toBe(3);
    expect(await t.effects("poison")).toBe(0);
    const dead = (await t.deadLetter())!;
    expect(ThingHappened.decode(dead.data)).toEqual({ thingId: "t-poison", note: "poison" });
    const h = dead.header;
    expect(h.get("concord-dlq-reason")).toBe("cannot handle this one");
    expect(h.get("concord-dlq-subject")).toBe("test.poison.thing.t-poison.happened");
    expect(h.get("concord-dlq-stream")).toBe(t.sample.stream.name);
    expect(h.get("concord-dlq-stream-sequence")).toBe(String(published.streamSequence));
    expect(h.get("concord-dlq-consumer")).toBe(t.consumerSpec.durable);
    expect(h.get("concord-dlq-delivery-count")).toBe("3");
    expect(h.get("ce-id")).toBe(published.eventId);
    expect(h.get("ce-type")).toBe(thingHappenedType);
    // The log names the dead letter as `concord dlq show` and `replay` take it.
    const line = logged.find((l) => l.consumer === t.consumerSpec.durable && l.deadLetterSequence !== undefined);
    expect(line).toMatchObject({ level: "error", reason: "cannot handle this one", streamSequence: published.streamSequence, deadLetterSequence: dead.seq, eventId: published.eventId });
    // Tracing is off: no span to name.
    expect(line).not.toHaveProperty("trace_id");
    expect(line!.msg).toBe(`event sent to the dead letter stream as ${dead.seq}: \`npx concord dlq show ${dead.seq}\` shows it; once what failed is put right, \`npx concord dlq replay ${dead.seq}\` sends it again`);
    await t.settled();
  });

  it("counts attempts that failed, not deliveries: an event handed back untried at earlier stops still gets maxDeliver attempts", async () => {
    const t = await setup("handedback", (event) => {
      if (event.note === "flaky") throw new Error("not yet");
    });
    await t.stop();
    await t.publish("flaky");
    // Three deliveries handed back without being tried, as a stopping consumer hands back what it pulled ahead.
    const raw = await bus.js.consumers.get(t.sample.stream.name, t.consumerSpec.durable);
    for (let n = 1; n <= 3; n++) {
      const msg = await raw.next({ expires: 5_000 });
      expect(msg?.info.redeliveryCount).toBe(n);
      msg!.nak();
    }
    await t.restart();
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined);
    // maxDeliver is 3 (the sample spec's): three attempts, not one.
    expect(t.attempts.get("flaky")).toBe(3);
    expect((await t.deadLetter())!.header.get("concord-dlq-delivery-count")).toBe("6");
    await t.settled();
    // A replay from the dead letter stream is a new message: its attempts start again from none.
    expect(await t.db.query("SELECT stream_sequence, failures FROM event_failures")).toEqual([{ stream_sequence: expect.any(Number), failures: 3 }]);
  });

  it("counts the attempts of each message apart: the same event published again starts from none", async () => {
    const t = await setup("republished", (event) => {
      if (event.note === "again") throw new Error("never");
    });
    const first = await t.publish("again");
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined);
    expect(t.attempts.get("again")).toBe(3);
    // Published again with the same ce-id (past JetStream's duplicate window, or a replay of its dead letter): three attempts again.
    const stored = await bus.jsm.streams.getMessage(t.sample.stream.name, { seq: first.streamSequence });
    await bus.js.publish(stored.subject, stored.data, { headers: stored.header, msgID: `${first.eventId}-again` });
    await eventually("the copy is tried three times", async () => t.attempts.get("again") === 6);
    await t.settled();
    expect((await t.db.query<{ failures: number }>("SELECT failures FROM event_failures ORDER BY stream_sequence")).map((r) => r.failures)).toEqual([3, 3]);
  });

  it("holds no more than maxHeldBytes of large events published ahead, as the server counts what it delivered, and handles them all", async () => {
    const sample = sampleStream("bigevents");
    await ensureStreams(bus.jsm, [sample.stream]);
    const db: Database = await openDatabase({ path: join(dir, "bigevents.db"), migrations: [...eventMigrations, effectsTable] });
    cleanups.push(() => db.close());
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    for (let i = 1; i <= 24; i++) await publisher.publish(sample.event, { thingId: `t-${i}`, note: "x".repeat(200 * 1024) });
    const spec = sample.consumerSpec("bigevents-worker");
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let handled = 0;
    const consumers = await startConsumers({
      nc: bus.nc,
      db,
      service: "worker",
      logger,
      maxHeldBytes: 2 * 1024 * 1024,
      consumers: [
        bindConsumer({
          spec,
          descriptor: sample.event,
          async handle() {
            await gate;
            handled++;
          },
        }),
      ],
    });
    cleanups.unshift(() => consumers.stop());
    // The first handler waits: nothing is settled, and the server's figures are what the consumer holds.
    const info = () => bus.jsm.consumers.info(spec.stream, spec.durable);
    await eventually("the consumer has stopped pulling or has pulled everything", async () => {
      const { num_waiting, num_pending, num_ack_pending } = await info();
      return num_ack_pending > 0 && (num_pending === 0 || num_waiting === 0);
    });
    const { num_ack_pending, num_pending } = await info();
    // 2 MiB hold 10 of them; all 24 were pulled at once before.
    expect(num_ack_pending).toBeLessThanOrEqual(10);
    expect(num_pending).toBe(24 - num_ack_pending);
    open();
    await eventually("every event is handled", () => handled === 24);
  });

  it("dead-letters an undecodable payload or a wrong ce-type at once; later events keep flowing", async () => {
    const t = await setup("garbage");
    const raw = (type: string, data: Uint8Array) => {
      const h = natsHeaders();
      h.set("ce-specversion", "1.0");
      h.set("ce-id", `raw-${type}`);
      h.set("ce-type", type);
      h.set("ce-source", "test");
      return bus.js.publish("test.garbage.thing.t-x.happened", data, { headers: h });
    };
    await raw(thingHappenedType, Uint8Array.of(0x0a, 0x05, 0x61)); // a string field that claims 5 bytes but has 1
    await eventually("the undecodable event is dead-lettered", async () => (await t.deadLetter()) !== undefined);
    const undecodable = (await t.deadLetter())!;
    expect(undecodable.header.get("concord-dlq-reason")).toMatch(/cannot be decoded/);
    expect(undecodable.header.get("concord-dlq-delivery-count")).toBe("1");
    expect([...undecodable.data]).toEqual([0x0a, 0x05, 0x61]);

    await raw("concord.test.v1.SomethingElse", ThingHappened.encode({ thingId: "x", note: "x" }).finish());
    await eventually("the wrong type is dead-lettered", async () => (await t.deadLetter())?.header.get("concord-dlq-reason")?.includes("SomethingElse") ?? false);
    await t.publish("after");
    await eventually("the later event is handled", async () => (await t.effects("after")) === 1);
    expect(await t.effects()).toBe(1);
    await t.settled();
  });

  it("logs a flood of dead letters ten a window, one line each, and the rest in one line that counts them (at the latest when it stops)", async () => {
    const t = await setup("flood");
    const h = natsHeaders();
    for (const [name, value] of Object.entries({ "ce-specversion": "1.0", "ce-type": thingHappenedType, "ce-source": "test" })) h.set(name, value);
    for (let i = 0; i < 25; i++) {
      h.set("ce-id", `flood-${i}`);
      await bus.js.publish("test.flood.thing.t-x.happened", Uint8Array.of(0x0a, 0x05, 0x61), { headers: h }); // does not decode
    }
    await t.settled();
    await t.stop();
    const mine = logged.filter((l) => l.consumer === t.consumerSpec.durable);
    expect(mine.filter((l) => String(l.msg).startsWith("event sent to the dead letter stream as "))).toHaveLength(10);
    const told = mine.filter((l) => l.deadLettered !== undefined);
    expect(told.reduce((n, l) => n + Number(l.deadLettered), 0)).toBe(15);
    expect(told[0].msg).toMatch(/more events sent to the dead letter stream, as \d+ to \d+ .*`npx concord dlq list --consumer flood-worker --from \d+` lists them$/);
  });

  it("dead-letters at once an event whose subject its fields do not make, that is not CloudEvents 1.0 protobuf, whose ce-time is not RFC 3339, or whose ce-id cannot key the inbox; later events keep flowing", async () => {
    const t = await setup("forged");
    const raw = (id: string, subject: string, thingId: string, extra: Record<string, string> = {}) => {
      const h = natsHeaders();
      const all = { "ce-specversion": "1.0", "ce-id": id, "ce-type": thingHappenedType, "ce-source": "test", ...extra };
      for (const [name, value] of Object.entries(all)) h.set(name, value);
      return bus.js.publish(subject, ThingHappened.encode({ thingId, note: id }).finish(), { headers: h });
    };
    const reasons: string[] = [];
    const filed = async (why: RegExp) => {
      await eventually(`a dead letter matching ${why}`, async () => why.test((await t.deadLetter())?.header.get("concord-dlq-reason") ?? ""));
      reasons.push((await t.deadLetter())!.header.get("concord-dlq-reason")!);
    };
    // The payload says thing t-a, the subject thing t-b: a consumer of t-b's events would act on t-a.
    await raw("forged-1", "test.forged.thing.t-b.happened", "t-a");
    await filed(/came on test\.forged\.thing\.t-b\.happened, but its fields make its subject test\.forged\.thing\.t-a\.happened/);
    await raw("old-spec", "test.forged.thing.t-c.happened", "t-c", { "ce-specversion": "0.3" });
    await filed(/not a CloudEvents 1\.0 event: its ce-specversion is "0\.3"/);
    await raw("json", "test.forged.thing.t-d.happened", "t-d", { "ce-datacontenttype": "application/json" });
    await filed(/declared "application\/json" \(ce-datacontenttype\)/);
    // CloudEvents SDKs declare it in the plain content-type alone.
    await raw("plain-json", "test.forged.thing.t-i.happened", "t-i", { "content-type": "application/json" });
    await filed(/declared "application\/json" \(content-type\), which is not a protobuf payload \(application\/protobuf\)/);
    // Protobuf, but of another message, as the parameter some producers add says.
    await raw("other-message", "test.forged.thing.t-j.happened", "t-j", { "content-type": "application/protobuf; proto=concord.test.v1.SomethingElse" });
    await filed(/\(content-type\), which names the message "concord\.test\.v1\.SomethingElse", not concord\.test\.v1\.ThingHappened/);
    // CloudEvents' time is optional, but RFC 3339 when present.
    await raw("bad-time", "test.forged.thing.t-l.happened", "t-l", { "ce-time": "not-a-time" });
    await filed(/ce-time "not-a-time" is not an RFC 3339 time/);
    expect(await t.effects()).toBe(0);
    await raw("x".repeat(5_000), "test.forged.thing.t-f.happened", "t-f");
    await filed(/has a ce-id of 5000 characters, more than 256, so it cannot be deduplicated/);
    await raw("tab\there", "test.forged.thing.t-g.happened", "t-g");
    await filed(/has a control character in its ce-id/);
    await raw("caf\ufffd", "test.forged.thing.t-h.happened", "t-h");
    await filed(/has bytes in its ce-id that are not UTF-8/);
    expect((await t.db.query<{ n: number }>("SELECT count(*) AS n FROM event_inbox"))[0].n, "nothing of theirs in the inbox").toBe(0);
    await raw("fine", "test.forged.thing.t-e.happened", "t-e", { "ce-datacontenttype": "application/protobuf", "ce-time": "2026-12-07T20:42:40.123456789+01:00" });
    await eventually("the well-formed event is handled", async () => (await t.effects("fine")) === 1);
    // Media types are matched as RFC 6838 has it (any case, parameters), and the older x-protobuf name other SDKs write is taken.
    await raw("fine-too", "test.forged.thing.t-k.happened", "t-k", { "ce-datacontenttype": "Application/X-Protobuf", "content-type": `application/protobuf ; proto="${thingHappenedType}"` });
    await eventually("the event declared in other words is handled", async () => (await t.effects("fine-too")) === 1);
    await t.settled();
  });

  it("dead-letters at once an event that carries a CloudEvents attribute twice with different values, keeping every value in the dead letter, or under two spellings of its name, one it had as a duplicate of a processed id too; the same value twice is taken", async () => {
    const t = await setup("repeated");
    const raw = (id: string, thingId: string, repeat: Record<string, string>) => {
      const h = natsHeaders();
      const all = { "ce-specversion": "1.0", "ce-id": id, "ce-type": thingHappenedType, "ce-source": "test" };
      for (const [name, value] of Object.entries(all)) h.set(name, value);
      for (const [name, value] of Object.entries(repeat)) h.append(name, value);
      return bus.js.publish(`test.repeated.thing.${thingId}.happened`, ThingHappened.encode({ thingId, note: `${id}-${thingId}` }).finish(), { headers: h });
    };
    const reasons: string[] = [];
    const filed = async (why: RegExp) => {
      await eventually(`a dead letter matching ${why}`, async () => why.test((await t.deadLetter())?.header.get("concord-dlq-reason") ?? ""));
      reasons.push((await t.deadLetter())!.header.get("concord-dlq-reason")!);
    };
    await t.publish("first");
    await eventually("the first event is handled", async () => (await t.effects()) === 1);
    const processed = t.contexts[0].eventId;
    // nats-py takes the last value of a header, nats.js and nats.go the first: a Python consumer would see another event.
    await raw("two-types", "t-a", { "ce-type": "concord.test.v1.SomethingElse" });
    await filed(/message carries ce-type more than once, with different values/);
    // The dead letter shows what was sent: every value of the repeated header, in order.
    expect((await t.deadLetter())!.header.values("ce-type")).toEqual([thingHappenedType, "concord.test.v1.SomethingElse"]);
    await raw(processed, "t-first", { "ce-id": "a-new-id" });
    await filed(/message carries ce-id more than once, with different values/);
    expect((await t.deadLetter())!.header.values("ce-id")).toEqual([processed, "a-new-id"]);
    await raw("two-versions", "t-b", { "ce-specversion": "0.3" });
    await filed(/message carries ce-specversion more than once/);
    // A reader that ignores the case of names (as headerValue does for a name missing in lower case) sees two ce-types.
    await raw("two-spellings", "t-d", { "CE-Type": "concord.test.v1.SomethingElse" });
    await filed(/message carries CE-Type more than once, with different values/);
    expect(await t.effects(), "none of them handled").toBe(1);
    await raw("same-twice", "t-c", { "ce-type": thingHappenedType, "ce-id": "same-twice", "Ce-Source": "test" });
    await eventually("an attribute repeated with its own value is taken", async () => (await t.effects()) === 2);
    await t.settled();
    expect(reasons).toHaveLength(4);
  });

  it("files an event near the server's max_payload without its payload when the dead letter's headers would not fit, and acks it", async () => {
    const t = await setup("huge");
    const h = natsHeaders();
    h.set("ce-specversion", "1.0");
    h.set("ce-id", "raw-huge");
    h.set("ce-type", "concord.test.v1.SomethingElse");
    h.set("ce-source", "test");
    // Fits with its own headers; the dead letter's headers (reason, origin, time) would take it over.
    const size = bus.nc.info!.max_payload - 400;
    await bus.js.publish("test.huge.thing.t-x.happened", new Uint8Array(size), { headers: h });
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined);
    const letter = (await t.deadLetter())!;
    expect(letter.header.get("concord-dlq-payload-omitted")).toBe(String(size));
    expect(letter.header.get("concord-dlq-reason")).toMatch(/SomethingElse/);
    expect(letter.header.get("ce-id")).toBe("raw-huge");
    expect(letter.data.byteLength).toBe(0);
    await t.settled();
    await t.publish("after");
    await eventually("the later event is handled", async () => (await t.effects("after")) === 1);
  });

  it("files an event whose headers nats.js cannot send again (a name with a space, a bare line feed) or that fill a message's 64 KiB of headers (with one attribute's values too), and acks it", async () => {
    const t = await setup("oddheaders");
    // Header blocks as another client may send them: the server stores them, nats.js refuses to encode such a name or value.
    const raw = (id: string, extra: string) => {
      const block = `NATS/1.0\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-type: concord.test.v1.SomethingElse\r\nce-source: test\r\n${extra}\r\n\r\n`;
      return bus.js.publish(`test.oddheaders.thing.t-${id}.happened`, ThingHappened.encode({ thingId: `t-${id}`, note: id }).finish(), { headers: wireHeaders(Buffer.from(block, "latin1")) });
    };
    const filed = async (id: string) => {
      await eventually(`${id} is dead-lettered`, async () => (await t.deadLetter())?.header.get("ce-id") === id);
      return (await t.deadLetter())!;
    };
    await raw("spaced", "x trace: 1\r\nx-kept: yes");
    const spaced = await filed("spaced");
    expect(spaced.header.get("concord-dlq-reason")).toMatch(/SomethingElse/);
    expect(spaced.header.get("x-kept")).toBe("yes");
    expect(spaced.header.keys()).not.toContain("x trace");
    await raw("linefeed", "x-note: one\ntwo");
    expect((await filed("linefeed")).header.get("x-note")).toBe("");
    await raw("latin", "x-caf\u00e9: 1");
    await filed("latin");
    // Just under the 64 KiB a stream takes in headers: the dead letter's own headers would take it over.
    await raw("padded", `x-pad: ${"a".repeat(64_800)}`);
    const padded = await filed("padded");
    expect(padded.header.get("concord-dlq-reason")).toMatch(/SomethingElse/);
    // As full of one CloudEvents attribute given again and again: the smallest filing keeps 16 of its values.
    const line = (i: number) => `ce-type: concord.test.v1.Other${String(i).padStart(5, "0")}`;
    await raw("repeated", Array.from({ length: Math.floor(65_200 / (line(0).length + 2)) }, (_, i) => line(i)).join("\r\n"));
    const repeated = await filed("repeated");
    expect(repeated.header.get("concord-dlq-reason")).toMatch(/carries ce-type more than once/);
    expect(repeated.header.values("ce-type")).toEqual(["concord.test.v1.SomethingElse", ...Array.from({ length: 15 }, (_, i) => line(i).slice("ce-type: ".length))]);
    await t.settled();
    await t.publish("after");
    await eventually("the later event is handled", async () => (await t.effects("after")) === 1);
  });

  it("has no second effect when an event is delivered again, beyond JetStream's dedup", async () => {
    const t = await setup("again");
    const published = await t.publish("once");
    await eventually("the event is handled", async () => (await t.effects("once")) === 1);
    // The same event re-published under another Nats-Msg-Id, as after the duplicate window.
    const original = await bus.jsm.streams.getMessage(t.sample.stream.name, { seq: published.streamSequence });
    const h = natsHeaders();
    for (const name of original.header.keys()) if (name !== "Nats-Msg-Id") h.set(name, original.header.get(name));
    const copy = await bus.js.publish(original.subject, original.data, { headers: h, msgID: "another-id" });
    expect(copy.duplicate).toBe(false);
    await t.publish("next");
    await eventually("the next event is handled", async () => (await t.effects("next")) === 1);
    await t.settled();
    expect(await t.effects("once")).toBe(1);
    expect(t.attempts.get("once")).toBe(1);
  });

  it("has one effect when the same event comes twice in one batch", async () => {
    const t = await setup("twice-in-batch");
    await t.stop();
    const published = await t.publish("dup");
    const original = await bus.jsm.streams.getMessage(t.sample.stream.name, { seq: published.streamSequence });
    const h = natsHeaders();
    for (const name of original.header.keys()) if (name !== "Nats-Msg-Id") h.set(name, original.header.get(name));
    await bus.js.publish(original.subject, original.data, { headers: h, msgID: "the-copy" });
    await t.publish("after-dup");
    // Stored before the consumer runs again, the three arrive together: one transaction reads the inbox once for all of them.
    await t.restart();
    await eventually("the event after the copy is handled", async () => (await t.effects("after-dup")) === 1);
    await t.settled();
    expect(await t.effects("dup")).toBe(1);
    expect(t.attempts.get("dup")).toBe(1);
    expect((await t.db.query<{ n: number }>("SELECT count(*) AS n FROM event_inbox WHERE consumer = $1", [t.consumerSpec.durable]))[0].n).toBe(2);
  });

  it("commits emitted events with the handler's effects, and drops them when it throws", async () => {
    const sampleOut = sampleStream("emitted");
    await ensureStreams(bus.jsm, [sampleOut.stream]);
    const t = await setup("emitter", (event, context) => {
      context.emit(sampleOut.event, { thingId: event.thingId, note: `from ${event.note}` });
      if (context.deliveryCount === 1) throw new Error("fail after emitting");
    });
    const outbox = createOutbox({ db: t.db, source: "worker" });
    await t.publish("cause");
    await eventually("the event is handled", async () => (await t.effects("cause")) === 1);
    expect(await outbox.pending()).toBe(1);
    const [row] = await t.db.query<{ subject: string; headers: Buffer }>("SELECT subject, headers FROM event_outbox");
    expect(row.subject).toBe("test.emitted.thing.t-cause.happened");
    const headers = MsgHdrsImpl.decode(row.headers);
    expect(headers.get("ce-source")).toBe("worker");
    expect(headers.get("traceparent")).toBe(t.contexts[1].traceparent);
  });

  it("runs a service's own middleware around the default chain, seeing every delivery and what becomes of it", async () => {
    const seen: Array<{ note: string; attempt: number; settlement: Settlement["kind"] }> = [];
    // What became of a delivery is known once its batch commits (a batch may run again: a failing event, a conflict).
    const observe: DeliveryMiddleware = (next) => async (delivery, tx) => {
      const settlement = await next(delivery, tx);
      tx.afterCommit(() => seen.push({ note: ThingHappened.decode(delivery.data).note, attempt: delivery.deliveryCount, settlement: settlement.kind }));
      return settlement;
    };
    const t = await setup(
      "observed",
      (event, context) => {
        if (event.note === "twice" && context.deliveryCount === 1) throw new Error("first try fails");
        if (event.note === "never") throw new Error("always fails");
      },
      { backoffMs: [20], maxDeliver: 2 },
      undefined,
      [observe],
    );
    for (const note of ["once", "twice", "never"]) await t.publish(note);
    await eventually("every delivery is seen", () => seen.length === 5);
    expect(seen).toEqual(
      expect.arrayContaining([
        { note: "once", attempt: 1, settlement: "ack" },
        { note: "twice", attempt: 1, settlement: "retry" },
        { note: "twice", attempt: 2, settlement: "ack" },
        { note: "never", attempt: 1, settlement: "retry" },
        { note: "never", attempt: 2, settlement: "deadLetter" },
      ]),
    );
  });

  it("counts each consumer's handled, retried and dead-lettered deliveries and their latency with consumerMetrics, and reads its lag from JetStream", async () => {
    const registry = new Registry();
    const t = await setup(
      "metered",
      (event, context) => {
        if (event.note === "twice" && context.deliveryCount === 1) throw new Error("first try fails");
        if (event.note === "never") throw new Error("always fails");
      },
      { backoffMs: [20], maxDeliver: 2 },
      undefined,
      [consumerMetrics(registry)],
    );
    consumerLagMetrics({ registry, consumers: [t.consumerSpec], jsm: () => bus.jsm });
    for (const note of ["once", "twice", "never"]) await t.publish(note);
    await eventually("the event that never succeeds is dead-lettered", async () => (await t.deadLetter()) !== undefined);
    await t.settled();
    const text = await registry.metrics();
    const consumer = `consumer="${t.consumerSpec.durable}"`;
    expect(text).toContain(`concord_consumer_handled_total{${consumer}} 2`);
    expect(text).toContain(`concord_consumer_retried_total{${consumer}} 2`);
    expect(text).toContain(`concord_consumer_dead_lettered_total{${consumer}} 1`);
    expect(text).toContain(`concord_consumer_handling_seconds_count{${consumer}} 5`);
    expect(text).toContain(`concord_consumer_pending{${consumer},stream="${t.sample.stream.name}"} 0`);
    // Stopped, the consumer falls behind by what is published meanwhile.
    await t.stop();
    await t.publish("later");
    await t.publish("evenlater");
    // The server counts a consumer's pending messages a moment after it stores them.
    const lagOfTwo = `concord_consumer_pending{${consumer},stream="${t.sample.stream.name}"} 2`;
    await eventually("the scrape shows a lag of two", async () => (await registry.metrics()).includes(lagOfTwo));
  });

  it("counts a dead letter once it is filed: a filing that fails (no dead letter stream) and is decided again counts once", async () => {
    const registry = new Registry();
    const t = await setup(
      "filedonce",
      (event) => {
        if (event.note === "bad") throw new UnprocessableEventError("this one can never be processed");
      },
      {},
      undefined,
      [consumerMetrics(registry)],
    );
    await bus.jsm.streams.delete(deadLetterStreamSpec.name);
    try {
      await t.publish("bad");
      await eventually("filing failed and the event came again", async () => (await bus.jsm.consumers.info(t.sample.stream.name, t.consumerSpec.durable)).num_redelivered >= 1, 10_000);
    } finally {
      await ensureStreams(bus.jsm, [deadLetterStreamSpec]);
    }
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined, 10_000);
    await t.settled();
    expect(await registry.metrics()).toContain(`concord_consumer_dead_lettered_total{consumer="${t.consumerSpec.durable}"} 1`);
  });

  it("says why the dead letter stream refused a filing when it is full (a max_msgs with discard new), and files the event once there is room", async () => {
    const t = await setup("dlqfull", (event) => {
      if (event.note === "bad") throw new UnprocessableEventError("this one can never be processed");
    });
    await ensureStreams(bus.jsm, [deadLetterStreamSpec]);
    const before = await bus.jsm.streams.info(deadLetterStreamSpec.name);
    if (before.state.messages === 0) await bus.js.publish(deadLetterSubject(deadLetterStreamSpec, "TEST_FILLER", "filler-worker"), new Uint8Array(0));
    const held = (await bus.jsm.streams.info(deadLetterStreamSpec.name)).state.messages;
    await bus.jsm.streams.update(deadLetterStreamSpec.name, { ...before.config, max_msgs: held, discard: DiscardPolicy.New });
    const from = logged.length;
    const failed = () => logged.slice(from).find((line) => line.msg === "publishing to the dead letter stream failed; the event will be redelivered");
    try {
      await t.publish("bad");
      await eventually("filing failed", async () => failed() !== undefined, 10_000);
      // nats.js makes the error's message the answer's code alone, "503".
      expect((failed()!.err as { message: string }).message).toMatch(/^the dead letter stream CONCORD_DLQ refused it: maximum messages exceeded \(JetStream error 10077\)/);
    } finally {
      await bus.jsm.streams.update(deadLetterStreamSpec.name, before.config);
    }
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined, 20_000);
  });

  it("files again a dead letter whose filing failed after pauses that double (1, 2, 4 s), not every second", async () => {
    const t = await setup("filingpause", (event) => {
      if (event.note === "bad") throw new UnprocessableEventError("this one can never be processed");
    });
    await bus.jsm.streams.delete(deadLetterStreamSpec.name);
    try {
      await t.publish("bad");
      await eventually("filing failed once", async () => (t.attempts.get("bad") ?? 0) >= 1);
      await new Promise((r) => setTimeout(r, 6_500));
      // Deliveries at about 0, 1, 3 and 7 s; every second would have made 7. The handler ran at the first alone:
      // the decision is kept, and each redelivery is filed with its reason.
      const { delivered } = await t.consumerInfo();
      expect(delivered.consumer_seq).toBeGreaterThanOrEqual(2);
      expect(delivered.consumer_seq).toBeLessThanOrEqual(4);
      expect(t.attempts.get("bad")).toBe(1);
    } finally {
      await ensureStreams(bus.jsm, [deadLetterStreamSpec]);
    }
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined, 20_000);
  });

  it("does not count a dead letter that was filed before its ack was lost (the filing comes back as a duplicate)", async () => {
    const registry = new Registry();
    const t = await setup(
      "filedbefore",
      (event) => {
        if (event.note === "bad") throw new UnprocessableEventError("this one can never be processed");
      },
      {},
      undefined,
      [consumerMetrics(registry)],
    );
    await t.stop();
    const published = await t.publish("bad");
    // As the filing of a process that died before its ack: same dead letter id (stream, sequence, consumer).
    const msgID = `${t.sample.stream.name}.${published.streamSequence}.${t.consumerSpec.durable}`;
    await bus.js.publish(deadLetterSubject(deadLetterStreamSpec, t.sample.stream.name, t.consumerSpec.durable), new Uint8Array(0), { msgID });
    await t.restart();
    await t.settled();
    const text = await registry.metrics();
    expect(text).not.toContain(`concord_consumer_dead_lettered_total{consumer="${t.consumerSpec.durable}"} 1`);
    const info = await bus.jsm.streams.info(deadLetterStreamSpec.name, { subjects_filter: deadLetterSubject(deadLetterStreamSpec, t.sample.stream.name, t.consumerSpec.durable) });
    expect(info.state.subjects?.[deadLetterSubject(deadLetterStreamSpec, t.sample.stream.name, t.consumerSpec.durable)]).toBe(1);
  });

  it("stops cleanly and resumes from the durable consumer", async () => {
    const t = await setup("resume");
    await t.publish("before");
    await eventually("the first event is handled", async () => (await t.effects("before")) === 1);
    await t.stop();
    await t.publish("while-stopped");
    await new Promise((r) => setTimeout(r, 200));
    expect(await t.effects("while-stopped")).toBe(0);
    await t.restart();
    await eventually("the event published while stopped is handled", async () => (await t.effects("while-stopped")) === 1);
    await t.settled();
  });

  it("keeps consuming across a NATS restart", async () => {
    const t = await setup("restart");
    await t.publish("before");
    await eventually("the first event is handled", async () => (await t.effects("before")) === 1);
    await server().restart();
    await eventually("the bus reconnected", () => bus.nc.flush().then(() => true, () => false));
    await t.publish("after");
    await eventually("the event published after the restart is handled", async () => (await t.effects("after")) === 1);
    await t.settled();
  });

  it("refuses a binding whose descriptor does not match its spec", async () => {
    const sample = sampleStream("mismatch");
    const db = await openDatabase({ path: join(dir, "mismatch.db"), migrations: eventMigrations });
    cleanups.push(() => db.close());
    const spec = { ...sample.consumerSpec("mismatch-worker"), eventType: "concord.test.v1.Other" };
    await expect(startConsumers({ nc: bus.nc, db, service: "worker", logger, consumers: [{ spec, descriptor: sample.event, handle() {} }] })).rejects.toThrow(
      /takes concord\.test\.v1\.Other but was bound to the descriptor of concord\.test\.v1\.ThingHappened/,
    );
  });

  it("refuses one durable name on two streams: the inbox tells consumers apart by name", async () => {
    const [a, b] = [sampleStream("samename-a"), sampleStream("samename-b")];
    await ensureStreams(bus.jsm, [a.stream, b.stream]);
    const db = await openDatabase({ path: join(dir, "samename.db"), migrations: eventMigrations });
    cleanups.push(() => db.close());
    const consumers = [a, b].map((s) => bindConsumer({ spec: s.consumerSpec("same-worker"), descriptor: s.event, handle() {} }));
    await expect(startConsumers({ nc: bus.nc, db, service: "worker", logger, consumers })).rejects.toThrow(
      /consumer same-worker is bound on streams TEST_SAMENAME-A and TEST_SAMENAME-B; the inbox tells consumers apart by name/,
    );
  });

  /** A consumer of three events on a database whose transactions fail (a turn of the event loop later) while `away` is set. */
  const awayDatabase = async (key: string, spec: Partial<ConsumerSpec> = {}, failure: { readonly error?: () => Error; readonly pingAnswers?: boolean } = {}) => {
    const state = { away: true, attempts: 0 };
    const error = failure.error ?? (() => new Error("the database is away"));
    const away = () => new Promise<never>((_, reject) => setImmediate(() => reject(error())));
    const deliveryCounts: number[] = [];
    const t = await consumerOf(
      key,
      spec,
      async (event, context) => {
        deliveryCounts.push(context.deliveryCount);
        await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, event.note]);
      },
      {
        wrap: (real) => ({
          ...real,
          transaction: (work) => {
            state.attempts++;
            return state.away ? away() : real.transaction(work);
          },
          ping: () => (state.away && !failure.pingAnswers ? away() : real.ping()),
        }),
      },
    );
    for (const note of ["a", "b", "c"]) await t.publish(note);
    const effects = async () => (await t.notes()).length;
    return { state, start: t.start, effects, info: t.info, deliveryCounts };
  };

  it("holds a batch whose transaction fails (the database away) and tries it again after pauses, without spending deliveries; handles it once the database is back", async () => {
    const t = await awayDatabase("away");
    const consumers = await t.start();
    cleanups.unshift(() => consumers.stop());
    await eventually("a transaction was tried", async () => t.state.attempts > 0);
    await new Promise((r) => setTimeout(r, 1_600));
    // Pauses of 250, 500 and 1,000 ms: a handful of attempts, not thousands.
    expect(t.state.attempts).toBeGreaterThanOrEqual(2);
    expect(t.state.attempts).toBeLessThan(6);
    // Held by this process (progress acks), not given back: nothing delivered twice.
    const held = await t.info();
    expect(held.num_ack_pending).toBe(3);
    expect(held.num_redelivered).toBe(0);
    t.state.away = false;
    await eventually("the events are handled once the database is back", async () => (await t.effects()) === 3, 10_000);
    expect(t.deliveryCounts).toEqual([1, 1, 1]);
    await eventually("nothing is pending", async () => {
      const info = await t.info();
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
  });

  it("holds a batch, blaming none of its events, when the database answers but takes no writes (a full disk), and handles it once it does", async () => {
    const diskFull = () => Object.assign(new Error("could not extend file: No space left on device"), { code: "53100" });
    const t = await awayDatabase("diskfull", { maxDeliver: 1, backoffMs: [] }, { error: diskFull, pingAnswers: true });
    const consumers = await t.start();
    cleanups.unshift(() => consumers.stop());
    await eventually("a few transactions were tried", async () => t.state.attempts >= 3);
    const held = await t.info();
    expect(held.num_ack_pending).toBe(3);
    expect(held.num_redelivered).toBe(0);
    t.state.away = false;
    await eventually("the events are handled once writes are taken again", async () => (await t.effects()) === 3, 10_000);
    expect(t.deliveryCounts).toEqual([1, 1, 1]);
    const dlq = await bus.jsm.streams.info(deadLetterStreamSpec.name, { subjects_filter: deadLetterSubject(deadLetterStreamSpec, `TEST_DISKFULL`, "diskfull-worker") });
    expect(dlq.state.subjects?.[deadLetterSubject(deadLetterStreamSpec, "TEST_DISKFULL", "diskfull-worker")] ?? 0).toBe(0);
  });

  it("gives the held events back when it stops while the database is away, and a consumer started later handles them, however many deliveries they have had", async () => {
    // maxDeliver 1: a server max_deliver of the spec's plus one (2) would have given up on them at the second stop.
    const t = await awayDatabase("awaystop", { maxDeliver: 1, backoffMs: [] });
    for (let round = 1; round <= 3; round++) {
      const before = t.state.attempts;
      const consumers = await t.start();
      // The first round fails four times in a row: the pause after that is 2 s.
      const failures = round === 1 ? 4 : 1;
      await eventually(`round ${round} tried ${failures} transaction(s)`, async () => t.state.attempts >= before + failures);
      const stopping = performance.now();
      await consumers.stop();
      // Stopping does not wait out the pause before the next attempt.
      if (round === 1) expect(performance.now() - stopping).toBeLessThan(1_500);
      const info = await t.info();
      expect(info.num_ack_pending + info.num_pending).toBe(3);
    }
    t.state.away = false;
    const consumers = await t.start();
    cleanups.unshift(() => consumers.stop());
    await eventually("the events are handled", async () => (await t.effects()) === 3, 10_000);
    expect(t.deliveryCounts.every((n) => n >= 4)).toBe(true);
  });

  it("tells of a batch held while the database is unavailable without a stack, five lines in ten seconds, the rest counted in one line naming the consumer", async () => {
    const refused = () => StatusError.unavailable("the database is unavailable; try again shortly", Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }));
    const t = await awayDatabase("awaylines", {}, { error: refused });
    const from = logged.length;
    const consumers = await t.start();
    cleanups.unshift(() => consumers.stop());
    const linesHere = () => logged.slice(from).filter((l) => l.consumer === "awaylines-worker" || (Array.isArray(l.consumers) && l.consumers.includes("awaylines-worker")));
    // Tried at 0, 0.25, 0.75, 1.75, 3.75 and 7.75 s: the sixth is held, and counted when the window ends at 10 s.
    await eventually("the held batch is counted", async () => linesHere().some((l) => l.batches !== undefined), 15_000);
    await consumers.stop();
    const held = linesHere().filter((l) => String(l.msg).startsWith("committing a batch of events failed and the database is away"));
    expect(held).toHaveLength(5);
    for (const line of held) {
      expect(line.err).toBeUndefined();
      expect(line.error).toBe("the database is unavailable; try again shortly: connect ECONNREFUSED 127.0.0.1:5432");
    }
    const counted = linesHere().filter((l) => l.batches !== undefined);
    expect(counted).toHaveLength(1);
    // The sixth attempt at the one batch already told, paused 5 s after it: an attempt, not another batch, and its pause said.
    expect(counted[0]).toMatchObject({ attempts: 1, batches: 1, consumers: ["awaylines-worker"], longestPauseMs: 5_000 });
    expect(counted[0].msg).toBe(
      "1 more attempt to commit 1 batch of events failed while the database is away or takes no writes (consumers awaylines-worker), past the 5 logged one by one in 10 s; each is tried again after a pause of at most 5 s",
    );
  });

  it("says once, without a stack, that an attempt counted ahead could not be taken back while the database is away, however often the event is tried meanwhile", async () => {
    const unavailable = () => StatusError.unavailable("the database is unavailable; try again shortly", Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }));
    const state = { away: false, failedRuns: 0 };
    const t = await consumerOf(
      "untaken",
      { maxDeliver: 5, backoffMs: [100] },
      async (event, context) => {
        // The first delivery fails on its own (the database answers): it comes back as a redelivery, whose attempt is counted ahead.
        if (context.deliveryCount === 1) throw new Error("not yet");
        // The redelivery's attempt is counted; then the database goes away, for its work and for taking the count back.
        if (state.failedRuns++ === 0) {
          state.away = true;
          throw unavailable();
        }
        await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, event.note]);
      },
      {
        wrap: (real) => ({
          ...real,
          transaction: (work, options) => (state.away ? Promise.reject(unavailable()) : real.transaction(work, options)),
          ping: () => (state.away ? Promise.reject(unavailable()) : real.ping()),
        }),
        // The line told of is a warning.
        logger: createLogger({ service: "consumer-test", level: "warn", destination: { write: (line: string) => void logged.push(JSON.parse(line)) } }),
      },
    );
    const from = logged.length;
    await t.publish("a");
    await t.start();
    // Each failure of the redelivery tries to take its attempt back, and fails; the database comes back for the event's next try.
    await eventually("the redelivery failed while the database was away", async () => state.away && state.failedRuns >= 1);
    await eventually("it was tried again", async () => logged.slice(from).filter((l) => String(l.msg).startsWith("committing a batch of events failed and the database is away")).length >= 3, 10_000);
    state.away = false;
    await eventually("the event is handled", async () => (await t.notes()).length === 1, 10_000);
    const lines = logged.slice(from).filter((l) => l.consumer === "untaken-worker" && String(l.msg).startsWith("taking back an attempt counted ahead failed"));
    expect(lines).toHaveLength(1);
    expect(lines[0].err).toBeUndefined();
    expect(lines[0].error).toBe("the database is unavailable; try again shortly: connect ECONNREFUSED 127.0.0.1:5432");
  });

  /**
   * A stream, a database with the effects table (and `migrations`), and a consumer running `handle` (counted in
   * `state.runs`) on the database or what `wrap` makes of it. Publish, then start.
   */
  const consumerOf = async (
    key: string,
    spec: Partial<ConsumerSpec>,
    handle: (event: Thing, context: EventContext) => Promise<void>,
    options: {
      readonly migrations?: readonly { id: string; sql: string }[];
      readonly wrap?: (db: Database) => Database;
      readonly middleware?: DeliveryMiddleware[];
      /** Instead of the suite's logger, which keeps errors alone. */
      readonly logger?: typeof logger;
    } = {},
  ) => {
    const sample = sampleStream(key);
    await ensureStreams(bus.jsm, [sample.stream]);
    const real = await openDatabase({ path: join(dir, `${key}.db`), migrations: [...eventMigrations, effectsTable, ...(options.migrations ?? [])] });
    cleanups.push(() => real.close());
    const db = options.wrap ? options.wrap(real) : real;
    const consumerSpec = sample.consumerSpec(`${key}-worker`, spec);
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    const state = { runs: 0 };
    const start = async () => {
      const consumers = await startConsumers({
        nc: bus.nc,
        db,
        service: "worker",
        logger: options.logger ?? logger,
        ...(options.middleware && { middleware: options.middleware }),
        consumers: [
          bindConsumer({
            spec: consumerSpec,
            descriptor: sample.event,
            async handle(event, context) {
              state.runs++;
              await handle(event, context);
            },
          }),
        ],
      });
      cleanups.unshift(() => consumers.stop());
      return consumers;
    };
    const publish = (note: string) => publisher.publish(sample.event, { thingId: `t-${note}`, note });
    const subject = deadLetterSubject(deadLetterStreamSpec, sample.stream.name, consumerSpec.durable);
    const deadLetter = () => bus.jsm.streams.getMessage(deadLetterStreamSpec.name, { last_by_subj: subject }).catch(() => undefined);
    const notes = async () => (await real.query<{ note: string }>("SELECT note FROM effects ORDER BY note")).map((r) => r.note);
    const info = () => bus.jsm.consumers.info(sample.stream.name, consumerSpec.durable);
    return { sample, db: real, consumerSpec, state, start, publish, deadLetter, notes, info };
  };

  /**
   * consumerOf with `orphans` rows checked only at COMMIT (a deferred foreign key): each event records an effect,
   * and the one whose note is "bad" an orphan too, accepted when written, refused at COMMIT, where no savepoint
   * of the event's own catches it.
   */
  const deferredConstraint = (key: string, spec: Partial<ConsumerSpec>, middleware?: DeliveryMiddleware[]) =>
    consumerOf(
      key,
      spec,
      async (event, context) => {
        await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, event.note]);
        if (event.note === "bad") await context.tx.run("INSERT INTO orphans (parent) VALUES ('none')");
      },
      { migrations: [{ id: "test_0002_orphans", sql: "CREATE TABLE parents (id TEXT PRIMARY KEY);\nCREATE TABLE orphans (parent TEXT NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)" }], middleware },
    );

  it("retries, then dead-letters, an event whose own transaction cannot commit while the database answers (a deferred constraint); the events around it are handled", async () => {
    const registry = new Registry();
    const t = await deferredConstraint("nocommit", { maxDeliver: 2, backoffMs: [200] }, [consumerMetrics(registry)]);
    // Published before the consumer starts: the three arrive in one batch.
    const bad = await t.publish("bad");
    for (const note of ["before", "after"]) await t.publish(note);
    await t.start();
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined);
    const dead = (await t.deadLetter())!;
    expect(dead.header.get("ce-id")).toBe(bad.eventId);
    expect(dead.header.get("concord-dlq-reason")).toMatch(/^its transaction failed: .*FOREIGN KEY constraint failed/);
    expect(dead.header.get("concord-dlq-delivery-count")).toBe("2");
    expect(await t.notes()).toEqual(["after", "before"]);
    // Settled through the pipeline, as any dead letter: the service's steps count it.
    await eventually("the dead letter is counted", async () => (await registry.metrics()).includes(`concord_consumer_dead_lettered_total{consumer="${t.consumerSpec.durable}"} 1`));
    await eventually("nothing is pending", async () => {
      const info = await bus.jsm.consumers.info(t.sample.stream.name, t.consumerSpec.durable);
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
  });

  it("decides nothing on an event whose own transaction fails while its failure cannot be counted either: tried again until it can", async () => {
    let badRuns = 0;
    const t = await consumerOf(
      "nocount",
      { maxDeliver: 2, backoffMs: [100] },
      async (event, context) => {
        if (event.note !== "bad") return;
        badRuns++;
        await context.tx.run("INSERT INTO orphans (parent) VALUES ('none')");
      },
      { migrations: [{ id: "test_0002_orphans", sql: "CREATE TABLE parents (id TEXT PRIMARY KEY);\nCREATE TABLE orphans (parent TEXT NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)" }] },
    );
    await t.db.run("CREATE TRIGGER no_counts BEFORE INSERT ON event_failures BEGIN SELECT RAISE(ABORT, 'no room for counts'); END");
    await t.publish("bad");
    await t.start();
    // JetStream's delivery count passes maxDeliver; with no count of its own, the event is not dead-lettered on it
    // (a redelivery whose attempt cannot be counted before it runs does not run: it waits for the next one).
    await eventually("the event was delivered several times", async () => (await t.info()).delivered.consumer_seq >= 8, 20_000);
    expect(badRuns).toBeGreaterThanOrEqual(1);
    expect(await t.deadLetter()).toBeUndefined();
    await t.db.run("DROP TRIGGER no_counts");
    await eventually("the event is dead-lettered once its failures are counted", async () => (await t.deadLetter()) !== undefined);
    expect((await t.db.query<{ failures: number }>("SELECT failures FROM event_failures")).map((r) => r.failures)).toEqual([2]);
  });

  it("dead-letters an event that kills its process each time it runs, once its attempts (counted before each redelivery runs) pass maxDeliver; the events around it are handled once", async () => {
    const key = "crash";
    const sample = sampleStream(key);
    await ensureStreams(bus.jsm, [sample.stream]);
    const path = join(dir, `${key}.db`);
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    // Published before the first worker starts: the three arrive in one batch, and its transaction dies with the process.
    const published = new Map<string, string>();
    for (const note of ["first", "poison", "last"]) published.set(note, (await publisher.publish(sample.event, { thingId: `t-${note}`, note })).eventId);
    const subject = deadLetterSubject(deadLetterStreamSpec, sample.stream.name, `${key}-worker`);
    const deadLetter = () => bus.jsm.streams.getMessage(deadLetterStreamSpec.name, { last_by_subj: subject }).catch(() => undefined);
    const startWorker = () => {
      const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(new URL("../../test/support/crashing-worker.ts", import.meta.url)), server().url, path, key, "2", "1000"], { stdio: "ignore" });
      const ended = new Promise<NodeJS.Signals | number | null>((resolve) => child.once("exit", (code, signal) => resolve(signal ?? code)));
      cleanups.push(async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        await ended;
      });
      return { child, ended, gone: () => child.exitCode !== null || child.signalCode !== null };
    };
    let worker = startWorker();
    let crashes = 0;
    const deadline = Date.now() + 90_000;
    while ((await deadLetter()) === undefined) {
      if (Date.now() > deadline || crashes > 6) throw new Error(`no dead letter after ${crashes} crashes`);
      if (worker.gone()) {
        expect(await worker.ended).toBe("SIGKILL");
        crashes++;
        worker = startWorker();
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    // Its first run (with its batch, not counted: a first delivery is counted when it fails) and two counted attempts.
    expect(crashes).toBe(3);
    const dead = (await deadLetter())!;
    expect(dead.header.get("ce-id")).toBe(published.get("poison"));
    expect(dead.header.get("concord-dlq-reason")).toMatch(/^its last attempt \(2 of 2\) did not finish: the process handling it stopped/);
    const db = await openDatabase({ path, migrations: [...eventMigrations, effectsTable] });
    cleanups.push(() => db.close());
    await eventually("the event after it is handled", async () => (await db.query("SELECT 1 FROM effects WHERE note = 'last'")).length === 1, 30_000);
    expect((await db.query<{ note: string }>("SELECT note FROM effects ORDER BY note")).map((r) => r.note)).toEqual(["first", "last"]);
    expect(await db.query("SELECT failures FROM event_failures WHERE event_id = $1", [published.get("poison")!])).toEqual([{ failures: 3 }]);
    await eventually("nothing is pending", async () => {
      const info = await bus.jsm.consumers.info(sample.stream.name, `${key}-worker`);
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
    expect(worker.gone()).toBe(false);
    worker.child.kill("SIGTERM");
    expect(await worker.ended).toBe(0);
  }, 120_000);

  it("takes back a redelivery's attempt counted ahead when its run fails with the disk full: restarts meanwhile spend none of its attempts", async () => {
    const t = await consumerOf("fullcounted", { maxDeliver: 1, backoffMs: [] }, async (event, context) => {
      await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, `${event.note}-${"x".repeat(200_000)}`]);
    });
    // The count's small row fits where the handler's 200 KB do not.
    const [{ page_count: pages }] = await t.db.query<{ page_count: number }>("PRAGMA page_count");
    await t.db.run(`PRAGMA max_page_count = ${pages + 2}`);
    await t.publish("a");
    for (let round = 1; round <= 3; round++) {
      const consumers = await t.start();
      const runs = t.state.runs;
      await eventually("the handler ran", () => t.state.runs > runs);
      await consumers.stop();
    }
    expect((await t.db.query<{ failures: number }>("SELECT failures FROM event_failures")).every((r) => r.failures === 0)).toBe(true);
    await t.db.run("PRAGMA max_page_count = 1073741823");
    await t.start();
    await eventually("the event is handled", async () => (await t.notes()).length === 1);
    expect(await t.deadLetter()).toBeUndefined();
  });

  it("makes a redelivery's attempt counted ahead even when the consumers are asked to stop right after the count", async () => {
    let onCounted: (() => void) | undefined;
    const t = await consumerOf("stopcounted", { maxDeliver: 2, backoffMs: [] }, async (event, context) => {
      await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, event.note]);
    }, {
      wrap: (real) => ({
        ...real,
        transaction: (async (work: any, options: any) => {
          const result = await real.transaction(work, options);
          if (/countAttempt|countFailure/.test(String(work))) onCounted?.();
          return result;
        }) as Database["transaction"],
      }),
    });
    await (await t.start()).stop();
    await t.publish("a");
    // Handed back once untried, as a stopping consumer hands back what it pulled ahead: its next delivery is a redelivery.
    const raw = await bus.js.consumers.get(t.sample.stream.name, t.consumerSpec.durable);
    (await raw.next({ expires: 5_000 }))!.nak();
    let stopped: Promise<void> | undefined;
    const consumers = await t.start();
    onCounted = () => {
      onCounted = undefined;
      stopped = consumers.stop();
    };
    await eventually("the consumers were asked to stop", () => stopped !== undefined);
    await stopped;
    expect(await t.notes()).toEqual(["a"]);
    expect(await t.db.query("SELECT failures FROM event_failures")).toEqual([{ failures: 1 }]);
  });

  it.each([
    { case: "its last failed attempt", maxDeliver: 2, error: () => new Error("cannot handle this one"), runs: 2 },
    { case: "its only attempt (maxDeliver 1)", maxDeliver: 1, error: () => new Error("cannot handle this one"), runs: 1 },
    { case: "an event that can never be processed", maxDeliver: 1, error: () => new UnprocessableEventError("cannot handle this one"), runs: 1 },
  ])("files a dead letter whose filing failed, decided at $case, with its reason when it comes back, without running it again", async ({ maxDeliver, error, runs }) => {
    const t = await setup(`refile${maxDeliver}${runs}${error().name.length}`, (event) => {
      if (event.note === "bad") throw error();
    }, { maxDeliver, backoffMs: [100] });
    await bus.jsm.streams.delete(deadLetterStreamSpec.name);
    try {
      await t.publish("bad");
      await eventually("the decided event came back twice", async () => (t.attempts.get("bad") ?? 0) >= runs && (await t.consumerInfo()).delivered.consumer_seq >= runs + 2, 20_000);
    } finally {
      await ensureStreams(bus.jsm, [deadLetterStreamSpec]);
    }
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined, 20_000);
    expect((await t.deadLetter())!.header.get("concord-dlq-reason")).toBe("cannot handle this one");
    expect(t.attempts.get("bad")).toBe(runs);
    await t.settled();
  }, 60_000);

  it("retries, then dead-letters, an event whose handler meets something else unavailable while the database answers", async () => {
    const t = await setup("downstream", (event) => {
      if (event.note === "down") throw StatusError.unavailable("the payment service is unavailable");
    });
    await t.publish("down");
    await t.publish("fine");
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined);
    // Three counted attempts. The handler runs twice in the first (with its batch, then in a transaction of its
    // own, as an error that reads as "unavailable" fails the batch's transaction rather than only its savepoint),
    // once in each redelivery, which runs alone.
    expect(t.attempts.get("down")).toBe(4);
    expect((await t.deadLetter())!.header.get("concord-dlq-reason")).toMatch(/payment service is unavailable/);
    expect(await t.effects("fine")).toBe(1);
    await t.settled();
  });

  it("redelivers with the backoff, then dead-letters, an event the pipeline itself fails on (a middleware that throws)", async () => {
    const buggy: DeliveryMiddleware = (next) => async (delivery, tx) => {
      if (delivery.subject.includes(".t-bug.")) throw new Error("a bug in a middleware");
      return next(delivery, tx);
    };
    const t = await setup("pipelinebug", () => {}, { maxDeliver: 2, backoffMs: [200] }, undefined, [buggy]);
    await t.publish("bug");
    await t.publish("fine");
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined);
    const dead = (await t.deadLetter())!;
    expect(dead.header.get("concord-dlq-reason")).toBe("its transaction failed: a bug in a middleware");
    expect(dead.header.get("concord-dlq-delivery-count")).toBe("2");
    await eventually("the other event is handled", async () => (await t.effects("fine")) === 1);
    await t.settled();
  });

  it("keeps nothing of an event whose middleware fails after its handler ran: retried, then dead-lettered, with no effect", async () => {
    const after: DeliveryMiddleware = (next) => async (delivery, tx) => {
      const settlement = await next(delivery, tx);
      if (delivery.subject.includes(".t-late.")) throw new Error("failed after next");
      return settlement;
    };
    const t = await setup("latebug", () => {}, { maxDeliver: 2, backoffMs: [200] }, undefined, [after]);
    await t.publish("late");
    await t.publish("fine");
    await eventually("the event is dead-lettered", async () => (await t.deadLetter()) !== undefined);
    expect((await t.deadLetter())!.header.get("concord-dlq-reason")).toBe("its transaction failed: failed after next");
    await eventually("the other event is handled", async () => (await t.effects("fine")) === 1);
    expect(await t.effects("late")).toBe(0);
    await t.settled();
  });

  it("holds a batch whose handlers' writes find the disk full (SQLite's max_page_count), blaming none of its events, and handles it once there is room", async () => {
    // 200 KB a row: pages the file cannot grow by.
    const t = await consumerOf("fulldisk", { maxDeliver: 1, backoffMs: [] }, async (event, context) => {
      await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, `${event.note}-${"x".repeat(200_000)}`]);
    });
    const [{ page_count: pages }] = await t.db.query<{ page_count: number }>("PRAGMA page_count");
    await t.db.run(`PRAGMA max_page_count = ${pages}`);
    for (const n of ["a", "b", "c"]) await t.publish(n);
    await t.start();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await t.notes()).toEqual([]);
    expect(await t.deadLetter()).toBeUndefined();
    expect((await bus.jsm.consumers.info(t.sample.stream.name, t.consumerSpec.durable)).num_redelivered).toBe(0);
    await t.db.run("PRAGMA max_page_count = 1073741823");
    await eventually("the events are handled once there is room", async () => (await t.notes()).length === 3, 10_000);
    expect(await t.deadLetter()).toBeUndefined();
  });

  it("runs a batch whose last event cannot commit once in full, then one event a transaction: each handler about twice, not once per event before it", async () => {
    const t = await deferredConstraint("lastbad", { maxDeliver: 1, backoffMs: [] });
    for (let i = 0; i < 40; i++) await t.publish(`ok-${i}`);
    await t.publish("bad");
    await t.start();
    await eventually("the good events are handled", async () => (await t.notes()).length === 40);
    await eventually("the bad one is dead-lettered", async () => (await t.deadLetter()) !== undefined);
    // Once in the failing batch, once on its own; toggling back to whole batches ran them 902 times.
    expect(t.state.runs).toBeLessThanOrEqual(2 * 41 + 2);
  });
});
