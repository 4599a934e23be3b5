import { type DescField, type DescMessage, ScalarType, getOption, hasOption, isFieldSet } from "@bufbuild/protobuf";
import { MapRulesSchema, RepeatedRulesSchema, field as fieldRulesExt } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

/**
 * What a field's bytes must be, beyond a well-formed wire record: a message
 * to look into (with, for a list or map whose rules bound it, how many
 * items one message may hold on the wire: see itemCap), or a packed list
 * whose elements must fill it exactly.
 */
type Inner = { readonly kind: "message"; readonly shape: Shape; readonly itemCap?: number } | { readonly kind: "packed"; readonly width: 0 | 4 | 8 };

/** The fields of one message type that are looked into, by number. */
type Shape = Map<number, Inner>;

/** Deeper than this, a message is refused (protobuf-es's readers stop at 100 too; ts-proto's decode has no limit). */
const maxDepth = 100;

class WireProblem extends Error {}

/**
 * The fields of each shape that never come as a group, by number, named
 * (`shop.orders.v1.LineItem.quantity`): every field but a message written
 * delimited (a proto2 group, an editions DELIMITED field). Read only at a
 * start-group tag, which no well-formed proto3 message holds.
 */
const notGroups = new WeakMap<Shape, ReadonlyMap<number, string>>();

/**
 * How many items a list (or map) of messages whose rules allow `max` may
 * hold on the wire before it is refused here, undecoded: each is an object
 * once decoded, and 450,000 empty ones (900 KB) took a service past its heap
 * limit. Sixteen times `max`, at least 10,000 (a few MB of objects): a
 * list over its limit by less is left to the contract's rules, which name
 * it (a CreateOrder of 6,000 lines is answered "lines: must contain no more
 * than 50 item(s)").
 */
function itemCap(max: number): number {
  return Math.max(10_000, 16 * max);
}

/** A list's max_items or a map's max_pairs, from its field's rules; undefined when they set none. */
function maxItemsOf(field: DescField): number | undefined {
  if (!hasOption(field, fieldRulesExt)) return undefined;
  const rules = getOption(field, fieldRulesExt);
  if (rules.type.case === "repeated" && isFieldSet(rules.type.value, RepeatedRulesSchema.field.maxItems)) return Number(rules.type.value.maxItems);
  if (rules.type.case === "map" && isFieldSet(rules.type.value, MapRulesSchema.field.maxPairs)) return Number(rules.type.value.maxPairs);
  return undefined;
}

/** Bytes a value of a fixed-width scalar type takes on the wire (4 or 8); undefined for the others (varints, strings, bytes). */
export function fixedWidth(scalar: ScalarType): 4 | 8 | undefined {
  switch (scalar) {
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return 8;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return 4;
    default:
      return undefined;
  }
}

/** Bytes a packed element of a scalar type takes: 4 or 8 for the fixed ones, 0 for a varint; undefined for strings and bytes. */
function packedWidth(scalar: ScalarType): 0 | 4 | 8 | undefined {
  if (scalar === ScalarType.STRING || scalar === ScalarType.BYTES) return undefined;
  return fixedWidth(scalar) ?? 0;
}

/**
 * A check of a message's binary encoding against the protobuf wire format,
 * before ts-proto decodes it: the generated decoders read a tag as a bare
 * varint and stop, keeping what they have, at a field number 0 or at any
 * end-group tag, so a request of valid fields, a 0 byte and more fields was
 * served with the fields after it dropped, and one ending a nested message
 * early had the rest of that message read as fields of its parent; a packed
 * list whose last element is cut off was read on into the next field. The
 * protobuf encoding refuses all of these, as do Go's and protobuf-es's
 * parsers. A group on a declared field that is not one is refused too (see
 * `notGroups`). Returns why the bytes are malformed, or undefined.
 *
 * One pass over the bytes, reading each tag and length and skipping each
 * value, looking into the fields that hold messages (and packed lists) by the
 * message's descriptor; nothing is allocated for bytes that are well formed.
 */
