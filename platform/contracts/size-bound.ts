import { type DescField, type DescMessage, ScalarType, getOption, hasOption, isFieldSet } from "@bufbuild/protobuf";
import { Ignore, MapRulesSchema, RepeatedRulesSchema, StringRulesSchema, BytesRulesSchema, type FieldRules, field as fieldRulesExt } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { fieldMaskBound, isFieldMask } from "./field-mask.js";
import { fixedWidth } from "./wire-shape.js";

/**
 * The most bytes a valid message of this type can take on the wire, worked
 * out from its contract's rules: a string's max_len (4 bytes a character at
 * most), max_bytes, uuid, a pattern of fixed length ("^[A-Z]{2}$"), const
 * or in (its longest value in UTF-8: any other value is invalid), the least
 * of them where it has several; a bytes field's max_len, const or in; a
 * list's max_items, a map's max_pairs (a list of entries, each its key and
 * its value as their rules bound them), a FieldMask's paths as its CEL
 * rules bound them (see field-mask.ts), nested messages in turn. Infinity
 * when any field is unbounded (a string, list or map without a limit, a
 * recursive type). Unknown fields are not counted. Rules marked
 * `ignore: IGNORE_ALWAYS` bound nothing: no check holds a message to them.
 */
export function encodedSizeBound(message: DescMessage): number {
  return boundOf(message, new Set());
}

function boundOf(message: DescMessage, visiting: Set<DescMessage>): number {
  if (visiting.has(message)) return Number.POSITIVE_INFINITY;
  visiting.add(message);
  try {
    let total = 0;
    for (const field of message.fields) {
      total += fieldBound(field, visiting);
      if (total === Number.POSITIVE_INFINITY) return total;
    }
    return total;
  } finally {
    visiting.delete(message);
  }
}

/** `rules` as the checks enforce them: none where they are always ignored. */
const enforced = (rules: FieldRules | undefined): FieldRules | undefined => (rules?.ignore === Ignore.ALWAYS ? undefined : rules);

/** The smallest limit a message type gets, however small its contract bounds it. */
const minimumSizeLimit = 4 * 1024;

/**
 * The size a message of a type may have whose largest valid one takes
 * `bound` bytes (encodedSizeBound): twice that plus 1 KiB (room for fields a
 * newer sender adds), at least 4 KiB, and never above `cap`, which is also
 * the limit of a type whose contract leaves its size open. A gRPC method's
 * receive limit, and what a consumer decodes of an event.
 */
export function sizeLimit(bound: number, cap: number): number {
  return Number.isFinite(bound) ? Math.min(cap, Math.max(minimumSizeLimit, 2 * bound + 1024)) : cap;
}

/** The most of a message over its limit that is decoded to name a list over its max_items: 64 KiB, or four times the limit. */
export const itemCountBytes = (limit: number): number => Math.max(64 * 1024, 4 * limit);

const utf8 = new TextEncoder();

/** The largest of `sizes`, the bound of an `in` rule's values; Infinity for no values (no `in` rule). */
const longest = (sizes: readonly number[]): number => (sizes.length === 0 ? Number.POSITIVE_INFINITY : Math.max(...sizes));

/** Bytes of a varint holding `n`. */
const varintSize = (n: number): number => (n < 0 ? 10 : Math.max(1, Math.ceil(Math.log2(n + 1) / 7)));

function fieldBound(field: DescField, visiting: Set<DescMessage>): number {
  const rules = enforced(hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined);
  const tag = varintSize(field.number << 3);
  switch (field.fieldKind) {
    case "scalar":
    case "enum":
      return tag + valueBound(field.fieldKind === "enum" ? ScalarType.INT32 : field.scalar, rules);
    case "message": {
      const inner = isFieldMask(field) ? maskBound(field) : boundOf(field.message, visiting);
      return tag + varintSize(inner) + inner;
    }
    case "list": {
      const repeated = rules?.type.case === "repeated" ? rules.type.value : undefined;
      if (!repeated || !isFieldSet(repeated, RepeatedRulesSchema.field.maxItems)) return Number.POSITIVE_INFINITY;
      const items = Number(repeated.maxItems);
      // No item at all: nothing to bound, whatever an item could hold (0 times an open bound is no number).
      if (items === 0) return 0;
      let element: number;
      if (field.listKind === "message") {
        const inner = boundOf(field.message, visiting);
        element = varintSize(inner) + inner;
      } else element = valueBound(field.listKind === "enum" ? ScalarType.INT32 : field.scalar, enforced(repeated.items));
      // Packed or not, no list takes more than a tag and a length per item.
      return items * (tag + 5 + element);
    }
    case "map": {
      const map = rules?.type.case === "map" ? rules.type.value : undefined;
      if (!map || !isFieldSet(map, MapRulesSchema.field.maxPairs)) return Number.POSITIVE_INFINITY;
      const pairs = Number(map.maxPairs);
      if (pairs === 0) return 0;
      // An entry is a message of its key (field 1) and its value (field 2), each behind a one-byte tag; a map is a list of them.
      const key = 1 + valueBound(field.mapKey, enforced(map.keys));
      let value: number;
      if (field.mapKind === "message") {
        const inner = boundOf(field.message, visiting);
        value = 1 + varintSize(inner) + inner;
      } else value = 1 + valueBound(field.mapKind === "enum" ? ScalarType.INT32 : field.scalar, enforced(map.values));
      const entry = key + value;
      return pairs * (tag + varintSize(entry) + entry);
    }
  }
}

