/**
 * What the Concord options of a request say once read, checked and given
 * their defaults: the input of the printers. The specs are the runtime's own
 * types (only the types: generated code never imports platform/), so the
 * plugin cannot leave out a field the runtime reads.
 */
import type { DescFile, DescMessage, DescService } from "@bufbuild/protobuf";
import type { ConsumerSpec, StreamSpec } from "../../platform/events/index.js";

/** A stream owned by one proto file. */
export interface StreamContract {
  readonly file: DescFile;
  readonly spec: StreamSpec;
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

/** One `(concord.v1.subscribe)` entry of a service. */
export interface SubscriptionContract {
  readonly service: DescService;
  readonly event: EventContract;
  /** Handler method name: the event's message name in lowerCamel. */
  readonly method: string;
  readonly spec: ConsumerSpec;
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
