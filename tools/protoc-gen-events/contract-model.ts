/**
 * What the Concord options of a request say once read, checked and given
 * their defaults: the input of the printers.
 */
import type { DescFile, DescMessage, DescService } from "@bufbuild/protobuf";

/** Values of a StreamSpec, as the runtime provisions it. */
export interface StreamSpecValues {
  readonly name: string;
  readonly subjects: readonly string[];
  readonly storage: "file" | "memory";
  readonly replicas: number;
  /** 0 keeps events forever. */
  readonly maxAgeMs: number;
  readonly duplicateWindowMs: number;
  readonly description?: string;
}

/** A stream owned by one proto file. */
export interface StreamContract {
  readonly file: DescFile;
  readonly spec: StreamSpecValues;
  /** Leading comment of the `(concord.v1.stream)` option. */
  readonly comment: string;
}

/** One `{field}` placeholder of a subject template. */
export interface SubjectToken {
  /** Proto field name, the key in `subjectTokens`. */
  readonly name: string;
  /** ts-proto property that holds the value. */
  readonly property: string;
}

/** A message marked with `(concord.v1.event)`. */
export interface EventContract {
  readonly message: DescMessage;
  readonly stream: StreamContract;
  readonly subjectTemplate: string;
  readonly filterSubject: string;
  readonly tokens: readonly SubjectToken[];
}

/** Values of a ConsumerSpec, as the runtime creates the durable consumer. */
export interface ConsumerSpecValues {
  readonly durable: string;
  readonly stream: string;
  readonly filterSubject: string;
  readonly eventType: string;
  readonly maxDeliver: number;
  readonly backoffMs: readonly number[];
  readonly ackWaitMs: number;
}

/** One `(concord.v1.subscribe)` entry of a service. */
export interface SubscriptionContract {
  readonly service: DescService;
  readonly event: EventContract;
  /** Handler method name: the event's message name in lowerCamel. */
  readonly method: string;
  readonly spec: ConsumerSpecValues;
  /** Leading comment of the option entry. */
  readonly comment: string;
}

/** Everything the options of a request declare. */
export interface Contracts {
  readonly streams: readonly StreamContract[];
  readonly events: readonly EventContract[];
  readonly subscriptions: readonly SubscriptionContract[];
}

/** Defaults documented in concord/v1/options.proto. */
export const defaults = {
  replicas: 1,
  maxAgeMs: 0,
  duplicateWindowMs: 120_000,
  maxDeliver: 5,
  backoffMs: [1_000, 5_000, 30_000],
  ackWaitMs: 5_000,
} as const;
