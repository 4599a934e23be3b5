import { type DescField, getOption, hasOption } from "@bufbuild/protobuf";
import { Ignore, field as fieldRulesExt } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

/**
 * What the CEL rules of a google.protobuf.FieldMask field bound: protovalidate
 * has no max_items for a mask, so its contract says it in CEL, and this reads
 * two forms of a conjunct there. `size(this.paths) <= N` bounds the paths'
 * count (`maxPaths`), and `this.paths.all(p, p in ['a', 'b'])` their length
 * (`maxPathBytes`, the longest name listed, in UTF-8). A conjunct counts only
 * in an expression of `&&` alone (no `||`, `!` or `?`, anywhere), where it
 * must hold for the rule to pass.
 */
export interface FieldMaskBound {
  readonly maxPaths: number;
  /** Undefined when no rule lists the names its paths may take. */
  readonly maxPathBytes: number | undefined;
  /** What protovalidate says of a mask breaking the rule that bounds the count: its message, or its id. */
  readonly description: string;
}

const fieldMaskType = "google.protobuf.FieldMask";

/** Whether a field holds a google.protobuf.FieldMask. */
export const isFieldMask = (field: DescField): boolean => field.fieldKind === "message" && field.message.typeName === fieldMaskType;

/** The bound a FieldMask field's rules set on its paths; undefined when none bounds their count (or the field is no FieldMask). */
export function fieldMaskBound(field: DescField): FieldMaskBound | undefined {
  if (!isFieldMask(field) || !hasOption(field, fieldRulesExt)) return undefined;
  const rules = getOption(field, fieldRulesExt);
  if (rules.ignore === Ignore.ALWAYS) return undefined;
  let count: { max: number; description: string } | undefined;
  let maxPathBytes: number | undefined;
  for (const rule of rules.cel) {
    for (const part of conjuncts(rule.expression)) {
      const size = /^size\(this\.paths\)\s*<=\s*(\d+)$/.exec(part);
      if (size && (count === undefined || Number(size[1]) < count.max)) count = { max: Number(size[1]), description: rule.message || rule.id };
      const names = /^this\.paths\.all\((\w+),\s*(\w+)\s+in\s+\[([^\]]*)\]\)$/.exec(part);
      const listed = names && names[1] === names[2] ? quotedList(names[3]!) : undefined;
      if (listed) {
        const longest = Math.max(0, ...listed.map((name) => Buffer.byteLength(name)));
        maxPathBytes = Math.min(maxPathBytes ?? longest, longest);
      }
    }
  }
  return count && { maxPaths: count.max, maxPathBytes, description: count.description };
}

/** The conjuncts of an expression made of `&&` alone, trimmed; none for any other. */
function conjuncts(expression: string): string[] {
  if (/\|\||\?|!(?!=)/.test(expression)) return [];
  const parts = expression.split("&&").map((p) => p.trim());
  // An `&&` inside parentheses or brackets leaves a part unbalanced: then the parts are no conjuncts of the whole.
  const balanced = (p: string): boolean => count(p, "(") === count(p, ")") && count(p, "[") === count(p, "]");
  return parts.every(balanced) ? parts : [];
}

const count = (text: string, char: string): number => text.split(char).length - 1;

/** `'a', "b"` as its strings; undefined for anything else (an escape, a name). */
export function quotedList(text: string): string[] | undefined {
  const items = text.split(",").map((item) => item.trim());
  const strings = items.map((item) => /^'([^'\\]*)'$|^"([^"\\]*)"$/.exec(item)).map((m) => m && (m[1] ?? m[2]));
  return strings.every((s): s is string => typeof s === "string") ? strings : undefined;
}
