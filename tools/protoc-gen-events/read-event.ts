/** Reads and checks a message's `(concord.v1.event)` option. */
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt";
import type { EventOptionsValue } from "./concord-options.js";
import type { ContractProblems } from "./contract-error.js";
import type { EventContract, StreamContract, SubjectToken } from "./contract-model.js";
import { filterSubjectOf, parseSubjectTemplate, subjectIsWithin } from "./subjects.js";
import { tsProtoPropertyName } from "./ts-proto-names.js";

/**
 * The event a message declares, or undefined (and problems recorded) when
 * its file has no stream or its subject template is invalid.
 */
export function readEvent(
  message: DescMessage,
  value: EventOptionsValue,
  stream: StreamContract | undefined,
  streamDeclared: boolean,
  problems: ContractProblems,
): EventContract | undefined {
  const before = problems.count;
  const bad = (problem: string): void => problems.add(message, `(concord.v1.event) ${problem}`);
  if (!streamDeclared) {
    bad(`is declared in a file without a stream; add option (concord.v1.stream) to ${message.file.name}.proto`);
  }
  const parsed = parseSubjectTemplate(value.subject);
  if (!parsed.ok) {
    bad(`subject is malformed: ${parsed.reason}`);
    return undefined;
  }
  const tokens: SubjectToken[] = [];
  for (const token of parsed.tokens) {
    if (!("field" in token)) continue;
    if (tokens.some((t) => t.name === token.field)) {
      bad(`subject "${value.subject}" uses {${token.field}} twice`);
      continue;
    }
    const field = message.fields.find((f) => f.name === token.field);
    if (!field) {
      bad(`subject "${value.subject}" names {${token.field}}, which is not a field of ${message.name} (fields: ${message.fields.map((f) => f.name).join(", ") || "none"})`);
      continue;
    }
    const unusable = unusableAsToken(field);
    if (unusable) {
      bad(`subject "${value.subject}" names {${token.field}}, which ${unusable}; a subject token must be a singular string, integer or bool field`);
      continue;
    }
    tokens.push({ name: field.name, property: tsProtoPropertyName(field) });
  }
  const filterSubject = filterSubjectOf(parsed.tokens);
  if (stream && !stream.spec.subjects.some((s) => subjectIsWithin(filterSubject, s))) {
    bad(`subject "${value.subject}" is outside the subjects of stream ${stream.spec.name} (${stream.spec.subjects.join(", ")})`);
  }
  if (problems.count > before || !stream) return undefined;
  return { message, stream, subjectTemplate: value.subject, filterSubject, tokens };
}

/** Why a field cannot fill a subject token, or undefined when it can. */
function unusableAsToken(field: DescField): string | undefined {
  switch (field.fieldKind) {
    case "list":
      return "is repeated";
    case "map":
      return "is a map";
    case "message":
      return `is a message (${field.message.typeName})`;
    case "enum":
      return `is an enum (${field.enum.typeName})`;
    case "scalar":
      if (field.scalar === ScalarType.BYTES) return "is bytes";
      if (field.scalar === ScalarType.FLOAT || field.scalar === ScalarType.DOUBLE) return "is a floating point number";
      if (field.oneof) return `is part of oneof ${field.oneof.name} and may be unset`;
      if (field.presence === FeatureSet_FieldPresence.EXPLICIT) return "is optional and may be unset";
      return undefined;
  }
}
