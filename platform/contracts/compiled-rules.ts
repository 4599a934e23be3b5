import { type DescField, type DescMessage, isFieldSet, ScalarType, getOption, hasOption } from "@bufbuild/protobuf";
import {
  EnumRulesSchema,
  FieldRulesSchema,
  Ignore,
  RepeatedRulesSchema,
  StringRulesSchema,
  field as fieldRulesExt,
  message as messageRulesExt,
  oneof as oneofRulesExt,
  type FieldRules,
} from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import type { FieldViolation } from "../errors/index.js";
import { codePoints, compileMaskRules, compileMessageRules } from "./compiled-cel.js";
import { isFieldMask } from "./field-mask.js";

/**
 * The contracts' validation rules compiled into plain checks on the objects
 * ts-proto generates (camelCase properties, int64 as numbers, Timestamps as
 * Dates, FieldMasks as string lists), so a message is checked without being
 * decoded a second time. The messages are protovalidate's own, word for
 * word, in its order; contracts.test.ts compares the two on many messages.
 * A message whose rules (or whose nested messages' rules) go beyond what is
 * compiled here (oneof rules, a field CEL other than
 * `this.map(x, x.f).unique()` or a FieldMask's, message-level CEL beyond
 * the forms of compiled-cel.ts) has no compiled check: its checker falls
 * back to protovalidate.
 */
export type CompiledCheck = (message: unknown, path: string, out: FieldViolation[]) => void;

type Value = unknown;

/** ts-proto's property name of a field: snake_case camel-cased (its own rule, word for word). */
export function propertyName(name: string): string {
  if (!name.includes("_")) return name;
  const hasLowerCase = /[a-z]/.test(name);
  return name
    .split("_")
    .map((word, i) => {
      const w = hasLowerCase ? word : word.toLowerCase();
      return i === 0 ? w : w.charAt(0).toUpperCase() + w.slice(1);
    })
    .join("");
}

const uuidPattern = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const list = (vs: readonly unknown[]) => `[${vs.map(String).join(", ")}]`;

