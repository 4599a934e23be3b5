import { connect, headers as natsHeaders, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deadLetterStreamSpec, ensureStreams } from "../../platform/events/index.js";
import { fileDeadLetter } from "../../platform/events/dead-letter.js";
import type { Delivery } from "../../platform/events/delivery.js";
import { startNatsServer, type NatsServerHandle } from "../../test/support/nats-server.js";
import { getDeadLetter, replayDeadLetter } from "./dead-letters.js";

const stream = { name: "HUGE", subjects: ["huge.>"], storage: "file" as const, replicas: 1, maxAgeMs: 0, duplicateWindowMs: 120_000 };

describe("a dead letter filed without its payload", () => {
  let server: NatsServerHandle;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startNatsServer();
    nc = await connect({ servers: server.url });
    await ensureStreams(await nc.jetstreamManager(), [stream, deadLetterStreamSpec]);
  });
  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  /** An event as large as fits with its own headers, stored in HUGE, and filed as a dead letter. */
  const fileHuge = async (id: string) => {
    const headers = { "ce-specversion": "1.0", "ce-id": id, "ce-type": "concord.test.v1.Huge", "ce-source": "test" };
    const h = natsHeaders();
    for (const [name, value] of Object.entries(headers)) h.set(name, value);
    const data = new Uint8Array(nc.info!.max_payload - 300).fill(7);
    const { seq } = await nc.jetstream().publish(`huge.${id}`, data, { headers: h });
    const delivery: Delivery = { consumer: "huge-worker", stream: stream.name, subject: `huge.${id}`, streamSequence: seq, deliveryCount: 5, headers, data, storedAt: new Date() };
    await fileDeadLetter(nc.jetstream(), deadLetterStreamSpec, delivery, "the handler gave up");
    const info = await (await nc.jetstreamManager()).streams.info(deadLetterStreamSpec.name);
    return { seq, data, letter: await getDeadLetter(nc, info.state.last_seq) };
  };

  it("says so, and a replay publishes the event again from its source stream", async () => {
    const { data, letter } = await fileHuge("e-1");
    expect(letter.payloadOmittedBytes).toBe(data.byteLength);
    expect(letter.data.byteLength).toBe(0);
    expect(letter.payload).toMatch(/not kept with the dead letter/);
    expect(letter.reason).toBe("the handler gave up");

    await replayDeadLetter(nc, letter);
    const jsm = await nc.jetstreamManager();
    const again = await jsm.streams.getMessage(stream.name, { last_by_subj: "huge.e-1" });
    expect(again.header.get("ce-id")).toBe("e-1");
    expect(Buffer.from(again.data).equals(Buffer.from(data))).toBe(true);
    await expect(getDeadLetter(nc, letter.seq)).rejects.toThrow(/there is no dead letter/);
  });

  it("is not replayed, and stays, once the source stream no longer holds the event", async () => {
    const { seq, letter } = await fileHuge("e-2");
    const jsm = await nc.jetstreamManager();
    await jsm.streams.deleteMessage(stream.name, seq);
    await expect(replayDeadLetter(nc, letter)).rejects.toThrow(/filed without its payload .* no longer holds it at sequence/);
    expect((await getDeadLetter(nc, letter.seq)).id).toBe("e-2");
  });
});
