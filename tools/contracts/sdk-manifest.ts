/**
 * gen/events.json: the Concord options of the contracts (streams, events,
 * subscriptions), read from the image with their defaults applied, in a form
 * any language can load. The Go and Python event constants are printed from
 * the same model. The options are read and checked by protoc-gen-events' own
 * reader, so the manifest and the TypeScript bindings cannot disagree.
 */
import { createFileRegistry, fromBinary, type DescField, type DescFile, type DescMessage } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import type { ConsumerSpec, StreamSpec } from "../../platform/events/index.js";
import { leadingComment, oneLine } from "../protoc-gen-events/comments.js";
import { findConcordOptions } from "../protoc-gen-events/concord-options.js";
import { readContracts } from "../protoc-gen-events/read-contracts.js";

/** Bumped when a field of the manifest changes meaning or goes away. */
export const manifestVersion = 1;

/** A stream: every field of the runtime's StreamSpec (an empty description when the contract has none) and its file. */
export interface StreamManifest extends Required<StreamSpec> {
  /** The proto file whose events the stream holds. */
  readonly file: string;
}

/** One `{field}` placeholder of a subject template and the field that fills it. */
export interface TokenManifest {
  /** Proto field name, as written in the template. */
  readonly field: string;
  /** Proto scalar type of the field: "string", "int64", "bool", ... */
  readonly type: string;
}

export interface EventManifest {
  /** Full Protobuf name, sent as `ce-type`. */
  readonly type: string;
  readonly stream: string;
  readonly subjectTemplate: string;
  /** The template with every `{token}` replaced by `*`. */
  readonly filterSubject: string;
  /** The template's placeholders, in order. */
  readonly tokens: readonly TokenManifest[];
  readonly file: string;
  readonly description: string;
}

/** A durable consumer: every field of the runtime's ConsumerSpec, its event type named `event`, and its service. */
export interface SubscriptionManifest extends Omit<ConsumerSpec, "eventType"> {
  /** Full name of the consuming service. */
  readonly service: string;
  /** Full Protobuf name of the event consumed. */
  readonly event: string;
}

export interface EventsManifest {
  readonly version: number;
  readonly streams: readonly StreamManifest[];
  readonly events: readonly EventManifest[];
  readonly subscriptions: readonly SubscriptionManifest[];
}

/** The files of a serialized FileDescriptorSet (the image of tools/contracts/image.ts), sorted by name. */
export function loadImageFiles(image: Uint8Array): DescFile[] {
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, image));
  const files: DescFile[] = [];
  for (const file of registry.files) files.push(file);
  return files.sort((a, b) => compare(a.name, b.name));
}

/**
 * Reads the manifest from every file of the image. Throws protoc-gen-events'
 * ContractError, naming every broken option, when the options break a
 * contract rule.
 */
export function readEventsManifest(files: readonly DescFile[]): EventsManifest {
  const options = findConcordOptions(files);
  if (!options) return { version: manifestVersion, streams: [], events: [], subscriptions: [] };
  const contracts = readContracts(files, options);

  const streams = contracts.streams.map(
    ({ file, spec }): StreamManifest => ({
      name: spec.name,
      subjects: [...spec.subjects],
      storage: spec.storage,
      replicas: spec.replicas,
      maxAgeMs: spec.maxAgeMs,
      duplicateWindowMs: spec.duplicateWindowMs,
      maxMessageBytes: spec.maxMessageBytes ?? 0,
      file: `${file.name}.proto`,
      description: spec.description ?? "",
    }),
  );
  const events = contracts.events.map(
    (event): EventManifest => ({
      type: event.message.typeName,
      stream: event.stream.spec.name,
      subjectTemplate: event.subjectTemplate,
      filterSubject: event.filterSubject,
      tokens: event.tokens.map((t) => ({ field: t.name, type: scalarTypeName(fieldNamed(event.message, t.name)) })),
      file: `${event.message.file.name}.proto`,
      description: oneLine(leadingComment(event.message)),
    }),
  );
  const subscriptions = contracts.subscriptions.map(
    ({ service, spec }): SubscriptionManifest => ({
      service: service.typeName,
      event: spec.eventType,
      durable: spec.durable,
      stream: spec.stream,
      filterSubject: spec.filterSubject,
      maxDeliver: spec.maxDeliver,
      backoffMs: [...spec.backoffMs],
      ackWaitMs: spec.ackWaitMs,
    }),
  );
  return {
    version: manifestVersion,
    streams: streams.sort((a, b) => compare(a.name, b.name)),
    events: events.sort((a, b) => compare(a.type, b.type)),
    subscriptions: subscriptions.sort((a, b) => compare(a.service, b.service) || compare(a.event, b.event) || compare(a.durable, b.durable)),
  };
}

/** The manifest as written to gen/events.json: two-space indent, trailing newline. */
export function formatEventsManifest(manifest: EventsManifest): string {
  return `${JSON.stringify({ $comment: "Generated by `npm run gen` from proto/ (the concord.v1 options). Do not edit.", ...manifest }, null, 2)}\n`;
}

/** The message named `typeName` (full Protobuf name) among `files`. */
export function findMessage(files: readonly DescFile[], typeName: string): DescMessage {
  for (const file of files) {
    const stack = [...file.messages];
    for (let m = stack.pop(); m; m = stack.pop()) {
      if (m.typeName === typeName) return m;
      stack.push(...m.nestedMessages);
    }
  }
  throw new Error(`no message ${typeName} in the image`);
}

function fieldNamed(message: DescMessage, name: string): DescField {
  const field = message.fields.find((f) => f.name === name);
  if (!field) throw new Error(`${message.typeName} has no field ${name}`);
  return field;
}

/** `string`, `int64`, `bool`...: the proto spelling of a scalar field's type. */
function scalarTypeName(field: DescField): string {
  if (field.fieldKind !== "scalar") throw new Error(`${field.parent.typeName}.${field.name} is not a scalar field`);
  return scalarNames[field.scalar];
}

// ScalarType values are FieldDescriptorProto.Type numbers.
const scalarNames: Record<number, string> = {
  1: "double",
  2: "float",
  3: "int64",
  4: "uint64",
  5: "int32",
  6: "fixed64",
  7: "fixed32",
  8: "bool",
  9: "string",
  12: "bytes",
  13: "uint32",
  15: "sfixed32",
  16: "sfixed64",
  17: "sint32",
  18: "sint64",
};

/** Byte-order comparison, independent of the locale, for stable output. */
export function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
