/**
 * Every list in a request has a bound on its size. A server checks each
 * request against its contract before any handler runs, and protovalidate's
 * CEL costs time in proportion to the items it looks through: an
 * UpdateOrder whose update_mask held 60,000 paths (180 KB) took 27 ms of
 * CPU to check, where its contract now allows 2. So a request's repeated
 * field needs max_items, a map max_pairs, and a google.protobuf.FieldMask a
 * CEL rule bounding its count of paths in the form the platform reads ahead
 * of CEL (platform/contracts/field-mask.ts); a Struct, Value or ListValue,
 * whose lists no rule can bound, has no place in a request.
 */
import { type DescField, type DescFile, type DescMessage, getOption, hasOption, isFieldSet } from "@bufbuild/protobuf";
import { Ignore, MapRulesSchema, RepeatedRulesSchema, field as fieldRulesExt } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { fieldMaskBound, isFieldMask } from "../../platform/contracts/field-mask.js";
import { locateField } from "./source-locations.js";

/** google.protobuf's messages of lists no contract rule reaches. */
const openMessages = new Set(["google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"]);

/**
 * One line per field of a request (a method's input, and the messages it
 * holds, at any depth) whose size no rule bounds: `file:line:column:` as
 * buf prints its findings, the field, the request it is in, and how to
 * bound it.
 */
export function unboundedRequestFields(files: readonly DescFile[]): string[] {
  const found: string[] = [];
  const seen = new Set<DescMessage>();
  const visit = (message: DescMessage, request: string): void => {
    if (seen.has(message) || message.typeName.startsWith("google.protobuf.")) return;
    seen.add(message);
    for (const field of message.fields) {
      const problem = unbounded(field);
      if (problem) found.push(`${locateField(field)}:Field "${field.name}" of message "${message.typeName}" (in ${request}): ${problem}`);
      const inner = field.fieldKind === "message" || field.fieldKind === "list" || field.fieldKind === "map" ? field.message : undefined;
      if (inner) visit(inner, request);
    }
  };
  for (const service of files.flatMap((f) => f.services)) {
    for (const method of service.methods) visit(method.input, `the request of ${service.typeName}.${method.name}`);
  }
  return found;
}

/** What leaves a field's size open, and how to bound it; undefined when its rules bound it. */
function unbounded(field: DescField): string | undefined {
  const rules = hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
  const ignored = rules?.ignore === Ignore.ALWAYS ? " (its rules are ignored: IGNORE_ALWAYS)" : "";
  const held = field.fieldKind === "list" || field.fieldKind === "map" || field.fieldKind === "message" ? field.message?.typeName : undefined;
  if (held && openMessages.has(held)) return `holds a ${held}, whose lists and maps no rule can bound; a request could carry any number of values for the server to check. Use a message of its own with bounded fields instead`;
  if (field.fieldKind === "list") {
    const repeated = !ignored && rules?.type.case === "repeated" ? rules.type.value : undefined;
    if (repeated && isFieldSet(repeated, RepeatedRulesSchema.field.maxItems)) return undefined;
    return `a repeated field with no max_items${ignored}; a request could hold any number of items, each checked by the contract's rules before it is refused. Bound it: (buf.validate.field).repeated.max_items = <the most a caller needs>`;
  }
  if (field.fieldKind === "map") {
    const map = !ignored && rules?.type.case === "map" ? rules.type.value : undefined;
    if (map && isFieldSet(map, MapRulesSchema.field.maxPairs)) return undefined;
    return `a map with no max_pairs${ignored}; a request could hold any number of entries, each checked by the contract's rules before it is refused. Bound it: (buf.validate.field).map.max_pairs = <the most a caller needs>`;
  }
  if (isFieldMask(field) && fieldMaskBound(field) === undefined) {
    return `a google.protobuf.FieldMask with no bound on its paths${ignored}; a request could hold any number of them, and each CEL rule testing them looks through them all. Bound it: begin its (buf.validate.field).cel expression with "size(this.paths) <= <N> && " (an expression of && alone, which the server checks before any CEL), list its names there ("this.paths.all(p, p in ['a', 'b'])", which bounds its bytes), and begin each message-level rule testing its paths with "size(this.${field.name}.paths) > <N> || "`;
  }
  return undefined;
}
