import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import type { Rule } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { isFieldMask, quotedList } from "./field-mask.js";

/**
 * The CEL rules the update requests' contracts write, compiled into plain
 * tests on ts-proto's objects, so that such a request is checked without
 * being decoded again for protovalidate and without its CEL interpreter
 * (60 to 160 µs a call on a busy machine, against 1 to 5 compiled; see
 * bench/checker-calls.ts). Only these forms are read, joined by `&&` and
 * `||` (no parentheses but `!(...)`):
 *
 *   size(this.paths) <= 2            a FieldMask's own rule: its count of paths
 *   this.paths.all(p, p in ['a'])    each path one of the names listed
 *   this.paths.unique()              no path twice
 *   'a' in this.paths                a name among the paths
 *   size(this.mask.paths) > 2        the same, in a rule of the message holding the mask
 *   'a' in this.mask.paths
 *   has(this.f)                      a message field set (a list: not empty)
 *   size(this.f) > 0                 a string's length in code points, a list's count
 *   !(...)                           any of them negated
 *
 * with any of <, <=, >, >=, ==, != against a whole number. A rule in any
 * other form has no compiled test, and its message falls back to
 * protovalidate. A failed rule says its message, or, as protovalidate says
 * it when it has none, `"<expression>" returned false`.
 */
export interface CompiledRule {
  readonly id: string;
  readonly description: string;
  /** Whether the rule holds for `value`: a ts-proto message, or a FieldMask's paths for a mask's own rule. */
  readonly holds: (value: unknown) => boolean;
}

type Test = (value: unknown) => boolean;

/** The rules of a FieldMask field (`this` is the mask); undefined when one is in a form not compiled. */
export function compileMaskRules(rules: readonly Rule[]): CompiledRule[] | undefined {
  return compileRules(rules, (name) => (name === "paths" ? { kind: "list", read: (v) => (v ?? []) as unknown[] } : undefined));
}

/** The message-level rules of `message` (`this` is the message); undefined when one is in a form not compiled. */
export function compileMessageRules(message: DescMessage, rules: readonly Rule[], propertyName: (name: string) => string): CompiledRule[] | undefined {
  return compileRules(rules, (name) => {
    const [fieldName, sub, ...rest] = name.split(".");
    const field = message.fields.find((f) => f.name === fieldName);
    if (!field || rest.length > 0) return undefined;
    const prop = propertyName(field.name);
    const own = (v: unknown) => (v as Record<string, unknown>)[prop];
    // ts-proto carries a FieldMask as its list of paths (undefined when unset, which CEL reads as no paths).
    if (sub !== undefined) return isFieldMask(field) && sub === "paths" ? { kind: "list", read: (v) => (own(v) ?? []) as unknown[] } : undefined;
    return operandOf(field, own);
  });
}

/** What a `this.<name>` of an expression reads, and how it is sized and tested for presence. */
type Operand =
  | { readonly kind: "list"; readonly read: (value: unknown) => unknown[] }
  | { readonly kind: "string"; readonly read: (value: unknown) => string }
  | { readonly kind: "message"; readonly read: (value: unknown) => unknown };

function operandOf(field: DescField, own: (v: unknown) => unknown): Operand | undefined {
  if (field.fieldKind === "list") return { kind: "list", read: (v) => (own(v) ?? []) as unknown[] };
  if (field.fieldKind === "message") return { kind: "message", read: own };
  if (field.fieldKind === "scalar" && field.scalar === ScalarType.STRING && !field.oneof && !field.proto.proto3Optional) return { kind: "string", read: (v) => (own(v) ?? "") as string };
  return undefined;
}

function compileRules(rules: readonly Rule[], operand: (name: string) => Operand | undefined): CompiledRule[] | undefined {
  const compiled: CompiledRule[] = [];
  for (const rule of rules) {
    const holds = disjunction(rule.expression, operand);
    if (!holds) return undefined;
    compiled.push({ id: rule.id, description: rule.message !== "" ? rule.message : `"${rule.expression}" returned false`, holds });
  }
  return compiled;
}