export function createWireChecks(): (schema: DescMessage) => (bytes: Uint8Array) => string | undefined {
  const shapes = new Map<DescMessage, Shape>();
  const shapeOf = (message: DescMessage): Shape => {
    let shape = shapes.get(message);
    if (shape) return shape;
    shape = new Map();
    // Set before its fields, for a message type that holds itself.
    shapes.set(message, shape);
    const named = new Map<number, string>();
    for (const field of message.fields) {
      const inner = innerOf(field);
      if (inner) shape.set(field.number, inner);
      if (!((field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message")) && field.delimitedEncoding)) named.set(field.number, `${message.typeName}.${field.name}`);
    }
    notGroups.set(shape, named);
    return shape;
  };
  const innerOf = (field: DescField): Inner | undefined => {
    switch (field.fieldKind) {
      case "message":
        return { kind: "message", shape: shapeOf(field.message) };
      case "list": {
        if (field.listKind === "message") return counted({ kind: "message", shape: shapeOf(field.message) }, field);
        const width = field.listKind === "enum" ? 0 : packedWidth(field.scalar);
        return width === undefined ? undefined : { kind: "packed", width };
      }
      case "map": {
        // An entry is a message of its key (1) and its value (2).
        const entry: Shape = field.mapKind === "message" ? new Map([[2, { kind: "message", shape: shapeOf(field.message) }]]) : new Map();
        notGroups.set(entry, new Map([[1, `${field.parent.typeName}.${field.name}'s key`], [2, `${field.parent.typeName}.${field.name}'s value`]]));
        return counted({ kind: "message", shape: entry }, field);
      }
      default:
        return undefined;
    }
  };
  const counted = (inner: Inner & { kind: "message" }, field: DescField): Inner => {
    const max = maxItemsOf(field);
    return max === undefined ? inner : { ...inner, itemCap: itemCap(max) };
  };
  return (schema) => {
    const shape = shapeOf(schema);
    return (bytes) => {
      try {
        scan(bytes, 0, bytes.length, shape, 0, 0);
        return undefined;
      } catch (err) {
        if (err instanceof WireProblem) return err.message;
        throw err;
      }
    };
  };
}

/**
 * Reads the records of one message (or group) in bytes[pos, end) and returns
 * where it ended: `end`, or just after the end-group tag of `group` (a field
 * number; 0 outside a group).
 */
function scan(bytes: Uint8Array, pos: number, end: number, shape: Shape | undefined, group: number, depth: number): number {
  if (depth > maxDepth) throw new WireProblem(`messages and groups are nested more than ${maxDepth} deep`);
  // Items of this message's bounded lists and maps so far, by field number; made at the first one.
  let items: Map<number, number> | undefined;
  while (pos < end) {
    // The tag: a varint of at most 5 bytes that fits in 32 bits.
    let tag = bytes[pos++];
    if (tag & 0x80) {
      tag &= 0x7f;
      for (let shift = 7; ; shift += 7) {
        if (pos >= end) throw new WireProblem("a tag runs past the end of its message");
        const b = bytes[pos++];
        if (shift === 28 && b > 0x0f) throw new WireProblem("a tag's varint does not fit in 32 bits");
        tag |= (b & 0x7f) << shift;
        if ((b & 0x80) === 0) break;
      }
    }
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (field === 0) throw new WireProblem("a tag names field number 0, which no field has");
    switch (wireType) {
      case 0:
        pos = skipVarint(bytes, pos, end);
        break;
      case 1:
        pos += 8;
        if (pos > end) throw new WireProblem(`field ${field}'s 8 bytes run past the end of its message`);
        break;
      case 5:
        pos += 4;
        if (pos > end) throw new WireProblem(`field ${field}'s 4 bytes run past the end of its message`);
        break;
      case 2: {
        let length = bytes[pos];
        if (length < 0x80 && pos < end) pos++;
        else {
          length = readLength(bytes, pos, end);
          pos = skipVarint(bytes, pos, end);
        }
        const stop = pos + length;
        if (stop > end) throw new WireProblem(`field ${field}'s length, ${length} bytes, runs past the end of its message`);
        const inner = shape?.get(field);
        if (inner?.kind === "message" && inner.itemCap !== undefined) {
          const count = ((items ??= new Map()).get(field) ?? 0) + 1;
          if (count > inner.itemCap) throw new WireProblem(`field ${field} holds more than ${inner.itemCap} items, far more than its contract allows, and is not decoded`);
          items.set(field, count);
        }
        if (inner?.kind === "message") scan(bytes, pos, stop, inner.shape, 0, depth + 1);
        else if (inner?.kind === "packed") checkPacked(bytes, pos, stop, inner.width, field);
        pos = stop;
        break;
      }
      case 3: {
        // ts-proto's decoders skip a group on a field that is not one, as if the field were not sent, where
        // protobuf-es reads the group's first bytes as the field's value: a check of the bytes and the handler
        // would see two different requests. A group on a field the message does not declare is skipped by both.
        const named = shape && notGroups.get(shape)?.get(field);
        if (named !== undefined) throw new WireProblem(`field ${field} (${named}) comes as a group (wire type 3), which it is not`);
        // Its contents are looked at as the wire format's alone.
        pos = scan(bytes, pos, end, undefined, field, depth + 1);
        break;
      }
      case 4:
        if (field !== group) throw new WireProblem(group === 0 ? `an end-group tag (field ${field}) ends no group` : `group ${group} is ended by field ${field}'s end-group tag`);
        return pos;
      default:
        throw new WireProblem(`field ${field} has wire type ${wireType}, which is not one`);
    }
  }
  if (group !== 0) throw new WireProblem(`group ${group} has no end-group tag`);
  return pos;
}

/** The position after the varint at `pos`: at most 10 bytes, and no bits beyond the 64th. */
function skipVarint(bytes: Uint8Array, pos: number, end: number): number {
  for (let n = 0; n < 10; n++) {
    if (pos >= end) throw new WireProblem("a varint runs past the end of its message");
    const b = bytes[pos++];
    if ((b & 0x80) === 0) {
      if (n === 9 && b > 1) throw new WireProblem("a varint does not fit in 64 bits");
      return pos;
    }
  }
  throw new WireProblem("a varint is longer than 10 bytes");
}

/** A length prefix: a varint that fits in 32 bits (its bounds are checked by the caller). */
function readLength(bytes: Uint8Array, pos: number, end: number): number {
  let length = 0;
  for (let n = 0; n < 5 && pos < end; n++) {
    const b = bytes[pos++];
    length += (b & 0x7f) * 2 ** (7 * n);
    if ((b & 0x80) === 0) return n === 4 && b > 0x0f ? Number.MAX_SAFE_INTEGER : length;
  }
  // Longer, or cut off: skipVarint says which; a length beyond 32 bits runs past any message here.
  return Number.MAX_SAFE_INTEGER;
}

/** A packed list's bytes hold whole elements only. */
function checkPacked(bytes: Uint8Array, pos: number, stop: number, width: 0 | 4 | 8, field: number): void {
  if (width !== 0) {
    if ((stop - pos) % width !== 0) throw new WireProblem(`packed field ${field}'s ${stop - pos} bytes are not whole ${width}-byte elements`);
    return;
  }
  while (pos < stop) {
    try {
      pos = skipVarint(bytes, pos, stop);
    } catch (err) {
      throw new WireProblem(`packed field ${field}: ${(err as Error).message}`);
    }
  }
}
