/**
 * Prints a file's stream spec and event descriptors: plain literals that
 * satisfy the runtime's StreamSpec and EventDescriptor<T> structurally, with
 * ts-proto's message const as the codec.
 */
import type { GeneratedFile } from "@bufbuild/protoplugin";
import { leadingComment } from "./comments.js";
import type { EventContract, StreamContract } from "./contract-model.js";
import { printStreamSpecFields } from "./print-specs.js";
import { streamConstPrefix, tsProtoMessageName, tsProtoModule } from "./ts-proto-names.js";

/** Export name of a stream's spec, for example `ShopOrdersStream`. */
export function streamConstName(stream: StreamContract): string {
  return `${streamConstPrefix(stream.spec.name)}Stream`;
}

/** Export name of the list of a stream's events, for example `ShopOrdersEvents`. */
export function streamEventsConstName(stream: StreamContract): string {
  return `${streamConstPrefix(stream.spec.name)}Events`;
}

/** Export name of an event's descriptor, for example `OrderPlacedEvent`. */
export function eventConstName(event: EventContract): string {
  return `${tsProtoMessageName(event.message)}Event`;
}

/** Prints `<Name>Stream`, a StreamSpec literal. */
export function printStream(f: GeneratedFile, stream: StreamContract): void {
  const { spec } = stream;
  const doc = [stream.comment, `JetStream stream ${spec.name}, provisioned from this spec; it captures ${spec.subjects.join(", ")}.`];
  f.print(f.jsDoc(doc.filter((p) => p !== "").join("\n\n")));
  f.print(f.export("const", streamConstName(stream)), " = {");
  printStreamSpecFields(f, spec, "  ");
  f.print("} as const;");
  f.print();
}

/** Prints `<Message>Event`, an EventDescriptor literal for one event. */
export function printEvent(f: GeneratedFile, event: EventContract): void {
  const message = f.import(tsProtoMessageName(event.message), tsProtoModule(event.message.file));
  const doc = [leadingComment(event.message), `Event ${event.message.typeName}, published on \`${event.subjectTemplate}\` in stream ${event.stream.spec.name}.`];
  const tokens = event.tokens.map((t) => `${t.name}: event.${t.property}`).join(", ");
  f.print(f.jsDoc(doc.filter((p) => p !== "").join("\n\n")));
  f.print(f.export("const", eventConstName(event)), " = {");
  f.print("  typeName: ", f.string(event.message.typeName), ",");
  f.print("  stream: ", f.string(event.stream.spec.name), ",");
  f.print("  subjectTemplate: ", f.string(event.subjectTemplate), ",");
  f.print("  filterSubject: ", f.string(event.filterSubject), ",");
  if (tokens === "") f.print("  subjectTokens: (_event: ", message, ") => ({}),");
  else f.print("  subjectTokens: (event: ", message, ") => ({ ", tokens, " }),");
  f.print("  codec: ", message, ",");
  f.print("} as const;");
  f.print();
}

/** Prints `<Name>Events`, the descriptors of every event of a stream's file. */
export function printStreamEvents(f: GeneratedFile, stream: StreamContract, events: readonly EventContract[]): void {
  f.print(f.jsDoc(`Every event of stream ${stream.spec.name}, as declared in ${stream.file.name}.proto.`));
  f.print(f.export("const", streamEventsConstName(stream)), " = [");
  for (const event of events) f.print("  ", eventConstName(event), ",");
  f.print("] as const;");
  f.print();
}
