import { connect, headers as natsHeaders } from "nats";
import { describe, expect, it } from "vitest";
import { deadLetterStreamSpec } from "../../platform/events/index.js";
import { fileDeadLetter } from "../../platform/events/dead-letter.js";
import type { Delivery } from "../../platform/events/delivery.js";
import { useNatsConnection, useNatsServer } from "../../test/support/nats-server.js";
import { wireHeaders } from "../../platform/events/nats-internals.js";
import { eventLine } from "../event-watch.js";
import { type DeadLetter, deadLetterOf, deleteDeadLetters, getDeadLetter, matchesFilter, readDeadLetters, replayDeadLetter } from "./dead-letters.js";

const stream = { name: "HUGE", subjects: ["huge.>"], storage: "file" as const, replicas: 1, maxAgeMs: 0, duplicateWindowMs: 120_000 };

describe("a dead letter filed without its payload", () => {
  const nc = useNatsConnection(useNatsServer(), { streams: [stream, deadLetterStreamSpec] });

  /** An event as large as fits with its own headers, stored in HUGE, and filed as a dead letter. */
  const fileHuge = async (id: string) => {
    const headers = { "ce-specversion": "1.0", "ce-id": id, "ce-type": "concord.test.v1.Huge", "ce-source": "test" };
    const h = natsHeaders();
    for (const [name, value] of Object.entries(headers)) h.set(name, value);
    const data = new Uint8Array(nc().info!.max_payload - 300).fill(7);
    const { seq } = await nc().jetstream().publish(`huge.${id}`, data, { headers: h });
    const delivery: Delivery = { consumer: "huge-worker", stream: stream.name, subject: `huge.${id}`, streamSequence: seq, deliveryCount: 5, headers, data, storedAt: new Date() };
    await fileDeadLetter(nc().jetstream(), deadLetterStreamSpec, delivery, "the handler gave up");
    const info = await (await nc().jetstreamManager()).streams.info(deadLetterStreamSpec.name);
    return { seq, data, letter: await getDeadLetter(nc(), info.state.last_seq) };
  };

  it("says so, and a replay publishes the event again from its source stream", async () => {
    const { data, letter } = await fileHuge("e-1");
    expect(letter.payloadOmittedBytes).toBe(data.byteLength);
    expect(letter.data.byteLength).toBe(0);
    expect(letter.payload).toMatch(/not kept with the dead letter/);
    expect(letter.reason).toBe("the handler gave up");

    await replayDeadLetter(nc(), letter);
    const jsm = await nc().jetstreamManager();
    const again = await jsm.streams.getMessage(stream.name, { last_by_subj: "huge.e-1" });
    expect(again.header.get("ce-id")).toBe("e-1");
    expect(Buffer.from(again.data).equals(Buffer.from(data))).toBe(true);
    await expect(getDeadLetter(nc(), letter.seq)).rejects.toThrow(/there is no dead letter/);
  });

  it("is replayed, and not reported as an error, when a purge run at the same time deleted it first", async () => {
    // The purge lands between the replay's publish and its delete. JetStream answers the delete by where the letter
    // was: 10057 "no message found" for one at either end of the stream (or taken by a purge of them all), 10043
    // "sequence N not found" for one deleted from among others, as `concord dlq purge N` deletes.
    for (const [id, among] of [["e-purged-last", false], ["e-purged-among", true]] as const) {
      if (among) await fileHuge(`${id}-before`);
      const { data, letter } = await fileHuge(id);
      if (among) await fileHuge(`${id}-after`);
      expect(await deleteDeadLetters(nc(), [letter.seq])).toEqual({ deleted: [letter.seq], missing: [] });
      await replayDeadLetter(nc(), letter);
      const again = await (await nc().jetstreamManager()).streams.getMessage(stream.name, { last_by_subj: `huge.${id}` });
      expect(again.header.get("ce-id")).toBe(id);
      expect(Buffer.from(again.data).equals(Buffer.from(data))).toBe(true);
    }
  });

  it("is not replayed, and stays, once the source stream no longer holds the event", async () => {
    const { seq, letter } = await fileHuge("e-2");
    const jsm = await nc().jetstreamManager();
    await jsm.streams.deleteMessage(stream.name, seq);
    await expect(replayDeadLetter(nc(), letter)).rejects.toThrow(/names the event at sequence \d+ of stream HUGE, which no longer holds it/);
    expect((await getDeadLetter(nc(), letter.seq)).id).toBe("e-2");
  });

  it("is replayed only as its source stream holds it: a dead letter filed with another payload, subject or stream publishes nothing", async () => {
    const jsm = await nc().jetstreamManager();
    const h = natsHeaders();
    for (const [name, value] of Object.entries({ "ce-specversion": "1.0", "ce-id": "e-3", "ce-type": "concord.test.v1.Huge", "ce-source": "test" })) h.set(name, value);
    const { seq } = await nc().jetstream().publish("huge.e-3", new Uint8Array([1, 2, 3]), { headers: h });
    /** A dead letter as a service's user may file one under its consumer's subject, saying what it likes. */
    const forge = async (dlqSubject: string, claims: Record<string, string>, data: Uint8Array) => {
      const f = natsHeaders();
      for (const [name, value] of Object.entries({ "ce-specversion": "1.0", "ce-id": "e-3", "ce-type": "concord.test.v1.Huge", "ce-source": "test", "concord-dlq-reason": "forged", "concord-dlq-subject": "huge.e-3", "concord-dlq-stream": "HUGE", "concord-dlq-stream-sequence": String(seq), "concord-dlq-consumer": "huge-worker", ...claims })) f.set(name, value);
      return getDeadLetter(nc(), (await nc().jetstream().publish(dlqSubject, data, { headers: f })).seq);
    };
    const forged = [
      await forge("concord.dlq.HUGE.huge-worker", {}, new Uint8Array([6, 6, 6])),
      await forge("concord.dlq.HUGE.huge-worker", { "concord-dlq-subject": "huge.e-4" }, new Uint8Array([1, 2, 3])),
      await forge("concord.dlq.HUGE.huge-worker", { "concord-dlq-stream-sequence": String(seq + 1000) }, new Uint8Array([1, 2, 3])),
      await forge("concord.dlq.HUGE.other-worker", {}, new Uint8Array([1, 2, 3])),
    ];
    for (const letter of forged) {
      await expect(replayDeadLetter(nc(), letter)).rejects.toThrow(/it is not replayed/);
      expect((await getDeadLetter(nc(), letter.seq)).reason).toBe("forged");
    }
    // One filed under a stream that does not exist is refused as such.
    const nowhere = await forge("concord.dlq.NOWHERE.huge-worker", { "concord-dlq-stream": "NOWHERE" }, new Uint8Array([1, 2, 3]));
    await expect(replayDeadLetter(nc(), nowhere)).rejects.toThrow(/names stream NOWHERE, which does not exist, so nothing vouches for it; it is not replayed/);
    expect((await getDeadLetter(nc(), nowhere.seq)).reason).toBe("forged");
    expect((await jsm.streams.info(stream.name, { subjects_filter: "huge.>" })).state.subjects).toMatchObject({ "huge.e-3": 1 });
    expect((await jsm.streams.info(stream.name, { subjects_filter: "huge.e-4" })).state.subjects ?? {}).toEqual({});
    // The dead letter the platform files for that event replays it, as the stream holds it.
    const delivery: Delivery = { consumer: "huge-worker", stream: stream.name, subject: "huge.e-3", streamSequence: seq, deliveryCount: 5, headers: { "ce-specversion": "1.0", "ce-id": "e-3", "ce-type": "concord.test.v1.Huge", "ce-source": "test" }, data: new Uint8Array([1, 2, 3]), storedAt: new Date() };
    await fileDeadLetter(nc().jetstream(), deadLetterStreamSpec, delivery, "the handler gave up");
    const genuine = await getDeadLetter(nc(), (await jsm.streams.info(deadLetterStreamSpec.name)).state.last_seq);
    await replayDeadLetter(nc(), genuine);
    const again = await jsm.streams.getMessage(stream.name, { last_by_subj: "huge.e-3" });
    expect(again.seq).toBeGreaterThan(seq);
    expect([...again.data]).toEqual([1, 2, 3]);
    expect(again.header.get("ce-source")).toBe("test");
  });
});