/** `a && b || c`, `&&` binding tighter, as in CEL. */
function disjunction(expression: string, operand: (name: string) => Operand | undefined): Test | undefined {
  const anyOf: Test[] = [];
  for (const part of splitTopLevel(expression, "||")) {
    const allOf: Test[] = [];
    for (const atom of splitTopLevel(part, "&&")) {
      const test = atomTest(atom.trim(), operand);
      if (!test) return undefined;
      allOf.push(test);
    }
    anyOf.push(allOf.length === 1 ? allOf[0]! : (v) => allOf.every((t) => t(v)));
  }
  return anyOf.length === 1 ? anyOf[0] : (v) => anyOf.some((t) => t(v));
}

const compare: Record<string, (a: number, b: number) => boolean> = {
  "<": (a, b) => a < b,
  "<=": (a, b) => a <= b,
  ">": (a, b) => a > b,
  ">=": (a, b) => a >= b,
  "==": (a, b) => a === b,
  "!=": (a, b) => a !== b,
};

const quoted = String.raw`'([^'\\]*)'|"([^"\\]*)"`;

function atomTest(atom: string, operand: (name: string) => Operand | undefined): Test | undefined {
  let m = /^!\s*\((.*)\)$/s.exec(atom);
  if (m && balanced(m[1]!)) {
    const inner = disjunction(m[1]!, operand);
    return inner && ((v) => !inner(v));
  }
  m = /^size\(this\.([\w.]+)\)\s*(<=|>=|==|!=|<|>)\s*(\d+)$/.exec(atom);
  if (m) {
    const of = operand(m[1]!);
    const op = compare[m[2]!]!;
    const n = Number(m[3]);
    if (of?.kind === "list") return (v) => op(of.read(v).length, n);
    if (of?.kind === "string") return (v) => op(codePoints(of.read(v)), n);
    return undefined;
  }
  m = new RegExp(String.raw`^(?:${quoted})\s+in\s+this\.([\w.]+)$`).exec(atom);
  if (m) {
    const of = operand(m[3]!);
    const name = m[1] ?? m[2];
    return of?.kind === "list" ? (v) => of.read(v).includes(name) : undefined;
  }
  m = /^has\(this\.(\w+)\)$/.exec(atom);
  if (m) {
    const of = operand(m[1]!);
    if (of?.kind === "message") return (v) => of.read(v) !== undefined && of.read(v) !== null;
    if (of?.kind === "list") return (v) => of.read(v).length > 0;
    return undefined;
  }
  m = /^this\.([\w.]+)\.all\((\w+),\s*(\w+)\s+in\s+\[([^\]]*)\]\)$/.exec(atom);
  if (m && m[2] === m[3]) {
    const of = operand(m[1]!);
    const names = quotedList(m[4]!);
    return of?.kind === "list" && names ? (v) => of.read(v).every((p) => names.includes(p as string)) : undefined;
  }
  m = /^this\.([\w.]+)\.unique\(\)$/.exec(atom);
  if (m) {
    const of = operand(m[1]!);
    return of?.kind === "list" ? (v) => new Set(of.read(v)).size === of.read(v).length : undefined;
  }
  return undefined;
}

/** The parts of `text` between the `operator`s outside parentheses, brackets and quotes. */
function splitTopLevel(text: string, operator: "||" | "&&"): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quote: string | undefined;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
    } else if (c === "'" || c === '"') quote = c;
    else if (c === "(" || c === "[") depth++;
    else if (c === ")" || c === "]") depth--;
    else if (depth === 0 && text.startsWith(operator, i)) {
      parts.push(text.slice(start, i));
      start = i + operator.length;
      i++;
    }
  }
  parts.push(text.slice(start));
  return parts;
}

/** Whether `text`'s parentheses close in order, outside quotes: `a) || (b` is not one expression. */
function balanced(text: string): boolean {
  let depth = 0;
  let quote: string | undefined;
  for (const c of text) {
    if (quote) {
      if (c === quote) quote = undefined;
    } else if (c === "'" || c === '"') quote = c;
    else if (c === "(") depth++;
    else if (c === ")" && --depth < 0) return false;
  }
  return depth === 0 && quote === undefined;
}

/** A string's length as CEL's size() and protovalidate's len rules count it: in code points. */
export const codePoints = (s: string): number => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};
