import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import type { ConsumerSpec, EventDescriptor, StreamSpec } from "../../platform/events/index.js";

/**
 * A tiny event for testing the event runtime without generated code:
 * `message ThingHappened { string thing_id = 1; string note = 2; }`, with a
 * codec written the way ts-proto writes one.
 */
export interface ThingHappened {
  thingId: string;
  note: string;
}

export const ThingHappened = {
  encode(message: ThingHappened, writer: BinaryWriter = new BinaryWriter()): BinaryWriter {
    if (message.thingId !== "") writer.uint32(10).string(message.thingId);
    if (message.note !== "") writer.uint32(18).string(message.note);
    return writer;
  },
  decode(input: BinaryReader | Uint8Array, length?: number): ThingHappened {
    const reader = input instanceof BinaryReader ? input : new BinaryReader(input);
    const end = length === undefined ? reader.len : reader.pos + length;
    const message: ThingHappened = { thingId: "", note: "" };
    while (reader.pos < end) {
      const tag = reader.uint32();
      if (tag === 10) message.thingId = reader.string();
      else if (tag === 18) message.note = reader.string();
      else if ((tag & 7) === 4 || tag === 0) break;
      else reader.skip(tag & 7);
    }
    return message;
  },
  fromPartial(object: Partial<ThingHappened>): ThingHappened {
    return { thingId: object.thingId ?? "", note: object.note ?? "" };
  },
};

/** The type name every sample descriptor carries. */
export const thingHappenedType = "concord.test.v1.ThingHappened";

/** A stream of its own for one test, so tests sharing a server do not see each other's events. */
export interface SampleStream {
  readonly stream: StreamSpec;
  readonly event: EventDescriptor<ThingHappened>;
  /** A consumer spec for the event, with fast retries. */
  consumerSpec(durable: string, overrides?: Partial<ConsumerSpec>): ConsumerSpec;
}

/** Stream `TEST_<KEY>` on `test.<key>.>`, with `ThingHappened` on `test.<key>.thing.{thing_id}.happened`. */
export function sampleStream(key: string): SampleStream {
  const prefix = `test.${key.toLowerCase()}`;
  const stream: StreamSpec = {
    name: `TEST_${key.toUpperCase()}`,
    subjects: [`${prefix}.>`],
    storage: "file",
    replicas: 1,
    maxAgeMs: 0,
    duplicateWindowMs: 120_000,
  };
  const event: EventDescriptor<ThingHappened> = {
    typeName: thingHappenedType,
    stream: stream.name,
    subjectTemplate: `${prefix}.thing.{thing_id}.happened`,
    filterSubject: `${prefix}.thing.*.happened`,
    subjectTokens: (e) => ({ thing_id: e.thingId }),
    codec: ThingHappened,
  };
  return {
    stream,
    event,
    consumerSpec: (durable, overrides = {}) => ({
      durable,
      stream: stream.name,
      filterSubject: event.filterSubject,
      eventType: thingHappenedType,
      maxDeliver: 3,
      backoffMs: [50],
      ackWaitMs: 5_000,
      ...overrides,
    }),
  };
}
