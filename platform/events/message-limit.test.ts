import type { JetStreamClient, MsgHdrs } from "nats";
import { describe, expect, it } from "vitest";
import { sampleStream } from "../../test/support/sample-events.js";
import { encodeEvent, eventHeaderBlock } from "./cloud-events.js";
import { deadLetterStreamFor, deadLetterStreamSpec, fileDeadLetter } from "./dead-letter.js";
import type { Delivery } from "./delivery.js";
import { deadLetterHeaderBytes, deadLetterMessageBytes, eventHeaderBytes, streamMessageBytes } from "./message-limit.js";

const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/** The largest tracestate an event passes on: 32 members, 512 characters. */
const longestTracestate = Array.from({ length: 32 }, (_, i) => `k${String(i).padStart(2, "0")}=${"v".repeat(11)}`).join(",").padEnd(512, "v");

describe("streams' max message size", () => {
  it("is the largest payload limit of the stream's event types plus room for headers, and none where one is unbounded or there are none", () => {
    expect(streamMessageBytes([4_096, 93_094, 9_624])).toBe(93_094 + eventHeaderBytes);
    expect(streamMessageBytes([4_096, Number.POSITIVE_INFINITY])).toBe(0);
    expect(streamMessageBytes([])).toBe(0);
  });

  it("leaves room for the largest header block Concord's own publishers send, atomic batch headers included", () => {
    const { event } = sampleStream("headers");
    const encoded = encodeEvent(event, { thingId: "t-1", note: "" }, { source: "a-service-with-a-long-name-".repeat(4), traceparent, tracestate: longestTracestate });
    expect(encoded.headers.tracestate).toHaveLength(512);
    const batch = `Nats-Batch-Id: ${crypto.randomUUID()}\r\nNats-Batch-Sequence: 1000000\r\nNats-Batch-Commit: 1\r\n`;
    const block = eventHeaderBlock(encoded).byteLength + batch.length;
    expect(block).toBeLessThan(2_048);
    expect(block).toBeLessThan(eventHeaderBytes);
  });

  it("gives the dead letter stream the largest of the contracts' streams' limits plus what a dead letter adds, and none where one has none", () => {
    const { stream } = sampleStream("dlq");
    expect(deadLetterMessageBytes([{ maxMessageBytes: 8_192 }, { maxMessageBytes: 101_286 }])).toBe(101_286 + deadLetterHeaderBytes);
    expect(deadLetterMessageBytes([{ maxMessageBytes: 8_192 }, { maxMessageBytes: 0 }])).toBe(0);
    expect(deadLetterMessageBytes([{ maxMessageBytes: 8_192 }, {}])).toBe(0);
    expect(deadLetterStreamFor([{ ...stream, maxMessageBytes: 8_192 }])).toEqual({ ...deadLetterStreamSpec, maxMessageBytes: 8_192 + deadLetterHeaderBytes });
    // Where a service provisions it, the dead letter stream's spec has no say in its limit: the operator's provisioning sets it.
    expect(deadLetterStreamSpec.maxMessageBytes).toBeUndefined();
  });

  it("leaves room for the most a dead letter adds to the event it files: a reason of 1,024 three-byte characters, a long subject and names", async () => {
    const { event } = sampleStream("dlqheaders");
    const encoded = encodeEvent(event, { thingId: "t-1", note: "" }, { source: "things", traceparent, tracestate: longestTracestate });
    expect(encoded.headers.tracestate).toHaveLength(512);
    const original = eventHeaderBlock(encoded).byteLength;
    const delivery: Delivery = {
      consumer: "c".repeat(255),
      stream: "S".repeat(255),
      subject: `test.${"s".repeat(4_000)}`,
      streamSequence: Number.MAX_SAFE_INTEGER,
      deliveryCount: 1_000_000,
      headers: encoded.headers,
      data: new Uint8Array(10),
      storedAt: new Date(),
    };
    let sent: { headers: MsgHdrs; msgID: string } | undefined;
    const js = {
      publish: async (_subject: string, _data: Uint8Array, options: { headers: MsgHdrs; msgID: string }) => {
        sent = options;
        return { seq: 1, duplicate: false };
      },
    } as unknown as JetStreamClient;
    await fileDeadLetter(js, deadLetterStreamSpec, delivery, "€".repeat(2_000));
    // nats.js adds the dead letter's Nats-Msg-Id to the block it sends.
    const block = (sent!.headers as unknown as { encode(): Uint8Array }).encode().byteLength + `Nats-Msg-Id: ${sent!.msgID}\r\n`.length;
    expect(block - original).toBeGreaterThan(8_000);
    expect(block - original).toBeLessThan(deadLetterHeaderBytes);
  });
});
