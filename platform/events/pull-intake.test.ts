import type { JsMsg } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsServer } from "../../test/support/nats-server.js";
import { sampleStream } from "../../test/support/sample-events.js";
import { eventually } from "../../test/support/streams.js";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { connectEventBus, ensureConsumers, ensureStreams, type EventBus } from "./index.js";
import { createPullIntake, maxMessageBytesOf, type PullIntake } from "./pull-intake.js";

describe("the pull intake", () => {
  const server = useNatsServer();
  let bus: EventBus;
  beforeAll(async () => {
    bus = await connectEventBus({ url: server().url, name: "pull-intake", logger: capturedLogger().logger });
  });
  afterAll(async () => {
    await bus?.close();
  });

  /** A stream and durable consumer of their own, with `count` messages of `size` bytes of data published ahead. */
  async function publishedAhead(key: string, count: number, size: number) {
    const sample = sampleStream(key);
    await ensureStreams(bus.jsm, [sample.stream]);
    const spec = sample.consumerSpec(`${key}-worker`, { ackWaitMs: 30_000 });
    await ensureConsumers(bus.jsm, [spec]);
    for (let i = 0; i < count; i++) await bus.js.publish(`test.${key}.thing.t-${i}.happened`, new Uint8Array(size).fill(i % 256));
    return spec;
  }

  const opened: PullIntake[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((intake) => intake.close()));
  });
  function intakeOf(spec: { stream: string; durable: string; ackWaitMs: number }, limit: number, maxBytes: number, maxMessageBytes = maxMessageBytesOf(bus.nc)) {
    const intake = createPullIntake({ nc: bus.nc, js: bus.js, ...spec, limit, maxBytes, maxMessageBytes, reopenDelayMs: 20, logger: capturedLogger().logger });
    opened.push(intake);
    return intake;
  }

  it("holds no more bytes than maxBytes of large messages published ahead, and takes them all in order", async () => {
    const size = 256 * 1024;
    const spec = await publishedAhead("bigahead", 40, size);
    const maxBytes = 4 * 1024 * 1024;
    const intake = intakeOf(spec, 128, maxBytes);
    let mostHeld = 0;
    const taken: number[] = [];
    while (taken.length < 40) {
      const batch = (await intake.take(1))!;
      mostHeld = Math.max(mostHeld, intake.held().bytes);
      for (const msg of batch) {
        taken.push(msg.info.streamSequence);
        intake.settle(msg, { kind: "ack" });
      }
    }
    expect(taken).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(mostHeld).toBeGreaterThan(size);
    // All 40 (10 MiB) were held at once before.
    expect(mostHeld).toBeLessThanOrEqual(maxBytes);
    expect(intake.held()).toEqual({ messages: 0, bytes: 0 });
  });

  it("pulls small messages ahead up to its count limit, which binds before the bytes do, even with maxBytes below twice the largest message", async () => {
    const spec = await publishedAhead("smallahead", 300, 200);
    // Taken as twice maxMessageBytes: with 1 MiB, less than that would be free once anything is held, and it would pull only when nothing is.
    const intake = intakeOf(spec, 128, 1024 * 1024);
    await eventually("the count limit is pulled", () => intake.held().messages === 128);
    // The batch being handled comes on top: the intake pulls as many again.
    expect((await intake.take(64))!).toHaveLength(64);
    await eventually("the count limit is pulled again", () => intake.held().messages === 192);
    const { messages, bytes } = intake.held();
    expect(messages).toBe(192);
    expect(bytes).toBeGreaterThan(192 * 200);
    expect(bytes).toBeLessThan(192 * 400);
  });

  it("takes a message larger than a pull's max_bytes may be (stored under a larger max_payload) one at a time, without pulling in a loop", async () => {
    const spec = await publishedAhead("oversized", 3, 100 * 1024);
    const intake = intakeOf(spec, 8, 64 * 1024, 16 * 1024);
    const taken: JsMsg[] = [];
    while (taken.length < 3) {
      for (const msg of (await intake.take(8))!) {
        taken.push(msg);
        intake.settle(msg, { kind: "ack" });
      }
    }
    expect(taken.map((msg) => msg.data.byteLength)).toEqual([100 * 1024, 100 * 1024, 100 * 1024]);
  });
});
