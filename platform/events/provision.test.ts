import { join } from "node:path";
import { AckPolicy, DeliverPolicy, headers, type NatsError } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startNatsCluster, useNatsConnection, useNatsServer, type NatsClusterHandle } from "../../test/support/nats-server.js";
import { sampleStream } from "../../test/support/sample-events.js";
import { createTempDir } from "../../test/support/temp-dir.js";
import { ShopOrdersStream } from "../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { ShopProductsStream } from "../../gen/ts/shop/products/v1/product_events_jetstream.js";
import { createLogger, type Logger } from "../log/index.js";
import { connectEventBus, deadLetterStreamSpec, ensureConsumers, ensureStreams, type EventBus } from "./index.js";
import { deadLetterHeaderBytes } from "./message-limit.js";
import { compareKeeping } from "./provision.js";

const logger = createLogger({ service: "provision-test", level: "silent" });

/** A logger that keeps the messages it is given. */
function keptLogger(): { logger: Logger; messages: string[] } {
  const messages: string[] = [];
  const destination = { write: (line: string) => void messages.push(String(JSON.parse(line).msg)) };
  return { logger: createLogger({ service: "provision-test", level: "info", destination }), messages };
}

describe("what a stream keeps, compared (provisioning's and the breaking check's one comparison)", () => {
  const keeping = (subjects: string[], maxAgeMs = 60_000, duplicateWindowMs = 1_000) => ({ subjects, maxAgeMs, duplicateWindowMs });
  it("judges subjects by what they match, a max age of 0 as for ever, and says which subjects each side lacks", () => {
    expect(compareKeeping(keeping(["a.>", "a.>"]), keeping(["a.b.>"]))).toEqual({
      subjects: { existing: ["a.>"], wanted: ["a.b.>"], dropped: ["a.>"], added: [], reach: "more" },
      maxAge: "same",
      duplicateWindow: "same",
    });
    expect(compareKeeping(keeping(["a.b.>"], 0, 500), keeping(["a.>"], 60_000, 1_000))).toMatchObject({ subjects: { dropped: [], added: ["a.>"], reach: "less" }, maxAge: "more", duplicateWindow: "less" });
    expect(compareKeeping(keeping(["x.*", "y.>"], 60_000), keeping(["y.z", "x.*", "w.>"], 0)).subjects).toEqual({ existing: ["x.*", "y.>"], wanted: ["w.>", "x.*", "y.z"], dropped: ["y.>"], added: ["w.>"], reach: "other" });
    expect(compareKeeping(keeping(["x.*", "y.>"], 60_000), keeping(["y.z", "x.*", "w.>"], 0)).maxAge).toBe("less");
  });
});

