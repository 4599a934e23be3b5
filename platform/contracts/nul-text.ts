import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import type { FieldViolation } from "../errors/index.js";

/** What a string field holding a NUL is told: no store takes it (PostgreSQL's text refuses it, SQLite's keeps it). */
export const nulDescription = "must not contain the NUL character (U+0000)";

/** How a message object gives a field's value: ts-proto's objects and @bufbuild/protobuf's differ. */
export type FieldReader = (field: DescField) => (message: Record<string, unknown>) => unknown;

/** Appends a violation for each string field of one message type, at any depth, that holds U+0000; bytes fields are not text. */
export type NulCheck = (message: unknown, out: FieldViolation[]) => void;

type Slot =
  | { readonly kind: "text"; readonly field: DescField; readonly read: (m: Record<string, unknown>) => unknown }
  | { readonly kind: "map"; readonly field: DescField; readonly read: (m: Record<string, unknown>) => unknown; readonly keys: boolean; readonly values: boolean; readonly message: DescMessage | undefined }
  | { readonly kind: "message"; readonly field: DescField; readonly read: (m: Record<string, unknown>) => unknown; readonly message: DescMessage };

const hasNul = (v: unknown): boolean => typeof v === "string" && v.includes("\u0000");

type Probe = (message: Record<string, unknown>) => boolean;
const noText: Probe = () => false;

/**
 * The NulCheck of each message type, over messages read with `reader`. A
 * first pass, compiled per type into closures, only looks (no path is
 * built, nothing allocated), so a clean message costs one `includes` per
 * string; the pass that names the fields runs only when there is one to
 * name. Well-known types (google.protobuf.*) are not looked into: ts-proto
 * turns some into other shapes (a FieldMask into a list of paths, checked by
 * its method's rules), and none carries free text here.
 */
export function createNulChecks(reader: FieldReader): (schema: DescMessage) => NulCheck {
  const plans = new Map<DescMessage, Slot[]>();
  const probes = new Map<DescMessage, Probe>();

  const planOf = (schema: DescMessage): Slot[] => {
    let plan = plans.get(schema);
    if (plan) return plan;
    plan = [];
    // Set before the fields are read: a recursive type finds its own (growing) plan.
    plans.set(schema, plan);
    if (schema.typeName.startsWith("google.protobuf.")) return plan;
    for (const field of schema.fields) {
      const read = reader(field);
      if (field.fieldKind === "map") {
        const keys = field.mapKey === ScalarType.STRING;
        const values = field.mapKind === "scalar" && field.scalar === ScalarType.STRING;
        const message = field.mapKind === "message" ? field.message : undefined;
        if (keys || values || message) plan.push({ kind: "map", field, read, keys, values, message });
      } else if (field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message")) {
        plan.push({ kind: "message", field, read, message: field.message });
      } else if ((field.fieldKind === "scalar" || (field.fieldKind === "list" && field.listKind === "scalar")) && field.scalar === ScalarType.STRING) {
        plan.push({ kind: "text", field, read });
      }
    }
    return plan;
  };

  /** Whether any string of a `schema` message holds a NUL: one closure per field that can hold text. */
  const probeOf = (schema: DescMessage): Probe => {
    const known = probes.get(schema);
    if (known) return known;
    // A recursive type meets itself while its probe is built: looked up at run time.
    probes.set(schema, (message) => probes.get(schema)!(message));
    const fields: Probe[] = [];
    for (const slot of planOf(schema)) {
      const { read } = slot;
      if (slot.kind === "text") {
        fields.push(slot.field.fieldKind === "list"
          ? (m) => {
              const list = read(m) as unknown[] | undefined;
              if (list) for (let i = 0; i < list.length; i++) if (hasNul(list[i])) return true;
              return false;
            }
          : (m) => hasNul(read(m)));
      } else if (slot.kind === "message") {
        const inner = probeOf(slot.message);
        if (inner === noText) continue;
        fields.push(slot.field.fieldKind === "list"
          ? (m) => {
              const list = read(m) as Record<string, unknown>[] | undefined;
              if (list) for (let i = 0; i < list.length; i++) if (list[i] && inner(list[i])) return true;
              return false;
            }
          : (m) => {
              const v = read(m) as Record<string, unknown> | undefined | null;
              return v !== undefined && v !== null && inner(v);
            });
      } else {
        const inner = slot.message ? probeOf(slot.message) : noText;
        const { keys, values } = slot;
        fields.push((m) => {
          const map = read(m) as Record<string, unknown> | undefined;
          for (const key in map) {
            const item = map[key];
            if ((keys && hasNul(key)) || (values && hasNul(item)) || (item && typeof item === "object" && inner(item as Record<string, unknown>))) return true;
          }
          return false;
        });
      }
    }
    const probe: Probe =
      fields.length === 0 ? noText
      : fields.length === 1 ? fields[0]
      : (m) => {
          for (let i = 0; i < fields.length; i++) if (fields[i](m)) return true;
          return false;
        };
    probes.set(schema, probe);
    return probe;
  };

  const name = (schema: DescMessage, message: unknown, path: string, out: FieldViolation[]): void => {
    if (message === null || typeof message !== "object") return;
    for (const slot of planOf(schema)) {
      const value = slot.read(message as Record<string, unknown>);
      if (value === undefined || value === null) continue;
      const at = path + slot.field.name;
      if (slot.kind === "text") {
        if (Array.isArray(value)) value.forEach((v, i) => hasNul(v) && out.push({ field: `${at}[${i}]`, description: nulDescription }));
        else if (hasNul(value)) out.push({ field: at, description: nulDescription });
      } else if (slot.kind === "message") {
        if (Array.isArray(value)) value.forEach((v, i) => name(slot.message, v, `${at}[${i}].`, out));
        else name(slot.message, value, `${at}.`, out);
      } else {
        for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
          // A key with a NUL is named as it was sent, escaped, since the path is one line of text.
          const entry = `${at}[${JSON.stringify(key)}]`;
          if (slot.keys && hasNul(key)) out.push({ field: entry, description: nulDescription });
          if (slot.values && hasNul(item)) out.push({ field: entry, description: nulDescription });
          if (slot.message) name(slot.message, item, `${entry}.`, out);
        }
      }
    }
  };

  return (schema) => {
    const probe = probeOf(schema);
    return (message, out) => {
      if (message !== null && typeof message === "object" && probe(message as Record<string, unknown>)) name(schema, message, "", out);
    };
  };
}
