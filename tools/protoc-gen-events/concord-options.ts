/**
 * The custom options of concord/v1/options.proto, found in the request
 * itself: the plugin reads them with getOption() from the descriptors it is
 * given, so no generated code for the options is needed.
 */
import { getOption, hasOption, type DescExtension, type DescFile, type DescMessage, type DescService, type Message } from "@bufbuild/protobuf";
import type { GenExtension } from "@bufbuild/protobuf/codegenv2";
import type { Duration, FileOptions, MessageOptions, ServiceOptions } from "@bufbuild/protobuf/wkt";

/** concord.v1.StreamOptions as read from a file's options. */
export interface StreamOptionsValue extends Message<"concord.v1.StreamOptions"> {
  name: string;
  subjects: string[];
  storage: number;
  replicas: number;
  maxAge?: Duration;
  duplicateWindow?: Duration;
}

/** concord.v1.EventOptions as read from a message's options. */
export interface EventOptionsValue extends Message<"concord.v1.EventOptions"> {
  subject: string;
}

/** concord.v1.SubscriptionOptions as read from a service's options. */
export interface SubscriptionOptionsValue extends Message<"concord.v1.SubscriptionOptions"> {
  event: string;
  durable: string;
  maxDeliver: number;
  backoff: Duration[];
  ackWait?: Duration;
}

/** Typed access to the three Concord options of one request. */
export interface ConcordOptions {
  /** Number of the `(concord.v1.stream)` file option, for source locations. */
  readonly streamNumber: number;
  /** Number of the `(concord.v1.subscribe)` service option, for source locations. */
  readonly subscribeNumber: number;
  stream(file: DescFile): StreamOptionsValue | undefined;
  event(message: DescMessage): EventOptionsValue | undefined;
  subscriptions(service: DescService): SubscriptionOptionsValue[];
}

/** Fields the plugin reads from each option message, by proto name. */
const expectedFields: Record<string, readonly string[]> = {
  "concord.v1.stream": ["name", "subjects", "storage", "replicas", "max_age", "duplicate_window"],
  "concord.v1.event": ["subject"],
  "concord.v1.subscribe": ["event", "durable", "max_deliver", "backoff", "ack_wait"],
};

/**
 * Finds the Concord extensions among the request's files. Returns undefined
 * when no file imports concord/v1/options.proto (there is nothing to do);
 * throws when the options file lacks an extension or field this plugin reads,
 * that is, when plugin and options.proto are out of step.
 */
export function findConcordOptions(files: readonly DescFile[]): ConcordOptions | undefined {
  const found = new Map<string, DescExtension>();
  for (const file of files) for (const ext of file.extensions) if (ext.typeName in expectedFields) found.set(ext.typeName, ext);
  if (found.size === 0) return undefined;
  for (const [typeName, fields] of Object.entries(expectedFields)) {
    const ext = found.get(typeName);
    if (!ext) throw new Error(`the request declares some Concord options but not (${typeName}); is concord/v1/options.proto up to date with the plugin?`);
    const message = ext.fieldKind === "message" ? ext.message : ext.fieldKind === "list" && ext.listKind === "message" ? ext.message : undefined;
    const missing = fields.filter((name) => !message?.fields.some((f) => f.name === name));
    if (missing.length > 0) throw new Error(`(${typeName}) has no field ${missing.join(", ")}; is concord/v1/options.proto up to date with the plugin?`);
  }
  const streamExt = found.get("concord.v1.stream") as GenExtension<FileOptions, StreamOptionsValue>;
  const eventExt = found.get("concord.v1.event") as GenExtension<MessageOptions, EventOptionsValue>;
  const subscribeExt = found.get("concord.v1.subscribe") as GenExtension<ServiceOptions, SubscriptionOptionsValue[]>;
  return {
    streamNumber: streamExt.number,
    subscribeNumber: subscribeExt.number,
    stream: (file) => (hasOption(file, streamExt) ? getOption(file, streamExt) : undefined),
    event: (message) => (hasOption(message, eventExt) ? getOption(message, eventExt) : undefined),
    subscriptions: (service) => getOption(service, subscribeExt),
  };
}

/** Every message of a file, nested ones included, in declaration order. */
export function allMessages(file: DescFile): DescMessage[] {
  const out: DescMessage[] = [];
  const visit = (m: DescMessage): void => {
    out.push(m);
    m.nestedMessages.forEach(visit);
  };
  file.messages.forEach(visit);
  return out;
}
