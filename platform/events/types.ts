/*
 * The data the generated event bindings hand to this runtime. Generated code
 * may not import platform/, so these are plain data and functions that the
 * generated object literals satisfy structurally.
 */
import type { BinaryWriter } from "@bufbuild/protobuf/wire";

/** One event type, as generated from the contracts: where it goes and how its payload is encoded. */
export interface EventDescriptor<T> {
  /** Full protobuf name, e.g. "shop.orders.v1.OrderPlaced"; sent as `ce-type`. */
  readonly typeName: string;
  /** Stream that stores the event, e.g. "SHOP_ORDERS". */
  readonly stream: string;
  /** Subject with `{token}` placeholders, e.g. "shop.orders.v1.order.{order_id}.placed". */
  readonly subjectTemplate: string;
  /** The template with each `{token}` replaced by "*": what a consumer of this event filters on. */
  readonly filterSubject: string;
  /** Values of the template's tokens, by token name. */
  readonly subjectTokens: (event: T) => Record<string, string | number | bigint | boolean>;
  /** The ts-proto message object (MessageFns): binary protobuf in and out. */
  readonly codec: {
    encode(message: T, writer?: BinaryWriter): { finish(): Uint8Array };
    decode(input: Uint8Array): T;
    fromPartial?(object: any): T;
  };
}

/** A JetStream stream as the contracts declare it; provisioning makes the server match it or refuses to start. */
export interface StreamSpec {
  readonly name: string;
  readonly subjects: readonly string[];
  readonly storage: "file" | "memory";
  readonly replicas: number;
  /** 0 = unlimited. */
  readonly maxAgeMs: number;
  /** How long JetStream remembers a `Nats-Msg-Id` to drop a re-publish. */
  readonly duplicateWindowMs: number;
  /**
   * The largest message the stream stores, in bytes, headers and payload
   * together as JetStream counts them (its max_msg_size); 0 = no limit but
   * the server's max_payload. Absent: the spec has no say, and an existing
   * stream's limit is left as it is (see ensureStreams).
   */
  readonly maxMessageBytes?: number;
  readonly description?: string;
}

/** A durable pull consumer a service declares for one event type. */
export interface ConsumerSpec {
  readonly durable: string;
  readonly stream: string;
  readonly filterSubject: string;
  /** Full protobuf name of the one event type the consumer accepts. */
  readonly eventType: string;
  /** Attempts before the event goes to the dead letter stream. */
  readonly maxDeliver: number;
  /** Delay before retry n (by delivery count); the last entry repeats. */
  readonly backoffMs: readonly number[];
  /** How long the server waits for an ack before redelivering (a crashed or stuck process). */
  readonly ackWaitMs: number;
}
