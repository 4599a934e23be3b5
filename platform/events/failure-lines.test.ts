import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsServer } from "../../test/support/nats-server.js";
import { sampleStream } from "../../test/support/sample-events.js";
import { eventually } from "../../test/support/streams.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { startTraceReceiver, type TraceReceiver } from "../../tools/traces/otlp-receiver.js";
import { openDatabase, type Database } from "../sql/index.js";
import { startTracing, type Tracing } from "../tracing/index.js";
import { bindConsumer, connectEventBus, createEventPublisher, createOutbox, createOutboxRelay, ensureStreams, eventMigrations, startConsumers, type EventBus } from "./index.js";

const dir = tempDirForSuite("concord-failure-lines-");

/**
 * With tracing on: the lines that tell of a handler's failure, a dead letter
 * and an outbox event that could not be published name the event and the
 * span of the attempt or send they are about, so that a log line leads to
 * its trace (`concord traces show <trace_id>`).
 */
describe("failure lines of the event runtime", () => {
  const server = useNatsServer();
  let bus: EventBus;
  let receiver: TraceReceiver;
  let tracing: Tracing;
  const { lines, logger } = capturedLogger("failure-lines");
  const cleanups: Array<() => Promise<void> | void> = [];

  beforeAll(async () => {
    receiver = await startTraceReceiver();
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url;
    process.env.OTEL_BSP_SCHEDULE_DELAY = "50";
    tracing = await startTracing({ service: "failure-lines" });
    bus = await connectEventBus({ url: server().url, name: "failure-lines", logger });
  });
  afterAll(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
    await bus?.close();
    await tracing?.shutdown();
    await receiver?.close();
    delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    delete process.env.OTEL_BSP_SCHEDULE_DELAY;
  });

  const openDb = async (key: string): Promise<Database> => {
    const db = await openDatabase({ path: join(dir, `${key}.db`), migrations: eventMigrations });
    cleanups.push(() => db.close());
    return db;
  };
  const linesSaying = (start: string) => lines.filter((l) => typeof l.msg === "string" && l.msg.startsWith(start));

  it("names the event and its attempt's consumer span on each retry and on the dead letter, and only the event when its trace is not sampled", async () => {
    const sample = sampleStream("failing");
    await ensureStreams(bus.jsm, [sample.stream]);
    const db = await openDb("failing");
    const spec = sample.consumerSpec("failing-worker", { maxDeliver: 2, backoffMs: [20] });
    const consumers = await startConsumers({
      nc: bus.nc,
      db,
      service: "worker",
      logger,
      consumers: [
        bindConsumer({
          spec,
          descriptor: sample.event,
          async handle() {
            throw new Error("the handler refuses");
          },
        }),
      ],
    });
    cleanups.unshift(() => consumers.stop());
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    const traceId = "5bf92f3577b34da6a3ce929d0e0e4736";
    const sampled = await publisher.publish(sample.event, { thingId: "t-1", note: "" }, { traceparent: `00-${traceId}-00f067aa0ba902b7-01` });
    const unsampled = await publisher.publish(sample.event, { thingId: "t-2", note: "" }, { traceparent: `00-${"6".repeat(32)}-00f067aa0ba902b7-00` });
    const deadLetterLines = () => linesSaying("event sent to the dead letter stream as ").filter((l) => l.consumer === spec.durable);
    await eventually("both events are dead-lettered", async () => deadLetterLines().length === 2);
    await expect.poll(() => receiver.spans().filter((s) => s.traceId === traceId && s.kind === "CONSUMER").length, { timeout: 10_000 }).toBe(2);
    const attempts = receiver.spans().filter((s) => s.traceId === traceId && s.kind === "CONSUMER");
    const spanOf = (settlement: string) => attempts.find((s) => s.attributes["concord.settlement"] === settlement)!.spanId;

    const retried = linesSaying("event handler failed; retrying").filter((l) => l.consumer === spec.durable);
    expect(retried.find((l) => l.eventId === sampled.eventId)).toMatchObject({ level: "warn", trace_id: traceId, span_id: spanOf("retry") });
    expect(deadLetterLines().find((l) => l.eventId === sampled.eventId)).toMatchObject({ level: "error", trace_id: traceId, span_id: spanOf("deadLetter") });
    // Not sampled: its spans record nothing, so no ids that no trace holds; the event is named all the same.
    for (const line of [...retried, ...deadLetterLines()].filter((l) => l.eventId === unsampled.eventId)) {
      expect(line).not.toHaveProperty("trace_id");
      expect(line).not.toHaveProperty("span_id");
    }
    expect(retried.filter((l) => l.eventId === unsampled.eventId)).toHaveLength(1);
  });

  it("names the first event it could not publish and its failed send span on the line that tells the outbox's failures", async () => {
    const db = await openDatabase({ path: join(dir, "outbox.db"), migrations: eventMigrations });
    cleanups.push(() => db.close());
    const outbox = createOutbox({ db, source: "things" });
    // No stream captures its subject: JetStream answers no PubAck, and the relay keeps it and tries again.
    const orphan = sampleStream("uncaptured");
    const traceId = "7bf92f3577b34da6a3ce929d0e0e4736";
    const eventId = await db.transaction(async (tx) => outbox.add(tx, orphan.event, { thingId: "t-1", note: "" }, { traceparent: `00-${traceId}-00f067aa0ba902b7-01` }));
    const relay = createOutboxRelay({ db, nc: bus.nc, logger, sweepIntervalMs: 200, publishTimeoutMs: 1_000, retryMinMs: 50, retryMaxMs: 300 });
    cleanups.unshift(() => relay.stop());
    await eventually("the relay logs the failure", async () => linesSaying("publishing outbox events failed; they stay in the outbox").length > 0);
    await expect.poll(() => receiver.spans().filter((s) => s.traceId === traceId && s.name.startsWith("send ")).length, { timeout: 10_000 }).toBeGreaterThan(0);
    const sends = receiver.spans().filter((s) => s.traceId === traceId && s.name.startsWith("send "));
    const line = linesSaying("publishing outbox events failed; they stay in the outbox")[0];
    expect(line).toMatchObject({ level: "warn", eventId, trace_id: traceId });
    expect(sends.find((s) => s.spanId === line.span_id)).toMatchObject({ status: { code: 2 } });
  });

  it("names the event it parks and its failed send span on the line that tells it", async () => {
    const sample = sampleStream("parking");
    await ensureStreams(bus.jsm, [sample.stream]);
    // The stream takes messages of at most 512 bytes: this event can never be stored.
    await bus.jsm.streams.update(sample.stream.name, { max_msg_size: 512 });
    const db = await openDb("parking");
    const outbox = createOutbox({ db, source: "things" });
    const traceId = "8bf92f3577b34da6a3ce929d0e0e4736";
    const eventId = await db.transaction(async (tx) => outbox.add(tx, sample.event, { thingId: "t-1", note: "n".repeat(1_000) }, { traceparent: `00-${traceId}-00f067aa0ba902b7-01` }));
    const relay = createOutboxRelay({ db, nc: bus.nc, logger, sweepIntervalMs: 100 });
    cleanups.unshift(() => relay.stop());
    await relay.flush();
    await expect.poll(() => receiver.spans().filter((s) => s.traceId === traceId && s.name.startsWith("send ")).length, { timeout: 10_000 }).toBe(1);
    const send = receiver.spans().find((s) => s.traceId === traceId && s.name.startsWith("send "))!;
    expect(send.status.code).toBe(2);
    const parked = linesSaying("an outbox event can never be published").find((l) => l.eventId === eventId);
    expect(parked).toMatchObject({ level: "error", trace_id: traceId, span_id: send.spanId });
  });
});
