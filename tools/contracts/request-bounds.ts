/**
 * Every list a service takes in has a bound on its size. A server checks
 * each request against its contract before any handler runs, and a
 * consumer each event it consumes, and protovalidate's CEL costs time in
 * proportion to the items it looks through: an UpdateOrder whose
 * update_mask held 60,000 paths (180 KB) took 27 ms of CPU to check, where
 * its contract now allows 2. So a repeated field of a request, or of an
 * event a service consumes (at any depth of messages in it), needs
 * max_items, a map max_pairs, and a google.protobuf.FieldMask a CEL rule
 * bounding its count of paths in the form the platform reads ahead of CEL
 * (platform/contracts/field-mask.ts); a Struct, Value or ListValue, whose
 * lists no rule can bound, has no place there. Nor has a list or map whose
 * items hold, at any depth, the message that holds it: max_items bounds one
 * level of such a tree, not the whole, and the levels multiply (a
 * ListProductsRequest holding a `Filter` with `repeated Filter any_of`, at
 * most 4, carried 87,381 Filters in 176 KB, within the receive limit of a
 * request its size does not bound, and took 150 to 170 ms of CPU to
 * check). A cycle through single message fields alone is left alone: the
 * wire format's check refuses messages nested more than 100 deep
 * (platform/contracts/wire-shape.ts), so it adds at most 100 messages to
 * each it starts from. An event no service consumes is checked only by
 * the service that publishes it, on its own data, and is left alone.
 */
import { type DescField, type DescFile, type DescMessage, getOption, hasOption, isFieldSet } from "@bufbuild/protobuf";
import { Ignore, MapRulesSchema, RepeatedRulesSchema, field as fieldRulesExt } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { fieldMaskBound, isFieldMask } from "../../platform/contracts/field-mask.js";
import { allMessages, findConcordOptions } from "../protoc-gen-events/concord-options.js";
import { locateField } from "./source-locations.js";

/** google.protobuf's messages of lists no contract rule reaches. */
const openMessages = new Set(["google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"]);

/** A message a service takes in: a method's input, or an event it consumes; and how findings name it and who sends it. */
interface Input {
  readonly message: DescMessage;
  /** "the request of pkg.Service.Method", "the event pkg.Event, which pkg.Service consumes". */
  readonly where: string;
  readonly kind: "request" | "event";
}

/**
 * One line per field of a request (a method's input, and the messages it
 * holds, at any depth) or of an event a service consumes (the same), whose
 * size no rule bounds: `file:line:column:` as buf prints its findings, the
 * field, its path from the request or event that first reaches it, and how
 * to bound it; a list or map whose items hold its own message again, on
 * a line of its own. Each field is named once for each, by its shortest
 * path from the first input (the methods in file order, then the consumed
 * events) that holds it.
 */
export function unboundedInputFields(files: readonly DescFile[]): string[] {
  const found: string[] = [];
  const seen = new Set<DescMessage>();
  for (const input of inputsOf(files)) {
    // Breadth first, so that a field is named by its shortest path; a message met before (a cycle, or another input's) is not looked into again.
    let level: Array<{ readonly message: DescMessage; readonly path: string }> = [{ message: input.message, path: "" }];
    while (level.length > 0) {
      const next: typeof level = [];
      for (const { message, path } of level) {
        if (seen.has(message) || message.typeName.startsWith("google.protobuf.")) continue;
        seen.add(message);
        for (const field of message.fields) {
          const at = `${path}${field.name}`;
          for (const problem of [unbounded(field, input.kind), recursive(field, message, input.kind)]) {
            if (problem) found.push(`${locateField(field)}:Field "${field.name}" of message "${message.typeName}", at ${at} in ${input.where}: ${problem}`);
          }
          if (field.message) next.push({ message: field.message, path: `${at}.` });
        }
      }
      level = next;
    }
  }
  return found;
}

/** The methods' inputs, in file order, then the events the services consume, in the order they subscribe. */
function inputsOf(files: readonly DescFile[]): Input[] {
  const services = files.flatMap((f) => f.services);
  const inputs: Input[] = services.flatMap((service) =>
    service.methods.map((method): Input => ({ message: method.input, where: `the request of ${service.typeName}.${method.name}`, kind: "request" })),
  );
  const options = findConcordOptions(files);
  if (!options) return inputs;
  const messages = new Map(files.flatMap(allMessages).map((m) => [m.typeName, m]));
  const consumers = new Map<DescMessage, string[]>();
  for (const service of services) {
    for (const subscription of options.subscriptions(service)) {
      // An event that is no message of the contracts is protoc-gen-events' to refuse.
      const event = messages.get(subscription.event);
      if (!event) continue;
      const names = consumers.get(event) ?? [];
      if (!names.includes(service.typeName)) names.push(service.typeName);
      consumers.set(event, names);
    }
  }
  for (const [event, names] of consumers) {
    inputs.push({ message: event, where: `the event ${event.typeName}, which ${names.join(" and ")} consume${names.length > 1 ? "" : "s"}`, kind: "event" });
  }
  return inputs;
}

