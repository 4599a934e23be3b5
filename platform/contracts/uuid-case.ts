import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { getOption, hasOption } from "@bufbuild/protobuf";
import { field as fieldRulesExt, type FieldRules } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { propertyName } from "./compiled-rules.js";

/**
 * Puts in lower case, in place, every string of a decoded (ts-proto) message
 * whose contract rule says it is a UUID (`string.uuid`, on a field or on a
 * list's items), in nested messages too; true when it changed one. UUIDs
 * compare case-insensitively (RFC 9562) and the rule takes both cases, but
 * stores and subjects compare text: a product asked for by its id in upper
 * case was NOT_FOUND, and one product named in both cases passed a list's
 * unique rule. Run on a request before its rules are checked, it makes
 * every such id the one the services issue and store.
 */
export type UuidLowering = (message: unknown) => boolean;

/** What one message type holds that may need lowering: UUID strings and messages to look into. */
type Slot = { readonly kind: "uuid"; readonly prop: string } | { readonly kind: "nested"; readonly prop: string; readonly message: DescMessage };

/** The lowering of each message type it is asked for, worked out once per type; a type with no UUID anywhere below it costs nothing. */
export function createUuidLowerings(): (schema: DescMessage) => UuidLowering {
  const plans = new Map<DescMessage, Slot[]>();
  const holds = new Map<DescMessage, boolean>();

  /** Whether a message of this type, or one nested in it, has a UUID field; false while it is being looked at (a recursive type). */
  const holdsUuids = (message: DescMessage): boolean => {
    const known = holds.get(message);
    if (known !== undefined) return known;
    holds.set(message, false);
    const found = message.fields.some((f) => isUuid(f) || (nestedOf(f) !== undefined && holdsUuids(nestedOf(f)!)));
    holds.set(message, found);
    return found;
  };

  const planOf = (message: DescMessage): Slot[] => {
    let plan = plans.get(message);
    if (plan) return plan;
    plan = [];
    plans.set(message, plan);
    for (const field of message.fields) {
      const prop = propertyName(field.name);
      if (isUuid(field)) plan.push({ kind: "uuid", prop });
      const nested = nestedOf(field);
      if (nested && holdsUuids(nested)) plan.push({ kind: "nested", prop, message: nested });
    }
    return plan;
  };

  const lower = (schema: DescMessage, message: Record<string, unknown>): boolean => {
    let changed = false;
    for (const slot of planOf(schema)) {
      const value = message[slot.prop];
      if (value === undefined || value === null) continue;
      if (slot.kind === "uuid") {
        if (typeof value === "string") {
          if (hasUpperCase(value)) {
            message[slot.prop] = value.toLowerCase();
            changed = true;
          }
        } else if (Array.isArray(value)) {
          value.forEach((v, i) => {
            if (typeof v === "string" && hasUpperCase(v)) {
              value[i] = v.toLowerCase();
              changed = true;
            }
          });
        }
        continue;
      }
      for (const item of Array.isArray(value) ? value : [value]) {
        if (item && typeof item === "object" && lower(slot.message, item as Record<string, unknown>)) changed = true;
      }
    }
    return changed;
  };

  return (schema) => {
    if (!holdsUuids(schema)) return () => false;
    return (message) => (message !== null && typeof message === "object" ? lower(schema, message as Record<string, unknown>) : false);
  };
}

const upperCaseLetter = /[A-Z]/;

/**
 * Whether a UUID field's value needs lowering: an upper-case ASCII letter, the
 * only kind a valid UUID holds. Asked first because toLowerCase makes a new
 * string even for one already in lower case (V8): on a 36-character id the
 * test takes about as long (30 ns) and allocates nothing, and the ids the
 * services issue are all in lower case. Any other character is left to the
 * rule, which refuses it either way.
 */
function hasUpperCase(value: string): boolean {
  return upperCaseLetter.test(value);
}

function rulesOf(field: DescField): FieldRules | undefined {
  return hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
}

/** A string field, or a list of strings, that its contract says holds UUIDs. */
function isUuid(field: DescField): boolean {
  const rules = rulesOf(field);
  if (!rules) return false;
  if (field.fieldKind === "scalar" && rules.type.case === "string") return rules.type.value.wellKnown.case === "uuid" && rules.type.value.wellKnown.value;
  if (field.fieldKind === "list" && field.listKind === "scalar" && rules.type.case === "repeated") {
    const items = rules.type.value.items;
    return items?.type.case === "string" && items.type.value.wellKnown.case === "uuid" && items.type.value.wellKnown.value;
  }
  return false;
}

/** The message type a field holds, alone or in a list; undefined for any other field (maps are not looked into). */
function nestedOf(field: DescField): DescMessage | undefined {
  if (field.fieldKind === "message") return field.message;
  if (field.fieldKind === "list" && field.listKind === "message") return field.message;
  return undefined;
}