/** A FieldMask's bytes: its paths' count times their length, where its rules bound both (see field-mask.ts). */
function maskBound(field: DescField): number {
  const bound = fieldMaskBound(field);
  if (bound?.maxPathBytes === undefined) return Number.POSITIVE_INFINITY;
  return bound.maxPaths * (1 + varintSize(bound.maxPathBytes) + bound.maxPathBytes);
}

function valueBound(scalar: ScalarType, rules: FieldRules | undefined): number {
  const fixed = fixedWidth(scalar);
  if (fixed !== undefined) return fixed;
  switch (scalar) {
    case ScalarType.STRING: {
      const s = rules?.type.case === "string" ? rules.type.value : undefined;
      if (!s) return Number.POSITIVE_INFINITY;
      // Every rule holds at once, so the least of their bounds does.
      const bytes = Math.min(
        s.wellKnown.case === "uuid" && s.wellKnown.value ? 36 : Number.POSITIVE_INFINITY,
        isFieldSet(s, StringRulesSchema.field.maxBytes) ? Number(s.maxBytes) : Number.POSITIVE_INFINITY,
        isFieldSet(s, StringRulesSchema.field.maxLen) ? 4 * Number(s.maxLen) : Number.POSITIVE_INFINITY,
        isFieldSet(s, StringRulesSchema.field.len) ? 4 * Number(s.len) : Number.POSITIVE_INFINITY,
        isFieldSet(s, StringRulesSchema.field.pattern) ? 4 * patternMaxLength(s.pattern) : Number.POSITIVE_INFINITY,
        isFieldSet(s, StringRulesSchema.field.const) ? utf8.encode(s.const).byteLength : Number.POSITIVE_INFINITY,
        longest(s.in.map((value) => utf8.encode(value).byteLength)),
      );
      return varintSize(bytes) + bytes;
    }
    case ScalarType.BYTES: {
      const b = rules?.type.case === "bytes" ? rules.type.value : undefined;
      if (!b) return Number.POSITIVE_INFINITY;
      const bytes = Math.min(
        isFieldSet(b, BytesRulesSchema.field.maxLen) ? Number(b.maxLen) : Number.POSITIVE_INFINITY,
        isFieldSet(b, BytesRulesSchema.field.const) ? b.const.byteLength : Number.POSITIVE_INFINITY,
        longest(b.in.map((value) => value.byteLength)),
      );
      return varintSize(bytes) + bytes;
    }
    default:
      // Varints: at most 10 bytes (a negative int32 is sign-extended to 64 bits).
      return 10;
  }
}

/**
 * The most characters a whole-string pattern can match when it is a
 * sequence of literal characters and character classes, each with an
 * optional fixed or bounded count ("^[A-Z]{2}$", "^v[0-9]{1,3}$"); Infinity
 * for any other pattern.
 */
export function patternMaxLength(pattern: string): number {
  const body = /^\^(.*)\$$/s.exec(pattern)?.[1];
  if (body === undefined) return Number.POSITIVE_INFINITY;
  const atom = /(\[(?:\\.|[^\]\\])+\]|\\[^dDsSwWbB]|[^\\[\](){}*+?|^$.])(?:\{(\d+)(?:,(\d+))?\})?/y;
  let length = 0;
  for (let at = 0; at < body.length; ) {
    atom.lastIndex = at;
    const match = atom.exec(body);
    if (!match) return Number.POSITIVE_INFINITY;
    length += match[2] === undefined ? 1 : Number(match[3] ?? match[2]);
    at = atom.lastIndex;
  }
  return length;
}