/** Compiles the checks of every message type it is asked for; undefined for a type that needs protovalidate. */
export function createRuleCompiler(): (message: DescMessage) => CompiledCheck | undefined {
  const compiled = new Map<DescMessage, CompiledCheck | null>();
  const compiling = new Set<DescMessage>();

  const compileMessage = (message: DescMessage): CompiledCheck | undefined => {
    const known = compiled.get(message);
    if (known !== undefined) return known ?? undefined;
    // A recursive type refers to itself while it is compiled: looked up at run time.
    if (compiling.has(message)) return (value, path, out) => compiled.get(message)?.(value, path, out);
    compiling.add(message);
    try {
      const check = build(message);
      compiled.set(message, check ?? null);
      return check;
    } finally {
      compiling.delete(message);
    }
  };

  const build = (message: DescMessage): CompiledCheck | undefined => {
    if (message.typeName.startsWith("google.protobuf.")) return () => {};
    const messageRules = hasOption(message, messageRulesExt) ? getOption(message, messageRulesExt) : undefined;
    if (messageRules && (messageRules.celExpression.length > 0 || messageRules.oneof.length > 0)) return undefined;
    const celRules = messageRules && messageRules.cel.length > 0 ? compileMessageRules(message, messageRules.cel, propertyName) : [];
    if (celRules === undefined) return undefined;
    for (const oneof of message.oneofs) if (hasOption(oneof, oneofRulesExt)) return undefined;
    const fieldChecks: CompiledCheck[] = [];
    for (const field of message.fields) {
      const check = compileField(field);
      if (check === undefined) return undefined;
      if (check !== null) fieldChecks.push(check);
    }
    if (celRules.length > 0) {
      // After the fields, as protovalidate runs them; a message-level rule has no field, so its id names it at the top (see message-checker.ts).
      fieldChecks.push((value, path, out) => {
        for (const rule of celRules) if (!rule.holds(value)) out.push({ field: path === "" ? rule.id : path.slice(0, -1), description: rule.description });
      });
    }
    return (value, path, out) => {
      if (value === null || typeof value !== "object") return;
      for (const check of fieldChecks) check(value, path, out);
    };
  };

  /** The checks of one field: undefined when not compiled, null when there is nothing to check. */
  const compileField = (field: DescField): CompiledCheck | null | undefined => {
    const rules: FieldRules | undefined = hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
    if (rules?.ignore === Ignore.ALWAYS) return null;
    if (rules && rules.celExpression.length > 0) return undefined;
    const prop = propertyName(field.name);
    const name = field.name;
    const ignoreZero = rules?.ignore === Ignore.IF_ZERO_VALUE;
    const required = rules?.required === true;

    if (field.fieldKind === "map") return rules && hasAnyRule(rules) ? undefined : null;

    if (field.fieldKind === "list") {
      const repeated = rules?.type.case === "repeated" ? rules.type.value : undefined;
      if (rules && rules.type.case !== undefined && rules.type.case !== "repeated") return undefined;
      if (required) return undefined;
      const celChecks: Array<(items: unknown[], path: string, out: FieldViolation[]) => void> = [];
      for (const rule of rules?.cel ?? []) {
        const idiom = /^this\.map\((\w+),\s*\1\.(\w+)\)\.unique\(\)$/.exec(rule.expression.trim());
        if (!idiom || field.listKind !== "message") return undefined;
        const key = propertyName(idiom[2]);
        const text = rule.message || `${rule.id}`;
        celChecks.push((items, path, out) => {
          const seen = new Set<unknown>();
          for (const item of items) {
            const k = (item as Record<string, unknown> | undefined)?.[key];
            if (seen.has(k)) return void out.push({ field: path, description: text });
            seen.add(k);
          }
        });
      }
      const minItems = repeated && isFieldSet(repeated, RepeatedRulesSchema.field.minItems) ? Number(repeated.minItems) : undefined;
      const maxItems = repeated && isFieldSet(repeated, RepeatedRulesSchema.field.maxItems) ? Number(repeated.maxItems) : undefined;
      const unique = repeated?.unique === true;
      if (unique && field.listKind === "message") return undefined;
      const nested = field.listKind === "message";
      const element = nested ? compileMessage(field.message) : scalarCheck(field, repeated?.items, false);
      if (element === undefined) return undefined;
      if (repeated?.items?.required) return undefined;
      return (value, base, out) => {
        const items = ((value as Record<string, Value>)[prop] ?? []) as unknown[];
        const path = base + name;
        if (minItems !== undefined && items.length < minItems) out.push({ field: path, description: `must contain at least ${minItems} item(s)` });
        if (maxItems !== undefined && items.length > maxItems) out.push({ field: path, description: `must contain no more than ${maxItems} item(s)` });
        if (unique && new Set(items).size !== items.length) out.push({ field: path, description: "repeated value must contain unique items" });
        for (const cel of celChecks) cel(items, path, out);
        if (element) for (let i = 0; i < items.length; i++) element(items[i], nested ? `${path}[${i}].` : `${path}[${i}]`, out);
      };
    }

    if (isFieldMask(field)) {
      // ts-proto gives the mask as its list of paths; its own CEL rules test them, after required, as protovalidate runs them.
      if (rules && rules.type.case !== undefined) return undefined;
      const maskRules = compileMaskRules(rules?.cel ?? []);
      if (maskRules === undefined) return undefined;
      if (maskRules.length === 0 && !required) return null;
      return (value, base, out) => {
        const paths = (value as Record<string, Value>)[prop];
        if (paths === undefined || paths === null) {
          if (required) out.push({ field: base + name, description: "value is required" });
          return;
        }
        for (const rule of maskRules) if (!rule.holds(paths)) out.push({ field: base + name, description: rule.description });
      };
    }

    if (rules && rules.cel.length > 0) return undefined;

    if (field.fieldKind === "message") {
      if (rules && rules.type.case !== undefined) return undefined;
      const nested = compileMessage(field.message);
      if (nested === undefined) return undefined;
      return (value, base, out) => {
        const v = (value as Record<string, Value>)[prop];
        if (v === undefined || v === null) {
          if (required) out.push({ field: base + name, description: "value is required" });
          return;
        }
        nested(v, `${base}${name}.`, out);
      };
    }

    // A scalar or an enum.
    const hasPresence = field.proto.proto3Optional || field.oneof !== undefined;
    if (required && !hasPresence) return undefined;
    const check = scalarCheck(field, rules, ignoreZero);
    if (check === undefined) return undefined;
    if (check === null && !required) return null;
    return (value, base, out) => {
      const v = (value as Record<string, Value>)[prop];
      if (v === undefined || v === null) {
        if (required) out.push({ field: base + name, description: "value is required" });
        return;
      }
      check?.(v, base + name, out);
    };
  };

  return (message) => compileMessage(message);
}