/** How a finding speaks of an input of `kind`, and of who decides how much it holds. */
const spoken = (kind: Input["kind"]) => (kind === "request" ? { one: "a request", needs: "a caller needs" } : { one: "an event", needs: "its publisher sends" });

/** What leaves a field's size open, and how to bound it; undefined when its rules bound it. */
function unbounded(field: DescField, kind: Input["kind"]): string | undefined {
  const rules = hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
  const ignored = rules?.ignore === Ignore.ALWAYS ? " (its rules are ignored: IGNORE_ALWAYS)" : "";
  const { one, needs } = spoken(kind);
  const held = field.fieldKind === "list" || field.fieldKind === "map" || field.fieldKind === "message" ? field.message?.typeName : undefined;
  if (held && openMessages.has(held)) return `holds a ${held}, whose lists and maps no rule can bound; ${one} could carry any number of values to check. Use a message of its own with bounded fields instead`;
  if (field.fieldKind === "list") {
    const repeated = !ignored && rules?.type.case === "repeated" ? rules.type.value : undefined;
    if (repeated && isFieldSet(repeated, RepeatedRulesSchema.field.maxItems)) return undefined;
    return `a repeated field with no max_items${ignored}; ${one} could hold any number of items, each checked by the contract's rules before it is refused. Bound it: (buf.validate.field).repeated.max_items = <the most ${needs}>`;
  }
  if (field.fieldKind === "map") {
    const map = !ignored && rules?.type.case === "map" ? rules.type.value : undefined;
    if (map && isFieldSet(map, MapRulesSchema.field.maxPairs)) return undefined;
    return `a map with no max_pairs${ignored}; ${one} could hold any number of entries, each checked by the contract's rules before it is refused. Bound it: (buf.validate.field).map.max_pairs = <the most ${needs}>`;
  }
  if (isFieldMask(field) && fieldMaskBound(field) === undefined) {
    return `a google.protobuf.FieldMask with no bound on its paths${ignored}; ${one} could hold any number of them, and each CEL rule testing them looks through them all. Bound it: begin its (buf.validate.field).cel expression with "size(this.paths) <= <N> && " (an expression of && alone, which the platform checks before any CEL), list its names there ("this.paths.all(p, p in ['a', 'b'])", which bounds its bytes), and begin each message-level rule testing its paths with "size(this.${field.name}.paths) > <N> || "`;
  }
  return undefined;
}

/**
 * For a list or map of messages whose items hold `holder` again (a tree of
 * them, its levels multiplying), what is wrong and what to do instead;
 * undefined for any other field.
 */
function recursive(field: DescField, holder: DescMessage, kind: Input["kind"]): string | undefined {
  if ((field.fieldKind !== "list" && field.fieldKind !== "map") || !field.message) return undefined;
  const back = pathBack(field.message, holder, field.name);
  if (back === undefined) return undefined;
  const [items, most] = field.fieldKind === "list" ? ["items", "max_items"] : ["values", "max_pairs"];
  const { one, needs } = spoken(kind);
  return (
    `a ${field.fieldKind === "list" ? "repeated field" : "map"} whose ${items} lead back to its own message, ${holder.typeName} (at ${back}), so ${one} could nest them level within level: ` +
    `${most} bounds each level, not their total, which only ${one}'s size limits, and each is checked by the contract's rules before it is refused. ` +
    `Give it ${items} of a message that does not lead back to ${holder.typeName}: a message of its own for each level ${needs}, or a flat list whose items refer to each other by id`
  );
}

/** The shortest path of fields from `from`, reached at `path`, to `to` (`path` itself when `from` is `to`); undefined when `from` never holds `to`. */
function pathBack(from: DescMessage, to: DescMessage, path: string): string | undefined {
  const seen = new Set<DescMessage>();
  let level = [{ message: from, path }];
  while (level.length > 0) {
    const next: typeof level = [];
    for (const { message, path } of level) {
      if (message === to) return path;
      if (seen.has(message) || message.typeName.startsWith("google.protobuf.")) continue;
      seen.add(message);
      for (const field of message.fields) if (field.message) next.push({ message: field.message, path: `${path}.${field.name}` });
    }
    level = next;
  }
  return undefined;
}
