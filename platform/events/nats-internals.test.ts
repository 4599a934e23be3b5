import { AckPolicy, connect, headers as natsHeaders, type Msg, type NatsConnection } from "nats";
import { createServer, type AddressInfo, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { startNatsCluster, useNatsServer } from "../../test/support/nats-server.js";
import { sampleStream, thingHappenedType } from "../../test/support/sample-events.js";
import { ensureStreams } from "./provision.js";
import { allowPullMaxBytes, closeAbandonedDials, headersRecord, onLeadershipChange, receivedBytes, receivedHeaders, replyInbox, stopStatusIterator, wireHeaders, withPullMaxBytes } from "./nats-internals.js";

/**
 * Canaries: each test fails when a fast path of nats-internals.ts stops
 * being taken (or stops being right) with the nats.js in node_modules.
 */
describe("nats.js internals", () => {
  const server = useNatsServer();
  let nc: NatsConnection;
  beforeAll(async () => {
    nc = await connect({ servers: server().url, inboxPrefix: "_INBOX_concord_test" });
  });
  afterAll(async () => {
    await nc?.close();
  });

  it("reads a received message's headers from the wire block (JsMsgImpl.msg, _rdata, _msg.hdr), as nats.js decodes them", async () => {
    const sample = sampleStream("internals");
    await ensureStreams(await nc.jetstreamManager(), [sample.stream]);
    const h = natsHeaders();
    h.set("ce-id", "an-id");
    h.set("ce-type", thingHappenedType);
    h.append("x-multi", "first");
    h.append("x-multi", "second");
    h.append("x-same", "one");
    h.append("x-same", " one ");
    h.set("x-colon", "a:b: c");
    h.set("x-unicode", "café ✓");
    h.set("X-Case", " padded ");
    h.set("x-tabs", "\ttabbed\t");
    h.set("x-nbsp", "\u00a0non-breaking\u00a0");
    await nc.jetstream().publish("test.internals.thing.t-1.happened", new Uint8Array([1, 2, 3]), { headers: h });
    const msg = await (await nc.jetstream().consumers.get(sample.stream.name)).next();
    expect(msg).not.toBeNull();
    const core = (msg as unknown as { msg: Msg & { _headers?: unknown; _rdata?: unknown; _msg?: { hdr?: unknown } } }).msg;
    expect(core._rdata).toBeInstanceOf(Uint8Array);
    expect(typeof core._msg?.hdr).toBe("number");
    const repeats = new Map<string, string[]>();
    const fast = receivedHeaders(msg!, repeats);
    // The fast path read the wire form: nats.js has not decoded the headers yet.
    expect(core._headers).toBeUndefined();
    const repeatsPublicly = new Map<string, string[]>();
    const expected = headersRecord(msg!.headers, repeatsPublicly);
    expect(fast).toEqual(expected);
    // A header given more than once has every value, in order, one given again with its own value too.
    const every = new Map([["x-multi", ["first", "second"]], ["x-same", ["one", "one"]]]);
    expect(repeats).toEqual(every);
    expect(repeatsPublicly).toEqual(every);
    expect(expected).toMatchObject({ "ce-id": "an-id", "x-multi": "first", "x-colon": "a:b: c", "x-unicode": "café ✓", "X-Case": "padded", "x-tabs": "tabbed", "x-nbsp": "non-breaking" });
    // Any other object with headers goes through the public getter.
    expect(receivedHeaders({ headers: msg!.headers } as unknown as Msg)).toEqual(expected);
  });

  it("publishes a stored header block as it is (a MsgHdrsImpl subclass whose encode returns it)", async () => {
    const block = Buffer.from("NATS/1.0\r\nce-id: wire-1\r\nx-note: kept as sent\r\n\r\n");
    const headers = wireHeaders(block);
    expect(headers.constructor.name).toBe("WireHeaders");
    const sub = nc.subscribe("internals.wire", { max: 1 });
    nc.publish("internals.wire", new Uint8Array([9]), { headers });
    for await (const m of sub) {
      expect(m.headers?.get("ce-id")).toBe("wire-1");
      expect(m.headers?.get("x-note")).toBe("kept as sent");
    }
  });

  it("sends a fetch's pull request with max_bytes beside its batch (PullConsumerMessagesImpl.pullOptions), ended at the message that does not fit", async () => {
    expect(allowPullMaxBytes()).toBe(true);
    const sample = sampleStream("maxbytes");
    const jsm = await nc.jetstreamManager();
    await ensureStreams(jsm, [sample.stream]);
    await jsm.consumers.add(sample.stream.name, { durable_name: "maxbytes-worker", ack_policy: AckPolicy.Explicit });
    for (let i = 0; i < 5; i++) await nc.jetstream().publish(`test.maxbytes.thing.t-${i}.happened`, new Uint8Array(10_000));
    const consumer = await nc.jetstream().consumers.get(sample.stream.name, "maxbytes-worker");
    // Ends as the server refuses the third (409 Message Size Exceeds MaxBytes), not at its expiry.
    const messages = await consumer.fetch(withPullMaxBytes({ max_messages: 5, expires: 60_000 }, 25_000));
    const sizes: number[] = [];
    for await (const m of messages) {
      sizes.push(receivedBytes(m));
      m.ack();
    }
    expect(sizes).toHaveLength(2);
    // As nats-server counts them: subject, reply, headers and data.
    const [first] = sizes;
    expect(first).toBeGreaterThan(10_000 + "test.maxbytes.thing.t-0.happened".length + "$JS.ACK.".length);
    expect(2 * first).toBeLessThanOrEqual(25_000);
  });

  it("makes reply inboxes on the connection's own inbox prefix (nc.options.inboxPrefix)", () => {
    expect(replyInbox(nc)).toMatch(/^_INBOX_concord_test\./);
  });

  it("ends a status iterator (its stop)", async () => {
    const statuses = nc.status();
    expect(typeof (statuses as { stop?: unknown }).stop).toBe("function");
    const ended = (async () => {
      for await (const _ of statuses) void _;
      return true;
    })();
    stopStatusIterator(statuses);
    expect(await ended).toBe(true);
  });
});

describe("nats.js internals on a cluster", () => {
  it("hears a pull request told that its consumer's leader moved (409 Leadership Change, a debug status of the fetch)", async () => {
    const cluster = await startNatsCluster({ syncAlways: false });
    const nc = await connect({ servers: cluster.url.split(",") });
    try {
      const sample = sampleStream("leader");
      const jsm = await nc.jetstreamManager();
      await ensureStreams(jsm, [{ ...sample.stream, replicas: 3 }]);
      await jsm.consumers.add(sample.stream.name, { durable_name: "leader-worker", ack_policy: AckPolicy.Explicit });
      // A pull request sent before the new consumer has a leader finds no responders (503) and is never waiting anywhere.
      await expect.poll(async () => (await jsm.consumers.info(sample.stream.name, "leader-worker")).cluster?.leader, { timeout: 10_000, message: "the new consumer has a leader" }).toBeTruthy();
      const consumer = await nc.jetstream().consumers.get(sample.stream.name, "leader-worker");
      // A fetch once heard nothing after a step-down in a fresh clone's run (whether the server sent its 409 is not known):
      // one that heard nothing in 5 s is ended, and a new one waits for the next step-down, three times at most.
      let heard = 0;
      for (let attempt = 1; attempt <= 3 && heard === 0; attempt++) {
        const messages = await consumer.fetch({ max_messages: 10, expires: 30_000 });
        await onLeadershipChange(messages, () => {
          heard++;
          messages.stop();
        });
        const ended = (async () => {
          for await (const m of messages) m.ack();
        })();
        // Awaited at the end; should an assertion fail first, its rejection is not left unhandled.
        ended.catch(() => undefined);
        // The request must be waiting at the leader before it steps down (on a busy machine it can take longer than a moment).
        await expect.poll(async () => (await jsm.consumers.info(sample.stream.name, "leader-worker")).num_waiting, { timeout: 10_000, message: "the pull request waits at the leader" }).toBeGreaterThan(0);
        const res = await nc.request(`$JS.API.CONSUMER.LEADER.STEPDOWN.${sample.stream.name}.leader-worker`, new Uint8Array(), { timeout: 5_000 });
        expect(JSON.parse(new TextDecoder().decode(res.data)), "the leader stepped down").toMatchObject({ success: true });
        await expect
          .poll(() => heard, { timeout: 5_000 })
          .toBe(1)
          .catch(() => undefined);
        if (heard === 0) {
          messages.stop();
          await expect.poll(async () => (await jsm.consumers.info(sample.stream.name, "leader-worker")).cluster?.leader, { timeout: 10_000, message: "the consumer has a leader again" }).toBeTruthy();
        }
        await ended;
      }
      expect(heard, "a fetch heard 409 Leadership Change").toBe(1);
    } finally {
      await nc.close();
      await cluster.stop();
    }
  });
});

describe("nats.js pulls by bytes on a cluster", () => {
  it("keeps a fetch with max_bytes open past 409 Batch Completed, which a replicated consumer sends before its last messages (they wait for their delivery's quorum)", async () => {
    expect(allowPullMaxBytes()).toBe(true);
    const cluster = await startNatsCluster({ syncAlways: false });
    const nc = await connect({ servers: cluster.url.split(",") });
    try {
      const sample = sampleStream("batches");
      const jsm = await nc.jetstreamManager();
      await ensureStreams(jsm, [{ ...sample.stream, replicas: 3 }]);
      await jsm.consumers.add(sample.stream.name, { durable_name: "batch-worker", ack_policy: AckPolicy.Explicit, ack_wait: 60_000_000_000 });
      await expect.poll(async () => (await jsm.consumers.info(sample.stream.name, "batch-worker")).cluster?.leader, { timeout: 10_000, message: "the consumer has a leader" }).toBeTruthy();
      const js = nc.jetstream();
      const batch = 10;
      const fetches = 20;
      for (let i = 0; i < batch * fetches; i++) await js.publish("test.batches.thing.t1.happened", new Uint8Array(100));
      const consumer = await js.consumers.get(sample.stream.name, "batch-worker");
      // Each request is filled by its count, as the pull intake asks: the server then sends 409 Batch Completed with the
      // bytes left, at once, while its last deliveries wait for quorum. Ended there, the request lost them until ack_wait.
      const got: number[] = [];
      for (let f = 0; f < fetches; f++) {
        const messages = await consumer.fetch(withPullMaxBytes({ max_messages: batch, expires: 5_000 }, 1024 * 1024));
        let received = 0;
        for await (const m of messages) {
          m.ack();
          if (++received >= batch) messages.stop();
        }
        got.push(received);
      }
      expect(got, "every fetch brought its whole batch").toEqual(Array.from({ length: fetches }, () => batch));
    } finally {
      await nc.close();
      await cluster.stop();
    }
  });
});

describe("nats.js connection attempts that time out", () => {
  it("leave no socket open to a server that accepts and never answers (closeAbandonedDials)", async () => {
    expect(closeAbandonedDials()).toBe(true);
    // What a stopped nats-server looks like from outside: the kernel accepts the connection, no INFO ever comes.
    const held = new Set<Socket>();
    const hung = createServer((socket) => {
      held.add(socket);
      socket.on("close", () => held.delete(socket));
    });
    await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", resolve));
    try {
      const port = (hung.address() as AddressInfo).port;
      for (let attempt = 0; attempt < 3; attempt++) {
        await expect(connect({ servers: `127.0.0.1:${port}`, timeout: 200, reconnect: false })).rejects.toThrow(/timeout/i);
      }
      await vi.waitFor(() => expect(held.size).toBe(0), { timeout: 2_000 });
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => hung.close(resolve));
    }
  });
});