describe("provisioning", () => {
  const server = useNatsServer();
  let bus: EventBus;

  beforeAll(async () => {
    bus = await connectEventBus({ url: server().url, name: "provision-test", logger });
  });
  afterAll(async () => {
    await bus?.close();
  });

  it("creates a stream as specified and accepts it again unchanged", async () => {
    const { stream } = sampleStream("create");
    const spec = { ...stream, maxAgeMs: 3_600_000, duplicateWindowMs: 60_000, description: "first" };
    await ensureStreams(bus.jsm, [spec]);
    await ensureStreams(bus.jsm, [spec]);
    const { config } = await bus.jsm.streams.info(spec.name);
    expect(config).toMatchObject({ subjects: ["test.create.>"], storage: "file", num_replicas: 1, max_age: 3_600_000 * 1e6, duplicate_window: 60_000 * 1e6, description: "first" });
  });

  it("leaves an existing stream's description as it is where a service provisions, saying so at info; the operator sets it", async () => {
    const { stream } = sampleStream("described");
    await ensureStreams(bus.jsm, [{ ...stream, description: "the newer contract's" }]);
    // An instance of an older build, starting with its contract's description, as a user that may change streams.
    const kept = keptLogger();
    const updates = bus.nc.subscribe(`$JS.API.STREAM.UPDATE.${stream.name}`);
    await ensureStreams(bus.jsm, [{ ...stream, description: "the older contract's" }], { logger: kept.logger });
    await bus.nc.flush();
    expect(updates.getReceived()).toBe(0);
    updates.unsubscribe();
    expect((await bus.jsm.streams.info(stream.name)).config.description).toBe("the newer contract's");
    expect(kept.messages).toEqual([
      "stream TEST_DESCRIBED's description differs from its contract's: left as it is, as a service never rewrites it; " +
        "the operator's provisioning does (npx concord streams provision, which npm start runs before the services start)",
    ]);
    await ensureStreams(bus.jsm, [{ ...stream, description: "the older contract's" }], { operator: true });
    expect((await bus.jsm.streams.info(stream.name)).config.description).toBe("the older contract's");
  });

  it("never changes a stream another service owns (foreign): created when missing, checked, not updated", async () => {
    const { stream } = sampleStream("foreign");
    const spec = { ...stream, description: "the owner's" };
    await ensureStreams(bus.jsm, [spec], { foreign: [spec.name] });
    expect((await bus.jsm.streams.info(spec.name)).config.description).toBe("the owner's");
    const updates = bus.nc.subscribe(`$JS.API.STREAM.UPDATE.${spec.name}`);
    await ensureStreams(bus.jsm, [{ ...spec, description: "another" }], { foreign: [spec.name] });
    await bus.nc.flush();
    expect(updates.getReceived()).toBe(0);
    expect((await bus.jsm.streams.info(spec.name)).config.description).toBe("the owner's");
    // Keeping more than its spec is the owner's affair; keeping less, too: it is refused, not widened.
    await ensureStreams(bus.jsm, [{ ...spec, maxAgeMs: 1_000, duplicateWindowMs: 1_000 }], { foreign: [spec.name] });
    await expect(ensureStreams(bus.jsm, [{ ...spec, subjects: [...spec.subjects, "test.foreign2.>"] }], { foreign: [spec.name] })).rejects.toThrow(
      /^stream TEST_FOREIGN keeps less than its spec \(subjects: existing \["test\.foreign\.>"\], wanted \["test\.foreign\.>","test\.foreign2\.>"\]\), and it is not this service's to widen: the operator provisions streams/,
    );
    await expect(ensureStreams(bus.jsm, [{ ...spec, subjects: ["test.foreignother.>"] }], { foreign: [spec.name] })).rejects.toThrow(/stream TEST_FOREIGN exists with settings that conflict/);
    // The dead letter stream is every service's foreign stream: its max age bounded by hand is the operator's to widen back.
    await ensureStreams(bus.jsm, [deadLetterStreamSpec]);
    await bus.jsm.streams.update(deadLetterStreamSpec.name, { max_age: 90 * 86_400_000 * 1e6 });
    await expect(ensureStreams(bus.jsm, [deadLetterStreamSpec], { foreign: [deadLetterStreamSpec.name] })).rejects.toThrow(
      /^stream CONCORD_DLQ keeps less than its spec \(max_age \(ms\): existing 7776000000, wanted 0\), and it is not this service's to widen: the operator provisions streams/,
    );
    await bus.jsm.streams.delete(deadLetterStreamSpec.name);
    await bus.nc.flush();
    expect(updates.getReceived()).toBe(0);
    updates.unsubscribe();
  });

  it("widens a stream that keeps less than its spec (subjects, max age, duplicate window), keeping its events, and leaves one that keeps more as it is", async () => {
    const { stream } = sampleStream("widen");
    const narrow = { ...stream, subjects: ["test.widen.a.>"], maxAgeMs: 3_600_000, duplicateWindowMs: 60_000 };
    await ensureStreams(bus.jsm, [narrow]);
    await bus.js.publish("test.widen.a.1", new Uint8Array([1]));
    const kept = keptLogger();
    const wide = { ...narrow, subjects: ["test.widen.a.>", "test.widen.b.>"], maxAgeMs: 7_200_000, duplicateWindowMs: 120_000 };
    expect((await ensureStreams(bus.jsm, [wide], { logger: kept.logger })).widened).toEqual([
      {
        stream: stream.name,
        settings: ['subjects: existing ["test.widen.a.>"], wanted ["test.widen.a.>","test.widen.b.>"]', "max_age (ms): existing 3600000, wanted 7200000", "duplicate_window (ms): existing 60000, wanted 120000"],
      },
    ]);
    const widened = await bus.jsm.streams.info(stream.name);
    expect(widened.config).toMatchObject({ subjects: ["test.widen.a.>", "test.widen.b.>"], max_age: 7_200_000 * 1e6, duplicate_window: 120_000 * 1e6 });
    expect(widened.state.messages).toBe(1);
    expect(kept.messages).toEqual([
      'stream TEST_WIDEN widened to its spec, which keeps more (subjects: existing ["test.widen.a.>"], wanted ["test.widen.a.>","test.widen.b.>"]; max_age (ms): existing 3600000, wanted 7200000; duplicate_window (ms): existing 60000, wanted 120000)',
    ]);
    await bus.js.publish("test.widen.b.1", new Uint8Array([2]));
    // A max age of 0 keeps events for ever: more than any other.
    await ensureStreams(bus.jsm, [{ ...wide, maxAgeMs: 0 }]);
    expect((await bus.jsm.streams.info(stream.name)).config.max_age).toBe(0);
    // The spec of the version before: the stream keeps more than it, and is left so (narrowing it would drop events).
    const updates = bus.nc.subscribe(`$JS.API.STREAM.UPDATE.${stream.name}`);
    expect(await ensureStreams(bus.jsm, [narrow], { logger: kept.logger })).toMatchObject({
      widened: [],
      keepsMore: [
        {
          stream: stream.name,
          settings: ['subjects: existing ["test.widen.a.>","test.widen.b.>"], wanted ["test.widen.a.>"]', "max_age (ms): existing 0, wanted 3600000", "duplicate_window (ms): existing 120000, wanted 60000"],
        },
      ],
    });
    await bus.nc.flush();
    expect(updates.getReceived()).toBe(0);
    updates.unsubscribe();
    expect(kept.messages.at(-1)).toBe(
      'stream TEST_WIDEN keeps more than its spec (subjects: existing ["test.widen.a.>","test.widen.b.>"], wanted ["test.widen.a.>"]; max_age (ms): existing 0, wanted 3600000; duplicate_window (ms): existing 120000, wanted 60000): ' +
        'left as it is, as provisioning never narrows a stream; the operator narrows it by hand once nothing needs what that drops (README "Breaking changes")',
    );
    const left = await bus.jsm.streams.info(stream.name);
    expect(left.config).toMatchObject({ subjects: ["test.widen.a.>", "test.widen.b.>"], max_age: 0, duplicate_window: 120_000 * 1e6 });
    expect(left.state.messages).toBe(2);
  });

  it("gives a new stream its spec's max_msg_size, counting headers with the payload: a message at the limit is stored, one byte over refused (10054)", async () => {
    const { stream } = sampleStream("limit");
    await ensureStreams(bus.jsm, [{ ...stream, maxMessageBytes: 2_048 }]);
    expect((await bus.jsm.streams.info(stream.name)).config.max_msg_size).toBe(2_048);
    const h = headers();
    h.set("ce-type", "concord.test.v1.ThingHappened");
    // The header block as sent: "NATS/1.0", each header on its line, an empty line.
    const headerBytes = "NATS/1.0\r\nce-type: concord.test.v1.ThingHappened\r\n\r\n".length;
    await expect(bus.js.publish("test.limit.thing.1", new Uint8Array(2_048 - headerBytes), { headers: h })).resolves.toMatchObject({ seq: 1 });
    const refused = await bus.js.publish("test.limit.thing.2", new Uint8Array(2_049 - headerBytes), { headers: h }).catch((err: unknown) => err);
    expect((refused as NatsError).api_error).toMatchObject({ err_code: 10054, description: "message size exceeds maximum allowed" });
    // A spec of 0 takes any message the server does: the limit goes.
    await ensureStreams(bus.jsm, [{ ...stream, maxMessageBytes: 0 }]);
    expect((await bus.jsm.streams.info(stream.name)).config.max_msg_size).toBe(-1);
    await expect(bus.js.publish("test.limit.thing.2", new Uint8Array(100_000))).resolves.toMatchObject({ seq: 2 });
  });

  it("sets max_msg_size on an existing stream, keeping the larger messages it holds: a service raises it, only the operator lowers it, a hand-raised one too", async () => {
    const { stream } = sampleStream("setlimit");
    // A stream provisioned before its spec said a limit, holding a large message.
    await ensureStreams(bus.jsm, [stream]);
    await bus.js.publish("test.setlimit.thing.1", new Uint8Array(50_000));
    const spec = { ...stream, maxMessageBytes: 8_192 };
    const kept = keptLogger();
    const updates = bus.nc.subscribe(`$JS.API.STREAM.UPDATE.${stream.name}`);
    // A service (an older build, say, during a rolling deploy) never lowers it.
    expect(await ensureStreams(bus.jsm, [spec], { logger: kept.logger })).toMatchObject({ widened: [], lowered: [] });
    await bus.nc.flush();
    expect(updates.getReceived()).toBe(0);
    updates.unsubscribe();
    expect(kept.messages).toEqual([
      "stream TEST_SETLIMIT takes larger messages than its contract allows (max_msg_size (bytes): existing none, wanted 8192): left so, as a service never lowers a stream's limit; " +
        "the operator's provisioning does (npx concord streams provision, which npm start runs before the services start)",
    ]);
    // The operator's provisioning (npm start's) sets it; what the stream holds stays.
    expect((await ensureStreams(bus.jsm, [spec], { operator: true, logger: kept.logger })).lowered).toEqual([{ stream: stream.name, settings: ["max_msg_size (bytes): existing none, wanted 8192"] }]);
    const limited = await bus.jsm.streams.info(stream.name);
    expect(limited.config.max_msg_size).toBe(8_192);
    expect(limited.state.messages).toBe(1);
    await expect(bus.js.publish("test.setlimit.thing.2", new Uint8Array(50_000))).rejects.toThrow(/message size exceeds maximum allowed/);
    // A newer contract allows larger events: a service raises the limit, said as widening is.
    const larger = { ...stream, maxMessageBytes: 16_384 };
    expect((await ensureStreams(bus.jsm, [larger], { logger: kept.logger })).widened).toEqual([{ stream: stream.name, settings: ["max_msg_size (bytes): existing 8192, wanted 16384"] }]);
    expect(kept.messages.at(-1)).toBe("stream TEST_SETLIMIT widened to its spec, which takes larger messages (max_msg_size (bytes): existing 8192, wanted 16384)");
    expect((await bus.jsm.streams.info(stream.name)).config.max_msg_size).toBe(16_384);
    // Raised by hand: a service leaves it, the operator's next provisioning lowers it to the contract's.
    await bus.jsm.streams.update(stream.name, { max_msg_size: 100_000 });
    await ensureStreams(bus.jsm, [larger]);
    expect((await bus.jsm.streams.info(stream.name)).config.max_msg_size).toBe(100_000);
    await ensureStreams(bus.jsm, [larger], { operator: true });
    expect((await bus.jsm.streams.info(stream.name)).config.max_msg_size).toBe(16_384);
    // A spec that does not say (as the dead letter stream's where a service provisions it) leaves the limit alone.
    await ensureStreams(bus.jsm, [stream], { operator: true });
    expect((await bus.jsm.streams.info(stream.name)).config.max_msg_size).toBe(16_384);
  });

  it("never changes another service's stream's max_msg_size (foreign)", async () => {
    const { stream } = sampleStream("foreignlimit");
    await ensureStreams(bus.jsm, [{ ...stream, maxMessageBytes: 4_096 }]);
    const updates = bus.nc.subscribe(`$JS.API.STREAM.UPDATE.${stream.name}`);
    await ensureStreams(bus.jsm, [{ ...stream, maxMessageBytes: 0 }], { foreign: [stream.name] });
    await bus.nc.flush();
    expect(updates.getReceived()).toBe(0);
    updates.unsubscribe();
    expect((await bus.jsm.streams.info(stream.name)).config.max_msg_size).toBe(4_096);
  });

  it("judges subjects by what they match: a stream on a.> keeps all a spec on a.b.> asks for, and one on a.b.> is widened to a spec on a.>", async () => {
    const { stream } = sampleStream("cover");
    const inner = { ...stream, subjects: ["test.cover.b.>"] };
    await ensureStreams(bus.jsm, [inner]);
    await bus.js.publish("test.cover.b.1", new Uint8Array([1]));
    const kept = keptLogger();
    await ensureStreams(bus.jsm, [stream], { logger: kept.logger });
    expect(kept.messages).toEqual(['stream TEST_COVER widened to its spec, which keeps more (subjects: existing ["test.cover.b.>"], wanted ["test.cover.>"])']);
    const widened = await bus.jsm.streams.info(stream.name);
    expect(widened.config.subjects).toEqual(["test.cover.>"]);
    expect(widened.state.messages).toBe(1);
    // The spec of the version before, and one on two subjects within the stream's: it keeps more than either, left as it is.
    const updates = bus.nc.subscribe(`$JS.API.STREAM.UPDATE.${stream.name}`);
    await ensureStreams(bus.jsm, [inner]);
    await ensureStreams(bus.jsm, [{ ...stream, subjects: ["test.cover.b.>", "test.cover.*.c"] }]);
    await bus.nc.flush();
    expect(updates.getReceived()).toBe(0);
    updates.unsubscribe();
    expect((await bus.jsm.streams.info(stream.name)).config.subjects).toEqual(["test.cover.>"]);
  });

  it("names the stream that holds subjects a stream is created or widened with, which nats-server refuses without naming it", async () => {
    const holder = { ...sampleStream("holder").stream, subjects: ["test.holder.>", "test.held.>"] };
    await ensureStreams(bus.jsm, [holder]);
    const named =
      '(stream TEST_HOLDER holds test.holder.>, test.held.>); a subject belongs to one stream only: where a contract moved these subjects from that stream, it keeps them until the operator narrows it by hand (nats stream edit), once nothing needs them there (README "Breaking changes")';
    const moved = { ...sampleStream("moved").stream, subjects: ["test.holder.moved.>"] };
    await expect(ensureStreams(bus.jsm, [moved])).rejects.toThrow(`stream TEST_MOVED does not exist, and nats-server refuses to create it: subjects overlap with an existing stream ${named}`);
    const { stream } = sampleStream("growing");
    await ensureStreams(bus.jsm, [stream]);
    await expect(ensureStreams(bus.jsm, [{ ...stream, subjects: [...stream.subjects, "test.held.x"] }])).rejects.toThrow(
      `stream TEST_GROWING keeps less than its spec (subjects: existing ["test.growing.>"], wanted ["test.growing.>","test.held.x"]), and nats-server refuses to widen it: subjects overlap with an existing stream ${named}`,
    );
  });

  it("refuses to start against a stream whose settings conflict, naming stream, setting and values", async () => {
    const { stream } = sampleStream("conflict");
    await ensureStreams(bus.jsm, [stream]);
    // Subjects some gone and some new: neither keeps more than the other.
    const conflicting = { ...stream, subjects: ["test.conflictother.>"], storage: "memory" as const };
    await expect(ensureStreams(bus.jsm, [conflicting])).rejects.toThrow(
      /^stream TEST_CONFLICT exists with settings that conflict with its spec \(subjects: existing \["test\.conflict\.>"\], wanted \["test\.conflictother\.>"\]; storage: existing "file", wanted "memory"\)/,
    );
    await expect(ensureStreams(bus.jsm, [{ ...stream, subjects: ["test.conflict.>", "test.conflict2.>"], storage: "memory" }])).rejects.toThrow(/\(storage: existing "file", wanted "memory"\): left as it is/);
    expect((await bus.jsm.streams.info(stream.name)).config.subjects).toEqual(["test.conflict.>"]);
  });

  it("refuses a stream that republishes, sources or mirrors, which its spec never declares: the server would publish with nobody's permissions", async () => {
    const { stream } = sampleStream("republish");
    await ensureStreams(bus.jsm, [stream]);
    const { config } = await bus.jsm.streams.info(stream.name);
    await bus.jsm.streams.update(stream.name, { ...config, republish: { src: ">", dest: "elsewhere.>" } });
    await expect(ensureStreams(bus.jsm, [stream])).rejects.toThrow(/stream TEST_REPUBLISH exists with settings that conflict with its spec \(republish: existing \{.*"dest":"elsewhere\.>".*\}, wanted none\)/);
    expect((await bus.jsm.streams.info(stream.name)).config.republish).toEqual({ src: ">", dest: "elsewhere.>" });
    const { stream: sourced } = sampleStream("sourced");
    await bus.jsm.streams.add({ name: sourced.name, subjects: [...sourced.subjects], sources: [{ name: stream.name }] });
    await expect(ensureStreams(bus.jsm, [sourced])).rejects.toThrow(/stream TEST_SOURCED .*sources: existing \[\{"name":"TEST_REPUBLISH".*wanted none/);
  });

  it("keeps a stream whose contract declares 3 replicas at 1 on a standalone server, saying so, and never asks it to move", async () => {
    const { stream } = sampleStream("standalone");
    const kept = keptLogger();
    // nats-server 2.9 refuses such an update but writes it to the stream's metadata, and loses the stream at its next start.
    const updates = bus.nc.subscribe(`$JS.API.STREAM.UPDATE.${stream.name}`);
    await ensureStreams(bus.jsm, [{ ...stream, replicas: 3 }], { logger: kept.logger });
    expect((await bus.jsm.streams.info(stream.name)).config.num_replicas).toBe(1);
    await ensureStreams(bus.jsm, [{ ...stream, replicas: 3 }], { logger: kept.logger });
    await bus.nc.flush();
    expect(updates.getReceived()).toBe(0);
    updates.unsubscribe();
    expect(kept.messages).toHaveLength(2);
    expect(kept.messages[0]).toMatch(/not clustered: stream TEST_STANDALONE keeps 1 replica, not the 3 its contract declares/);
    await server().restart();
    await expect.poll(() => bus.jsm.streams.info(stream.name).then((i) => i.config.num_replicas, () => 0), { timeout: 10_000 }).toBe(1);
  });

  it("refuses an invalid stream spec before touching the server", async () => {
    const { stream } = sampleStream("invalid");
    await expect(ensureStreams(bus.jsm, [{ ...stream, subjects: ["a b"], replicas: 0 }])).rejects.toThrow(/invalid stream spec TEST_INVALID: .*"a b".*replicas 0/);
    await expect(ensureStreams(bus.jsm, [{ ...stream, maxMessageBytes: -1 }])).rejects.toThrow(/invalid stream spec TEST_INVALID: maxMessageBytes -1 is not a whole number of bytes/);
  });

  it("creates consumers idempotently, updates what may change, and refuses a changed filter", async () => {
    const sample = sampleStream("consumers");
    await ensureStreams(bus.jsm, [sample.stream]);
    const spec = sample.consumerSpec("consumers-worker");
    await ensureConsumers(bus.jsm, [spec]);
    await ensureConsumers(bus.jsm, [spec]);
    const info = await bus.jsm.consumers.info(sample.stream.name, spec.durable);
    expect(info.config).toMatchObject({ durable_name: spec.durable, filter_subject: spec.filterSubject, ack_policy: "explicit", max_deliver: -1 });

    // A consumer made with a max_deliver (as earlier versions made them: the spec's plus one) loses it.
    await bus.jsm.consumers.update(sample.stream.name, spec.durable, { max_deliver: spec.maxDeliver + 1 });
    await ensureConsumers(bus.jsm, [{ ...spec, maxDeliver: 7, ackWaitMs: 9_000 }]);
    const updated = await bus.jsm.consumers.info(sample.stream.name, spec.durable);
    expect(updated.config.max_deliver).toBe(-1);
    expect(updated.config.ack_wait).toBe(9_000 * 1e6);

    await expect(ensureConsumers(bus.jsm, [{ ...spec, filterSubject: "test.consumers.thing.*.other" }])).rejects.toThrow(
      /consumer consumers-worker on stream TEST_CONSUMERS exists with filter subject "test\.consumers\.thing\.\*\.happened", wanted "test\.consumers\.thing\.\*\.other"/,
    );
  });

  it("refuses a durable consumer made by hand with another ack policy, saying how the service makes it again and what that delivers again", async () => {
    const sample = sampleStream("ackpolicy");
    await ensureStreams(bus.jsm, [sample.stream]);
    const spec = sample.consumerSpec("ackpolicy-worker");
    await bus.jsm.consumers.add(sample.stream.name, { durable_name: spec.durable, filter_subject: spec.filterSubject, ack_policy: AckPolicy.None });
    await expect(ensureConsumers(bus.jsm, [spec])).rejects.toThrow(
      "consumer ackpolicy-worker on stream TEST_ACKPOLICY exists with ack policy none, and the service acks each event (explicit): " +
        "delete it (nats consumer rm TEST_ACKPOLICY ackpolicy-worker, as a NATS user that may: neither the services' users nor the operator's do) " +
        "and the service makes it again as it starts, from the stream's first event " +
        "(its inbox skips the events it handled within its retention, 7 days by default; older ones would be handled again); its durable name comes from the contract",
    );
    // Deleted as the message says, it is made again as the spec has it.
    await bus.jsm.consumers.delete(sample.stream.name, spec.durable);
    await ensureConsumers(bus.jsm, [spec]);
    expect((await bus.jsm.consumers.info(sample.stream.name, spec.durable)).config.ack_policy).toBe(AckPolicy.Explicit);
  });

  it("warns of events an earlier max_deliver left behind, with their sequences; a consumer made to start at the first of them delivers them again", async () => {
    const sample = sampleStream("abandoned");
    await ensureStreams(bus.jsm, [sample.stream]);
    const spec = sample.consumerSpec("abandoned-worker");
    const js = bus.nc.jetstream();
    for (const id of ["a", "b", "c"]) await js.publish(`test.abandoned.thing.t-${id}.happened`, new Uint8Array([1]));
    // Made as earlier versions made consumers, with a max_deliver: the second event is given up on at its second delivery.
    await bus.jsm.consumers.add(sample.stream.name, { durable_name: spec.durable, filter_subject: spec.filterSubject, ack_policy: AckPolicy.Explicit, max_deliver: 2, ack_wait: 5_000_000_000 });
    const consumer = await js.consumers.get(sample.stream.name, spec.durable);
    // The second comes back after the third is acknowledged (its first nak has a delay): had it come back first, nothing
    // would be pending when it used its last delivery, and the server would move the acknowledgement floor past it,
    // leaving no trace of it for a warning (the consumer would still never deliver it again).
    const seen: number[] = [];
    for (let m = await consumer.next({ expires: 1_000 }); m; m = await consumer.next({ expires: 1_000 })) {
      seen.push(m.info.streamSequence);
      if (m.info.streamSequence === 2) m.nak(m.info.redeliveryCount === 1 ? 300 : undefined);
      else await m.ackAck();
    }
    expect(seen).toEqual([1, 2, 3, 2]);

    const kept = keptLogger();
    await ensureConsumers(bus.jsm, [spec], { logger: kept.logger });
    expect(kept.messages).toEqual([expect.stringMatching(/consumer abandoned-worker on stream TEST_ABANDONED holds events the server stopped delivering .* stream sequences 2 to 3 /)]);
    expect(kept.messages[0]).toContain("run `npx concord consumer redeliver abandoned-worker --from 2 --to 3`");
    // max_deliver is gone now, but that does not bring the event back.
    expect(await consumer.next({ expires: 1_000 })).toBeNull();

    // The server's own way (the operator may not delete a service's consumer; `concord consumer redeliver` publishes
    // the events again instead, test/concord-redeliver.test.ts): the consumer made again to start at the first of them.
    await bus.jsm.consumers.delete(sample.stream.name, spec.durable);
    await bus.jsm.consumers.add(sample.stream.name, { durable_name: spec.durable, filter_subject: spec.filterSubject, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 2 });
    await ensureConsumers(bus.jsm, [spec], { logger: kept.logger });
    const again = await js.consumers.get(sample.stream.name, spec.durable);
    const redelivered: number[] = [];
    for (let m = await again.next({ expires: 1_000 }); m; m = await again.next({ expires: 1_000 })) {
      redelivered.push(m.info.streamSequence);
      m.ack();
    }
    expect(redelivered).toEqual([2, 3]);
    // Nothing left behind now: no second warning.
    await ensureConsumers(bus.jsm, [spec], { logger: kept.logger });
    expect(kept.messages).toHaveLength(1);
  });

  it("says which stream is missing when a consumer's stream does not exist", async () => {
    const sample = sampleStream("nostream");
    await expect(ensureConsumers(bus.jsm, [sample.consumerSpec("nostream-worker")])).rejects.toThrow(/consumer nostream-worker reads stream TEST_NOSTREAM, which does not exist/);
  });
});

describe("provisioning on a cluster", () => {
  let cluster: NatsClusterHandle;
  let bus: EventBus;

  beforeAll(async () => {
    cluster = await startNatsCluster({ syncAlways: false });
    bus = await connectEventBus({ url: cluster.url, name: "provision-test", logger });
  });
  afterAll(async () => {
    await bus?.close();
    await cluster?.stop();
  });

  it("does not warn of a filtered consumer that passed over other subjects' events without delivering any", async () => {
    const sample = sampleStream("passed");
    await ensureStreams(bus.jsm, [{ ...sample.stream, replicas: 3 }]);
    const spec = sample.consumerSpec("passed-worker");
    await ensureConsumers(bus.jsm, [spec]);
    while (!(await bus.jsm.consumers.info(sample.stream.name, spec.durable)).cluster?.leader) await new Promise((r) => setTimeout(r, 50));
    const js = bus.nc.jetstream();
    const consumer = await js.consumers.get(sample.stream.name, spec.durable);
    // A new stream on a cluster answers publishes once its leader has taken its subjects (503 before that): the first
    // event is sent again until it is stored.
    await expect
      .poll(() => js.publish("test.passed.other.t-a", new Uint8Array([1]), { msgID: "passed-a" }).then(() => true, () => false), { timeout: 20_000, interval: 100 })
      .toBe(true);
    // A consumer just made on a cluster can answer its first pull "no responders" (503) until its leader serves pulls
    // (nats.js takes no expiry under 1 s).
    await expect.poll(() => consumer.next({ expires: 1_000 }).then(() => true, () => false), { timeout: 20_000, interval: 100 }).toBe(true);
    // The others published while the consumer waits for its next event, as a running service's consumer does.
    const waiting = consumer.next({ expires: 1_500 });
    await new Promise((r) => setTimeout(r, 300));
    for (const id of ["b", "c"]) await js.publish(`test.passed.other.t-${id}`, new Uint8Array([1]));
    expect(await waiting).toBeNull();
    // On a cluster the delivered stream sequence moves past the events the filter skipped; nothing was delivered.
    const info = await bus.jsm.consumers.info(sample.stream.name, spec.durable);
    expect(info.delivered).toMatchObject({ consumer_seq: 0, stream_seq: 3 });
    expect(info.ack_floor).toMatchObject({ consumer_seq: 0, stream_seq: 0 });

    const kept = keptLogger();
    await ensureConsumers(bus.jsm, [spec], { logger: kept.logger });
    expect(kept.messages).toEqual([]);
  });

  it("creates a stream with the replicas its spec declares, and moves an existing stream to them with its messages", async () => {
    const { stream } = sampleStream("replicated");
    await ensureStreams(bus.jsm, [{ ...stream, replicas: 3 }]);
    const created = await bus.jsm.streams.info(stream.name);
    expect(created.config.num_replicas).toBe(3);
    expect(created.cluster?.replicas).toHaveLength(2);

    const moving = sampleStream("moving").stream;
    await ensureStreams(bus.jsm, [moving]);
    // On a cluster a new stream answers publishes once its leader has taken its subjects (before that: 503, no
    // responders), which may be a moment after the leader is named: the publish is tried until it is answered.
    await expect
      .poll(async () => bus.js.publish("test.moving.thing.1.happened", new Uint8Array([1]), { msgID: "moving-1" }).then(() => true, () => false), { timeout: 20_000, interval: 100 })
      .toBe(true);
    const kept = keptLogger();
    await ensureStreams(bus.jsm, [{ ...moving, replicas: 3 }], { logger: kept.logger });
    const moved = await bus.jsm.streams.info(moving.name);
    expect(moved.config.num_replicas).toBe(3);
    expect(moved.state.messages).toBe(1);
    expect(kept.messages).toEqual(["stream TEST_MOVING moved from 1 to 3 replicas, as its spec declares"]);
  });

  it("leaves a stream with more replicas than its spec so where a service provisions, saying so once at info", async () => {
    const { stream } = sampleStream("morereplicas");
    await ensureStreams(bus.jsm, [{ ...stream, replicas: 3 }]);
    // An instance of an older build, whose contract declared 1, starting as a user that may change streams.
    const kept = keptLogger();
    const updates = bus.nc.subscribe(`$JS.API.STREAM.UPDATE.${stream.name}`);
    expect(await ensureStreams(bus.jsm, [stream], { logger: kept.logger })).toMatchObject({ lowered: [] });
    await bus.nc.flush();
    expect(updates.getReceived()).toBe(0);
    updates.unsubscribe();
    expect((await bus.jsm.streams.info(stream.name)).config.num_replicas).toBe(3);
    expect(kept.messages).toEqual([
      "stream TEST_MOREREPLICAS has 3 replicas, more than the 1 its contract declares: left so, as a service never lowers a stream's replicas; " +
        "the operator's provisioning does (npx concord streams provision, which npm start runs before the services start)",
    ]);
  });

  it("moves a stream with more replicas than its spec down to them where the operator provisions, saying so in lowered", async () => {
    const { stream } = sampleStream("lowered");
    await ensureStreams(bus.jsm, [{ ...stream, replicas: 3 }]);
    const kept = keptLogger();
    expect((await ensureStreams(bus.jsm, [stream], { operator: true, logger: kept.logger })).lowered).toEqual([{ stream: stream.name, settings: ["num_replicas: existing 3, wanted 1"] }]);
    expect((await bus.jsm.streams.info(stream.name)).config.num_replicas).toBe(1);
    // Said by the caller, from lowered (concord streams provision's summary, npm start's streams line): logged too, it was said twice.
    expect(kept.messages).toEqual([]);
    expect((await ensureStreams(bus.jsm, [stream], { operator: true })).lowered).toEqual([]);
  });

  it("refuses, with the server's reason, more replicas than the cluster has servers", async () => {
    const { stream } = sampleStream("toomany");
    await expect(ensureStreams(bus.jsm, [{ ...stream, replicas: 5 }])).rejects.toThrow(/creating stream TEST_TOOMANY \(subjects test\.toomany\.>, 5 replicas\) failed: no suitable peers for placement/);
  });
});

describe("a stream's max_msg_size under the generated NATS permissions", () => {
  const dir = createTempDir("concord-provision-limit-");
  afterAll(() => dir.remove());
  // The streams are provisioned as the operator at start, from the contracts.
  const nats = useNatsServer({ credentialsDir: join(dir.path, "credentials") });
  const asOrders = useNatsConnection(nats, { user: "orders", inboxPrefix: "_INBOX_orders" });
  const asOperator = useNatsConnection(nats, { user: "operator" });

  it("gives the shop streams and the dead letter stream their contracts' limits, and refuses a message over the limit published with a service's credentials and stores one at it, once the operator's provisioning gives the existing stream its limit", async () => {
    const orders = asOrders();
    const operator = asOperator();
    const publish = (size: number) => {
      const h = headers();
      h.set("ce-type", "shop.orders.v1.OrderPlaced");
      const headerBytes = "NATS/1.0\r\nce-type: shop.orders.v1.OrderPlaced\r\n\r\n".length;
      return orders.jetstream().publish(`shop.orders.v1.order.${"0".repeat(8)}.placed`, new Uint8Array(size - headerBytes), { headers: h });
    };
    // Provisioned with the contracts' limits, the dead letter stream's taking the largest with a dead letter's headers.
    const provisioned = await operator.jetstreamManager();
    expect((await provisioned.streams.info(ShopOrdersStream.name)).config.max_msg_size).toBe(ShopOrdersStream.maxMessageBytes);
    expect((await provisioned.streams.info(ShopProductsStream.name)).config.max_msg_size).toBe(ShopProductsStream.maxMessageBytes);
    expect((await provisioned.streams.info(deadLetterStreamSpec.name)).config.max_msg_size).toBe(Math.max(ShopOrdersStream.maxMessageBytes, ShopProductsStream.maxMessageBytes) + deadLetterHeaderBytes);
    await expect(publish(ShopOrdersStream.maxMessageBytes + 1)).rejects.toThrow(/message size exceeds maximum allowed/);
    // Without a limit (lifted by hand, as on a stream provisioned before the contracts said one): a large message is stored.
    await provisioned.streams.update(ShopOrdersStream.name, { max_msg_size: -1 });
    await expect(publish(200_000)).resolves.toMatchObject({ stream: ShopOrdersStream.name });
    // A contract whose events are bounded: its spec says a limit. The service's own provisioning may not change the stream.
    const spec = { ...ShopOrdersStream, maxMessageBytes: 8_192 };
    const kept = keptLogger();
    await ensureStreams(await orders.jetstreamManager(), [spec], { logger: kept.logger });
    expect((await operator.jetstreamManager().then((jsm) => jsm.streams.info(spec.name))).config.max_msg_size).toBe(-1);
    // The operator's provisioning at the next start does.
    const jsm = await operator.jetstreamManager();
    expect((await ensureStreams(jsm, [spec], { operator: true })).lowered).toEqual([{ stream: spec.name, settings: ["max_msg_size (bytes): existing none, wanted 8192"] }]);
    const { config, state } = await jsm.streams.info(spec.name);
    expect(config.max_msg_size).toBe(8_192);
    expect(state.messages).toBe(1);
    await expect(publish(8_192)).resolves.toMatchObject({ stream: spec.name, seq: 2 });
    const refused = await publish(8_193).catch((err: unknown) => err);
    expect((refused as NatsError).api_error).toMatchObject({ err_code: 10054 });
    // A newer contract allows larger events: the service's user may not raise the limit, and says so.
    await ensureStreams(await orders.jetstreamManager(), [{ ...spec, maxMessageBytes: 16_384 }], { logger: kept.logger });
    expect(kept.messages.filter((m) => m.includes("max_msg_size"))).toEqual([
      expect.stringMatching(/^stream SHOP_ORDERS takes larger messages than its contract allows \(max_msg_size \(bytes\): existing none, wanted 8192\): left so/),
      expect.stringMatching(/^stream SHOP_ORDERS's max_msg_size differs from its spec, and this NATS user may not change it; the operator provisions streams/),
    ]);
    expect((await jsm.streams.info(spec.name)).config.max_msg_size).toBe(8_192);
  });
});