describe("a dead letter of an event that repeats a header", () => {
  const twice = { name: "TWICE", subjects: ["twice.>"], storage: "file" as const, replicas: 1, maxAgeMs: 0, duplicateWindowMs: 120_000 };
  const nc = useNatsConnection(useNatsServer(), { streams: [twice, deadLetterStreamSpec] });

  it("is shown and listed with every value of the header, in the order sent, and replays the event with them all", async () => {
    const h = natsHeaders();
    for (const [name, value] of [["ce-specversion", "1.0"], ["ce-id", "e-1"], ["ce-type", "concord.test.v1.One"], ["ce-type", "concord.test.v1.Other"], ["ce-source", "test"]]) h.append(name, value);
    const { seq } = await nc().jetstream().publish("twice.e-1", new Uint8Array([1]), { headers: h });
    const delivery: Delivery = {
      consumer: "twice-worker",
      stream: twice.name,
      subject: "twice.e-1",
      streamSequence: seq,
      deliveryCount: 1,
      headers: { "ce-specversion": "1.0", "ce-id": "e-1", "ce-type": "concord.test.v1.One", "ce-source": "test" },
      repeatedHeaders: { "ce-type": ["concord.test.v1.One", "concord.test.v1.Other"] },
      data: new Uint8Array([1]),
      storedAt: new Date(),
    };
    await fileDeadLetter(nc().jetstream(), deadLetterStreamSpec, delivery, "ce-type twice");
    const expected = { "ce-specversion": "1.0", "ce-id": "e-1", "ce-type": ["concord.test.v1.One", "concord.test.v1.Other"], "ce-source": "test" };
    const listed: DeadLetter[] = [];
    for await (const letter of readDeadLetters(nc())) listed.push(letter);
    expect(listed.map((l) => l.headers)).toEqual([expected]);
    const shown = await getDeadLetter(nc(), listed[0].seq);
    expect(shown.headers).toEqual(expected);
    expect(shown.type).toBe("concord.test.v1.One");

    await replayDeadLetter(nc(), shown);
    const again = await (await nc().jetstreamManager()).streams.getMessage(twice.name, { last_by_subj: "twice.e-1" });
    expect(again.seq).toBeGreaterThan(seq);
    expect(again.header.values("ce-type")).toEqual(["concord.test.v1.One", "concord.test.v1.Other"]);
  });
});