type ValueCheck = (value: unknown, path: string, out: FieldViolation[]) => void;

function hasAnyRule(rules: FieldRules): boolean {
  return rules.type.case !== undefined || rules.cel.length > 0 || rules.celExpression.length > 0 || rules.required;
}

const integerScalars = new Set([
  ScalarType.INT32, ScalarType.INT64, ScalarType.UINT32, ScalarType.UINT64, ScalarType.SINT32, ScalarType.SINT64,
  ScalarType.FIXED32, ScalarType.FIXED64, ScalarType.SFIXED32, ScalarType.SFIXED64,
]);
const integerRuleCases = new Set(["int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64"]);

/** The checks of one scalar or enum value: undefined when not compiled, null when there is nothing to check. */
function scalarCheck(field: DescField, rules: FieldRules | undefined, ignoreZero: boolean): ValueCheck | null | undefined {
  if (!rules || rules.type.case === undefined) return null;
  const zero = (v: unknown) => v === "" || v === 0 || v === false;
  const wrap = (check: ValueCheck): ValueCheck => (ignoreZero ? (v, p, o) => (zero(v) ? undefined : check(v, p, o)) : check);
  const kind = field.fieldKind === "list" ? field.listKind : field.fieldKind;
  const scalar = kind === "scalar" ? (field as { scalar: ScalarType }).scalar : undefined;

  if (rules.type.case === "string" && scalar === ScalarType.STRING) {
    const s = rules.type.value;
    const F = StringRulesSchema.field;
    const handled = [F.len, F.minLen, F.maxLen, F.pattern, F.in, F.notIn, F.uuid];
    for (const f of StringRulesSchema.fields) if (isFieldSet(s, f) && !handled.includes(f)) return undefined;
    const len = isFieldSet(s, F.len) ? Number(s.len) : undefined;
    const minLen = isFieldSet(s, F.minLen) ? Number(s.minLen) : undefined;
    const maxLen = isFieldSet(s, F.maxLen) ? Number(s.maxLen) : undefined;
    let pattern: RegExp | undefined;
    if (isFieldSet(s, F.pattern)) {
      try {
        pattern = new RegExp(s.pattern, "u");
      } catch {
        return undefined;
      }
    }
    const source = s.pattern;
    const inList = s.in;
    const notIn = s.notIn;
    const uuid = s.wellKnown.case === "uuid" && s.wellKnown.value;
    return wrap((v, path, out) => {
      const text = v as string;
      if (len !== undefined || minLen !== undefined || maxLen !== undefined) {
        const n = text.length <= (maxLen ?? Infinity) && text.length >= 2 * (minLen ?? 0) && len === undefined ? text.length : codePoints(text);
        if (len !== undefined && n !== len) out.push({ field: path, description: `must be ${len} characters` });
        if (minLen !== undefined && n < minLen) out.push({ field: path, description: `must be at least ${minLen} characters` });
        if (maxLen !== undefined && n > maxLen) out.push({ field: path, description: `must be at most ${maxLen} characters` });
      }
      if (pattern && !pattern.test(text)) out.push({ field: path, description: `does not match regex pattern \`${source}\`` });
      if (inList.length > 0 && !inList.includes(text)) out.push({ field: path, description: `must be in list ${list(inList)}` });
      if (notIn.includes(text)) out.push({ field: path, description: `must not be in list ${list(notIn)}` });
      if (uuid) {
        if (text === "") out.push({ field: path, description: "value is empty, which is not a valid UUID" });
        else if (!uuidPattern.test(text)) out.push({ field: path, description: "must be a valid UUID" });
      }
    });
  }

  if (integerRuleCases.has(rules.type.case) && scalar !== undefined && integerScalars.has(scalar)) {
    const r = rules.type.value as { gt?: bigint | number; gte?: bigint | number; lt?: bigint | number; lte?: bigint | number; in: (bigint | number)[]; notIn: (bigint | number)[]; const?: bigint | number; greaterThan: { case?: string; value?: bigint | number }; lessThan: { case?: string; value?: bigint | number } };
    const schema = (FieldRulesSchema.fields.find((f) => f.name === rules.type.case)!.message!);
    for (const f of schema.fields) if (isFieldSet(rules.type.value as never, f) && !["gt", "gte", "lt", "lte", "in", "not_in"].includes(f.name)) return undefined;
    const lo = r.greaterThan.case ? { kind: r.greaterThan.case as "gt" | "gte", val: Number(r.greaterThan.value) } : undefined;
    const hi = r.lessThan.case ? { kind: r.lessThan.case as "lt" | "lte", val: Number(r.lessThan.value) } : undefined;
    const inList = r.in.map(Number);
    const notIn = r.notIn.map(Number);
    const loText = lo && (lo.kind === "gt" ? `greater than ${lo.val}` : `greater than or equal to ${lo.val}`);
    const hiText = hi && (hi.kind === "lt" ? `less than ${hi.val}` : `less than or equal to ${hi.val}`);
    const below = (v: number) => lo !== undefined && (lo.kind === "gt" ? v <= lo.val : v < lo.val);
    const above = (v: number) => hi !== undefined && (hi.kind === "lt" ? v >= hi.val : v > hi.val);
    const normal = lo === undefined || hi === undefined || hi.val >= lo.val;
    return wrap((v, path, out) => {
      const n = Number(v);
      if (inList.length > 0 && !inList.includes(n)) out.push({ field: path, description: `must be in list ${list(inList)}` });
      if (notIn.includes(n)) out.push({ field: path, description: `must not be in list ${list(notIn)}` });
      if (lo && hi) {
        if (normal ? below(n) || above(n) : below(n) && above(n)) out.push({ field: path, description: `must be ${loText} ${normal ? "and" : "or"} ${hiText}` });
      } else if (lo) {
        if (below(n)) out.push({ field: path, description: `must be ${loText}` });
      } else if (hi && above(n)) out.push({ field: path, description: `must be ${hiText}` });
    });
  }

  if (rules.type.case === "enum" && kind === "enum") {
    const e = rules.type.value;
    if (isFieldSet(e, EnumRulesSchema.field.const)) return undefined;
    const enumDesc = (field as { enum: { values: { number: number }[] } }).enum;
    const defined = new Set(enumDesc.values.map((v) => v.number));
    const inList = e.in;
    const notIn = e.notIn;
    return wrap((v, path, out) => {
      const n = v as number;
      if (inList.length > 0 && !inList.includes(n)) out.push({ field: path, description: `must be in list ${list(inList)}` });
      if (notIn.includes(n)) out.push({ field: path, description: `must not be in list ${list(notIn)}` });
      if (e.definedOnly && !defined.has(n)) out.push({ field: path, description: "value must be one of the defined enum values" });
    });
  }
  return undefined;
}
