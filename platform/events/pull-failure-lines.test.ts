import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { useNatsServer } from "../../test/support/nats-server.js";
import { sampleStream } from "../../test/support/sample-events.js";
import { eventually } from "../../test/support/streams.js";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { connectEventBus, createEventPublisher, ensureConsumers, ensureStreams, type EventBus } from "./index.js";
import { createPullIntake, defaultMaxHeldBytes, maxMessageBytesOf } from "./pull-intake.js";
import { PullFailureLines, pullFailureReason } from "./pull-failure-lines.js";

describe("the log lines of failed pulls", () => {
  const server = useNatsServer();
  let bus: EventBus;
  beforeAll(async () => {
    bus = await connectEventBus({ url: server().url, name: "pull-failure-lines", logger: capturedLogger().logger });
  });
  afterAll(async () => {
    await bus?.close();
  });

  /** A real nats.js error of a transient kind: a request nothing answers. */
  const noResponders = () => bus.nc.request("nobody.listens.here", undefined, { timeout: 2_000 }).then(() => expect.fail("something answered"), (err: unknown) => err);

  it("warns of a consumer deleted under it once, without a stack, however often it fails, and says in one line when pulling works again", async () => {
    const sample = sampleStream("pullwarn");
    await ensureStreams(bus.jsm, [sample.stream]);
    const spec = sample.consumerSpec("pullwarn-worker");
    await ensureConsumers(bus.jsm, [spec]);
    const { lines, logger } = capturedLogger("pull-failure-lines");
    const intake = createPullIntake({ nc: bus.nc, js: bus.js, stream: spec.stream, durable: spec.durable, limit: 4, maxBytes: defaultMaxHeldBytes, maxMessageBytes: maxMessageBytesOf(bus.nc), ackWaitMs: spec.ackWaitMs, reopenDelayMs: 20, logger });
    const taken: string[] = [];
    const taking = (async () => {
      for (let batch = await intake.take(4); batch; batch = await intake.take(4)) {
        for (const msg of batch) {
          taken.push(msg.subject);
          intake.settle(msg, { kind: "ack" });
        }
      }
    })();
    try {
      const failing = () => lines.filter((l) => l.level === "warn");
      await bus.jsm.consumers.delete(spec.stream, spec.durable);
      await eventually("pulling has failed", () => failing().length > 0);
      // At 20 ms between attempts, a few dozen more fail meanwhile.
      await new Promise((resolve) => setTimeout(resolve, 500));
      await ensureConsumers(bus.jsm, [spec]);
      const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
      for (let i = 0; i < 4; i++) await publisher.publish(sample.event, { thingId: `t-${i}`, note: "" });
      await eventually("the events published after are taken", () => taken.length === 4);
      const again = () => lines.filter((l) => l.level === "info");
      await eventually("pulling again is logged", () => again().length > 0);

      expect(failing()).toHaveLength(1);
      const [warning] = failing();
      expect(warning).toMatchObject({ failures: 1, retryInMs: 20 });
      expect(String(warning.reason)).toMatch(/^(409 consumer deleted|404 consumer not found)$/);
      expect(warning.msg).toBe(`consumer pullwarn-worker of stream TEST_PULLWARN: pulling failed (${warning.reason}); pulling again in 0.0 s`);
      expect(warning).not.toHaveProperty("err");
      expect(again()).toHaveLength(1);
      const [recovered] = again();
      expect(recovered.failures).toBeGreaterThan(2);
      expect(recovered.failingForMs).toBeGreaterThanOrEqual(500);
      expect(recovered.msg).toBe(`consumer pullwarn-worker of stream TEST_PULLWARN: pulling again after ${recovered.failures} failures over ${((recovered.failingForMs as number) / 1000).toFixed(1)} s`);
    } finally {
      await intake.close();
      await taking;
    }
  });

  it("names a nats.js error by its code and message, anything else by its message", async () => {
    expect(pullFailureReason(await noResponders())).toEqual({ reason: "503 no responders", transient: true });
    expect(pullFailureReason(Object.assign(new Error("TIMEOUT"), { code: "TIMEOUT" }))).toEqual({ reason: "TIMEOUT", transient: true });
    expect(pullFailureReason(Object.assign(new Error("Permissions Violation for Subscription"), { code: "PERMISSIONS_VIOLATION" }))).toEqual({ reason: "PERMISSIONS_VIOLATION Permissions Violation for Subscription", transient: false });
    expect(pullFailureReason(new TypeError("undefined is not a function"))).toEqual({ reason: "undefined is not a function", transient: false });
    expect(pullFailureReason("a string thrown")).toEqual({ reason: "a string thrown", transient: false });
  });

  it("warns at most once a window while pulls keep failing, counting those between and naming their reasons; an error of an unknown kind keeps its stack", async () => {
    const { lines, logger } = capturedLogger("pull-failure-lines");
    const windowMs = 200;
    const failures = new PullFailureLines(logger, "SHOP_ORDERS", "products-order-placed", 1_000, windowMs);
    const transient = await noResponders();
    const start = performance.now();
    failures.failed(transient);
    failures.failed(transient);
    failures.failed(transient);
    expect(lines).toHaveLength(1);
    // The window has passed: the next failure is told, with the two held.
    while (performance.now() - start <= windowMs) await new Promise((resolve) => setTimeout(resolve, windowMs / 4));
    failures.failed(new TypeError("cannot read properties of undefined (reading 'info')"));
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ level: "warn", reason: "503 no responders", failures: 1, retryInMs: 1_000, msg: "consumer products-order-placed of stream SHOP_ORDERS: pulling failed (503 no responders); pulling again in 1.0 s" });
    expect(lines[0]).not.toHaveProperty("err");
    const still = lines[1];
    expect(still).toMatchObject({ level: "warn", reason: "cannot read properties of undefined (reading 'info')", failures: 4, sinceLastWarning: 3 });
    expect(still.msg).toBe(
      `consumer products-order-placed of stream SHOP_ORDERS: pulling still fails (cannot read properties of undefined (reading 'info'); before it 503 no responders ×2): 3 failures since the last warning, 4 over ${((still.failingForMs as number) / 1000).toFixed(1)} s`,
    );
    expect(still.err).toMatchObject({ type: "TypeError", stack: expect.stringContaining("pull-failure-lines.test.ts") });

    // A pull sent before the last failure says nothing of pulling working again.
    failures.pulled(start);
    expect(lines).toHaveLength(2);
    failures.pulled(performance.now());
    expect(lines[2]).toMatchObject({ level: "info", failures: 4, msg: expect.stringMatching(/^consumer products-order-placed of stream SHOP_ORDERS: pulling again after 4 failures over \d+\.\d s$/) });
    // The next failure starts a stretch of its own, told at once.
    failures.failed(transient);
    expect(lines[3]).toMatchObject({ level: "warn", failures: 1 });
    expect(lines).toHaveLength(4);
  });
});