describe("dead letters and events with a header nats.js would not send", () => {
  const odd = { name: "ODD", subjects: ["odd.>"], storage: "file" as const, replicas: 1, maxAgeMs: 0, duplicateWindowMs: 120_000 };
  const nc = useNatsConnection(useNatsServer(), { streams: [odd, deadLetterStreamSpec] });

  /** Publishes with a header block as another client may send it: the server stores it, nats.js's decoder throws on it. */
  const publishRaw = (subject: string, lines: string, data: Uint8Array) =>
    nc().jetstream().publish(subject, data, { headers: wireHeaders(Buffer.from(`NATS/1.0\r\n${lines}\r\n\r\n`, "latin1")) });

  it("prints such an event and lists such a dead letter with what can be read; shows it and refuses to replay it, saying why", async () => {
    const { seq } = await publishRaw("odd.e-1", "ce-id: e-1\r\nce-type: concord.test.v1.Odd\r\nce-source: test\r\nx trace: 1", new Uint8Array([1]));
    const msg = await (await nc().jetstream().consumers.get(odd.name)).next();
    expect(eventLine(odd.name, msg!)).toMatchObject({ seq, subject: "odd.e-1", type: "concord.test.v1.Odd", id: "e-1", source: "test" });

    // The platform files it without the header it cannot send; a replay reads the event from its stream, and refuses it.
    const delivery: Delivery = { consumer: "odd-worker", stream: odd.name, subject: "odd.e-1", streamSequence: seq, deliveryCount: 1, headers: { "ce-id": "e-1", "ce-type": "concord.test.v1.Odd", "ce-source": "test", "x trace": "1" }, data: new Uint8Array([1]), storedAt: new Date() };
    await fileDeadLetter(nc().jetstream(), deadLetterStreamSpec, delivery, "the handler gave up");
    // A dead letter filed by hand under a consumer's subject, as a service's user may.
    await publishRaw("concord.dlq.ODD.odd-worker", "ce-id: e-2\r\nconcord-dlq-reason: forged\r\nx trace: 1", new Uint8Array([2]));
    const listed: DeadLetter[] = [];
    for await (const letter of readDeadLetters(nc())) listed.push(letter);
    expect(listed.map((l) => [l.id, l.reason])).toEqual([
      ["e-1", "the handler gave up"],
      ["e-2", "forged"],
    ]);
    const [filed, forged] = listed;
    expect((await getDeadLetter(nc(), forged.seq)).reason).toMatch(/^\(the dead letter's headers cannot be read: ' ' is not a valid character/);
    await expect(replayDeadLetter(nc(), await getDeadLetter(nc(), filed.seq))).rejects.toThrow(/names the event at sequence \d+ of stream ODD, whose headers cannot be read .*; it is not replayed/);
    expect((await getDeadLetter(nc(), filed.seq)).id).toBe("e-1");
  });
});

describe("matchesFilter", () => {
  it("takes a dead letter's consumer from the subject it was filed on, as status counts it, not from its headers", () => {
    // Filed by a service's user under its own consumer's subject without the header: status counted it, `dlq list --consumer` did not.
    const bare = deadLetterOf(1, "concord.dlq.SHOP_ORDERS.products-order-placed", new Date(), new Map([["concord-dlq-reason", ["forged"]]]), new Uint8Array());
    expect(matchesFilter(bare, { consumer: "products-order-placed" })).toBe(true);
    expect(matchesFilter(bare, { consumer: "" })).toBe(false);
    const claiming = deadLetterOf(2, "concord.dlq.SHOP_ORDERS.products-order-placed", new Date(), new Map([["concord-dlq-consumer", ["orders-stock-reserved"]]]), new Uint8Array());
    expect(claiming.consumer).toBe("orders-stock-reserved");
    expect(matchesFilter(claiming, { consumer: "orders-stock-reserved" })).toBe(false);
    expect(matchesFilter(claiming, { consumer: "products-order-placed" })).toBe(true);
  });
});

describe("deleteDeadLetters", () => {
  const nc = useNatsConnection(useNatsServer(), { streams: [deadLetterStreamSpec] });

  it("names as not held a sequence past the stream's last, as it does one deleted, and deletes the others", async () => {
    // JetStream answers a delete past the last sequence "stream store EOF" (10057): `dlq purge 20000 --yes` failed with it.
    const js = nc().jetstream();
    const [a, b] = [(await js.publish("concord.dlq.S.worker", new Uint8Array([1]))).seq, (await js.publish("concord.dlq.S.worker", new Uint8Array([2]))).seq];
    expect(await deleteDeadLetters(nc(), [a, b + 1000, b])).toEqual({ deleted: [a, b], missing: [b + 1000] });
    expect(await deleteDeadLetters(nc(), [a])).toEqual({ deleted: [], missing: [a] });
  });
});

describe("readDeadLetters", () => {
  const server = useNatsServer();
  const nc = useNatsConnection(server, { streams: [deadLetterStreamSpec] });

  it("reads 100 dead letters near max_payload, pulling a few megabytes ahead rather than 100 letters the server would not send", { timeout: 60_000 }, async () => {
    // 100 letters of 900 KB in flight at once are over the server's 64 MB for a client's pending output: it dropped
    // the connection as a slow consumer, and the listing failed (TIMEOUT) or waited for ever.
    const data = new Uint8Array(900_000).fill(1);
    const jsm = await nc().jetstreamManager();
    await jsm.streams.purge(deadLetterStreamSpec.name);
    for (let i = 0; i < 100; i++) await nc().jetstream().publish("concord.dlq.S.worker", data, { msgID: `big-${i}` });
    let read = 0;
    for await (const letter of readDeadLetters(nc())) if (letter.data.byteLength === data.byteLength) read++;
    expect(read).toBe(100);
    await jsm.streams.purge(deadLetterStreamSpec.name);
  });

  it("holds one pull of letters behind a slow reader, not the whole stream", { timeout: 60_000 }, async () => {
    const data = new Uint8Array(900_000).fill(2);
    const jsm = await nc().jetstreamManager();
    await jsm.streams.purge(deadLetterStreamSpec.name);
    for (let i = 0; i < 40; i++) await nc().jetstream().publish("concord.dlq.S.worker", data, { msgID: `slow-${i}` });
    const reader = await connect({ servers: server().url });
    try {
      const letters = readDeadLetters(reader)[Symbol.asyncIterator]();
      expect((await letters.next()).done).toBe(false);
      // A pager showing the first letter: what arrives meanwhile is one pull (4 × max_payload), not 36 MB.
      await new Promise((r) => setTimeout(r, 1_500));
      const pullBytes = 4 * reader.info!.max_payload;
      expect(reader.stats().inBytes).toBeLessThan(pullBytes + 2 * data.byteLength);
      let read = 1;
      while (!(await letters.next()).done) read++;
      expect(read).toBe(40);
    } finally {
      await reader.close();
      await jsm.streams.purge(deadLetterStreamSpec.name);
    }
  });

  it("ends when the dead letters after those read are deleted meanwhile (a replay or a purge run at the same time)", { timeout: 60_000 }, async () => {
    // More than one pull takes, so some are still on the server when they go.
    await Promise.all(Array.from({ length: 1_000 }, (_, i) => nc().jetstream().publish("concord.dlq.S.worker", new Uint8Array([1]), { msgID: `l-${i}` })));
    const letters = readDeadLetters(nc())[Symbol.asyncIterator]();
    expect((await letters.next()).done).toBe(false);
    await (await nc().jetstreamManager()).streams.purge(deadLetterStreamSpec.name);
    let read = 1;
    const started = performance.now();
    while (!(await letters.next()).done) read++;
    expect(read).toBeLessThan(1_000);
    expect(performance.now() - started).toBeLessThan(10_000);
  });
});
