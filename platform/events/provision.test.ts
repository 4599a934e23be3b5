import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startNatsServer, type NatsServerHandle } from "../../test/support/nats-server.js";
import { sampleStream } from "../../test/support/sample-events.js";
import { createLogger } from "../log/index.js";
import { connectEventBus, ensureConsumers, ensureStreams, type EventBus } from "./index.js";

const logger = createLogger({ service: "provision-test", level: "silent" });

describe("provisioning", () => {
  let server: NatsServerHandle;
  let bus: EventBus;

  beforeAll(async () => {
    server = await startNatsServer();
    bus = await connectEventBus({ url: server.url, name: "provision-test", logger });
  });
  afterAll(async () => {
    await bus?.close();
    await server?.stop();
  });

  it("creates a stream as specified and accepts it again unchanged", async () => {
    const { stream } = sampleStream("create");
    const spec = { ...stream, maxAgeMs: 3_600_000, duplicateWindowMs: 60_000, description: "first" };
    await ensureStreams(bus.jsm, [spec]);
    await ensureStreams(bus.jsm, [spec]);
    const { config } = await bus.jsm.streams.info(spec.name);
    expect(config).toMatchObject({ subjects: ["test.create.>"], storage: "file", num_replicas: 1, max_age: 3_600_000 * 1e6, duplicate_window: 60_000 * 1e6, description: "first" });
    await ensureStreams(bus.jsm, [{ ...spec, description: "second" }]);
    expect((await bus.jsm.streams.info(spec.name)).config.description).toBe("second");
  });

  it("refuses to start against a stream whose settings conflict, naming stream, setting and values", async () => {
    const { stream } = sampleStream("conflict");
    await ensureStreams(bus.jsm, [stream]);
    const conflicting = { ...stream, subjects: ["test.conflict.other.>"], maxAgeMs: 86_400_000 };
    await expect(ensureStreams(bus.jsm, [conflicting])).rejects.toThrow(
      /stream TEST_CONFLICT .*subjects: existing \["test\.conflict\.>"\], wanted \["test\.conflict\.other\.>"\].*max_age \(ms\): existing 0, wanted 86400000/,
    );
    await expect(ensureStreams(bus.jsm, [{ ...stream, storage: "memory" }])).rejects.toThrow(/storage: existing "file", wanted "memory"/);
    await expect(ensureStreams(bus.jsm, [{ ...stream, duplicateWindowMs: 1_000 }])).rejects.toThrow(/duplicate_window \(ms\): existing 120000, wanted 1000/);
  });

  it("refuses an invalid stream spec before touching the server", async () => {
    const { stream } = sampleStream("invalid");
    await expect(ensureStreams(bus.jsm, [{ ...stream, subjects: ["a b"], replicas: 0 }])).rejects.toThrow(/invalid stream spec TEST_INVALID: .*"a b".*replicas 0/);
  });

  it("creates consumers idempotently, updates what may change, and refuses a changed filter", async () => {
    const sample = sampleStream("consumers");
    await ensureStreams(bus.jsm, [sample.stream]);
    const spec = sample.consumerSpec("consumers-worker");
    await ensureConsumers(bus.jsm, [spec]);
    await ensureConsumers(bus.jsm, [spec]);
    const info = await bus.jsm.consumers.info(sample.stream.name, spec.durable);
    expect(info.config).toMatchObject({ durable_name: spec.durable, filter_subject: spec.filterSubject, ack_policy: "explicit", max_deliver: spec.maxDeliver + 1 });

    await ensureConsumers(bus.jsm, [{ ...spec, maxDeliver: 7, ackWaitMs: 9_000 }]);
    const updated = await bus.jsm.consumers.info(sample.stream.name, spec.durable);
    expect(updated.config.max_deliver).toBe(8);
    expect(updated.config.ack_wait).toBe(9_000 * 1e6);

    await expect(ensureConsumers(bus.jsm, [{ ...spec, filterSubject: "test.consumers.thing.*.other" }])).rejects.toThrow(
      /consumer consumers-worker on stream TEST_CONSUMERS exists with filter subject "test\.consumers\.thing\.\*\.happened", wanted "test\.consumers\.thing\.\*\.other"/,
    );
  });

  it("says which stream is missing when a consumer's stream does not exist", async () => {
    const sample = sampleStream("nostream");
    await expect(ensureConsumers(bus.jsm, [sample.consumerSpec("nostream-worker")])).rejects.toThrow(/consumer nostream-worker reads stream TEST_NOSTREAM, which does not exist/);
  });
});
