import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { type DescField, type DescMessage, type Registry, ScalarType, createFileRegistry, fromBinary, getOption, hasOption, isFieldSet } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import type { Validator } from "@bufbuild/protovalidate";
import { RepeatedRulesSchema, field as fieldRulesExt } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { type CompiledCheck, createRuleCompiler, propertyName } from "./compiled-rules.js";
import { fieldMaskBound } from "./field-mask.js";
import { encodedSizeBound, sizeLimit } from "./size-bound.js";
import { createNulChecks, type NulCheck } from "./nul-text.js";
import { refuseInvalidUtf8 } from "./strict-utf8.js";
import { createUuidLowerings, type UuidLowering } from "./uuid-case.js";
import { createWireChecks } from "./wire-shape.js";

import type { FieldViolation } from "../errors/index.js";

export type { FieldViolation };

/** Checks messages, given as their binary encoding, against the rules their contracts declare. */
export interface MessageChecker {
  /**
   * Every rule the message of `typeName` encoded in `bytes` breaks; empty
   * when it is valid. A string field holding U+0000 is a violation, in
   * every message (no store takes such text alike). Item counts come first: a list over its max_items, or
   * a FieldMask with more paths than its CEL rule's `size(this.paths) <= N`
   * (see field-mask.ts), is reported alone, without running the contract's
   * other rules, so an oversized list never reaches a costly one (a CEL rule
   * over every item).
   * 64-bit integers beyond what a JavaScript number holds exactly are
   * violations too. Undecodable bytes are one violation on field "".
   * Throws when `typeName` is not in the descriptor set.
   */
  check(typeName: string, bytes: Uint8Array): FieldViolation[];
  /**
   * Only the cheap part of `check`: the lists (and masks) over their limits, without
   * the contract's other rules; empty when every list is within its limit.
   */
  checkItemCounts(typeName: string, bytes: Uint8Array): FieldViolation[];
  /**
   * The same as `check`, on the object ts-proto decoded (or a handler built):
   * the contract's rules compiled into plain checks, with no second decode.
   * Undefined for a type whose rules are not compiled (a oneof rule, or CEL
   * in a form compiled-cel.ts does not read, say) and whose lists and
   * FieldMasks are within their limits: call `check` with its bytes then.
   * One over its limit is reported alone, as `check` reports it, without
   * the second decode.
   */
  checkDecoded(typeName: string, message: unknown): FieldViolation[] | undefined;
  /**
   * Puts in lower case, in place, the strings of a decoded (ts-proto)
   * message of `typeName` that its contract says are UUIDs, nested ones
   * included (see uuid-case.ts); true when it changed one.
   */
  lowerCaseUuids(typeName: string, message: unknown): boolean;
  /**
   * Why the bytes of a message of `typeName` break the protobuf wire format
   * (field number 0, an end-group tag that ends no group, a group on a field
   * that is not one, a length or varint running past its message, a varint
   * over 10 bytes, a packed list with a part of an element), which ts-proto's decoders read past or stop at
   * silently; undefined when they are well formed (see wire-shape.ts).
   */
  wireProblem(typeName: string, bytes: Uint8Array): string | undefined;
  /**
   * The most bytes a message of `typeName` may take before it is refused
   * without being decoded: sizeLimit of the largest valid one its contract
   * allows (encodedSizeBound, worked out once per type), `cap` at most;
   * `cap` (by default none) for a type whose contract leaves its size open
   * or that the descriptor set lacks. A gRPC method's receive limit, and
   * what a consumer decodes of an event.
   */
  sizeLimitOf(typeName: string, cap?: number): number;
  /** The registry built from the descriptor set (services, messages, options). */
  readonly registry: Registry;
}

/** How protovalidate (and the compiled rules) begin the message of a max_items violation. */
const tooManyItems = "must contain no more than";

/** The largest integer a JavaScript number holds exactly; 64-bit fields are carried as numbers. */
const safeLimit = BigInt(Number.MAX_SAFE_INTEGER);

type Check =
  | { readonly kind: "items"; readonly field: DescField; readonly max: number }
  | { readonly kind: "paths"; readonly field: DescField; readonly max: number; readonly description: string }
  | { readonly kind: "wide"; readonly field: DescField }
  | { readonly kind: "nested"; readonly field: DescField; readonly message: DescMessage };

const wideScalars = new Set([ScalarType.INT64, ScalarType.UINT64, ScalarType.SINT64, ScalarType.FIXED64, ScalarType.SFIXED64]);

/**
 * protovalidate and its CEL interpreter: about 3 MB of heap, needed only for
 * the messages whose rules are not compiled (CEL in a form compiled-cel.ts
 * does not read; none of the shop's) and for bytes ts-proto cannot decode. Loaded the
 * first time one comes (a synchronous load of some 80 ms, once), so a
 * service that never meets one never holds it.
 */
let protovalidate: typeof import("@bufbuild/protovalidate") | undefined;

function loadProtovalidate(): typeof import("@bufbuild/protovalidate") {
  if (!protovalidate) {
    const require = createRequire(import.meta.url);
    // Its ES module build, not the CommonJS one `require` resolves to: that one shares @bufbuild/protobuf with the process.
    const esm = join(dirname(require.resolve("@bufbuild/protovalidate")), "..", "esm", "index.js");
    protovalidate = require(esm) as typeof import("@bufbuild/protovalidate");
  }
  return protovalidate;
}

/** One checker per descriptor set: the gRPC server and the event runtime of a process share it. */
const checkers = new WeakMap<Uint8Array, MessageChecker>();

/**
 * A checker from a serialized FileDescriptorSet (the generated
 * `descriptorSet`), the same one for the same bytes. From then on every
 * protobuf decode in the process refuses a string that is not valid UTF-8
 * (refuseInvalidUtf8). protovalidate reads only @bufbuild/protobuf
 * messages, so the bytes are decoded here with the descriptor set's schemas.
 */
export function createMessageChecker(descriptorSet: Uint8Array): MessageChecker {
  let checker = checkers.get(descriptorSet);
  if (!checker) checkers.set(descriptorSet, (checker = buildMessageChecker(descriptorSet)));
  return checker;
}

function buildMessageChecker(descriptorSet: Uint8Array): MessageChecker {
  // What is checked is what was sent: a string that is not UTF-8 is refused, not mended (see strict-utf8.ts).
  refuseInvalidUtf8();
  const set = fromBinary(FileDescriptorSetSchema, descriptorSet);
  // The files' comments and source positions: nothing here reads them, and they are most of the registry's heap.
  for (const file of set.file) file.sourceCodeInfo = undefined;
  const registry = createFileRegistry(set);
  let validator: Validator | undefined;
  const schemas = new Map<string, DescMessage>();
  const plans = new Map<DescMessage, Check[]>();

  const schemaOf = (typeName: string): DescMessage => {
    let schema = schemas.get(typeName);
    if (!schema) {
      schema = registry.getMessage(typeName);
      if (!schema) throw new Error(`message ${typeName} is not in the descriptor set; run \`npm run gen\``);
      schemas.set(typeName, schema);
    }
    return schema;
  };

  /** The cheap checks of one message type: only fields that have a limit, are 64-bit, or hold messages. */
  const planOf = (message: DescMessage): Check[] => {
    let plan = plans.get(message);
    if (plan) return plan;
    plan = [];
    plans.set(message, plan);
    for (const field of message.fields) {
      const rules = hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
      if (field.fieldKind === "list" && rules?.type.case === "repeated" && isFieldSet(rules.type.value, RepeatedRulesSchema.field.maxItems)) {
        plan.push({ kind: "items", field, max: Number(rules.type.value.maxItems) });
      }
      const mask = fieldMaskBound(field);
      if (mask) plan.push({ kind: "paths", field, max: mask.maxPaths, description: mask.description });
      const scalar = field.fieldKind === "scalar" || field.fieldKind === "list" ? field.scalar : undefined;
      if (scalar !== undefined && wideScalars.has(scalar)) plan.push({ kind: "wide", field });
      if (field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message")) {
        plan.push({ kind: "nested", field, message: field.message });
      }
    }
    return plan;
  };

  /**
   * Appends the cheap violations of `message`: lists (and FieldMasks' paths) over their limit to `items`, numbers
   * out of range to `wide`. `read` takes a field's value from a @bufbuild/protobuf message (valueOf) or from
   * ts-proto's (decodedValueOf).
   */
  const walk = (schema: DescMessage, message: Record<string, unknown>, path: string, items: FieldViolation[], wide: FieldViolation[], read = valueOf): void => {
    for (const check of planOf(schema)) {
      const { field } = check;
      const value = read(message, field);
      if (value === undefined) continue;
      const name = path + field.name;
      const values: unknown[] = Array.isArray(value) ? value : [value];
      const at = (i: number) => (Array.isArray(value) ? `${name}[${i}]` : name);
      switch (check.kind) {
        case "items":
          if (values.length > check.max) items.push({ field: name, description: `${tooManyItems} ${check.max} item(s)` });
          break;
        case "paths": {
          // ts-proto gives a FieldMask as its list of paths.
          const paths = Array.isArray(value) ? value : (value as { paths?: unknown[] }).paths;
          if (paths && paths.length > check.max) items.push({ field: name, description: check.description });
          break;
        }
        case "wide":
          values.forEach((v, i) => {
            if (typeof v === "bigint" && (v > safeLimit || v < -safeLimit)) {
              wide.push({ field: at(i), description: `must be between -${safeLimit} and ${safeLimit}` });
            }
          });
          break;
        case "nested":
          // An item count already over its limit is not looked into: that is the costly case.
          if (Array.isArray(value) && items.some((v) => v.field === name)) break;
          values.forEach((v, i) => {
            if (v && typeof v === "object") walk(check.message, v as Record<string, unknown>, `${at(i)}.`, items, wide, read);
          });
          break;
      }
    }
  };

  // Text no store can hold, on ts-proto's objects (checkDecoded) and on @bufbuild/protobuf's (check).
  const nulInDecoded = createNulChecks((field) => {
    const prop = propertyName(field.name);
    return (message) => message[prop];
  });
  const nulInMessage = createNulChecks((field) => (message) => valueOf(message, field));

  /** Whether a message of `schema` may hold a FieldMask whose paths its contract bounds, at any depth. */
  const holdsBoundedMask = (schema: DescMessage, seen = new Set<DescMessage>()): boolean => {
    if (seen.has(schema)) return false;
    seen.add(schema);
    return planOf(schema).some((c) => c.kind === "paths" || (c.kind === "nested" && holdsBoundedMask(c.message, seen)));
  };

  const compile = createRuleCompiler();
  const compiledChecks = new Map<string, { readonly rules: CompiledCheck; readonly text: NulCheck; readonly masks: boolean } | null>();

  const decode = (typeName: string, bytes: Uint8Array, readUnknownFields = true) => {
    const schema = schemaOf(typeName);
    try {
      return { schema, message: fromBinary(schema, bytes, { readUnknownFields }) };
    } catch (err) {
      return { schema, error: [{ field: "", description: `not a valid ${typeName}: ${(err as Error).message}` }] };
    }
  };

  const uuidLowering = createUuidLowerings();
  const lowerings = new Map<string, UuidLowering>();
  const wireCheck = createWireChecks();
  const wireChecks = new Map<string, (bytes: Uint8Array) => string | undefined>();
  const sizeBounds = new Map<string, number>();

  return {
    registry,
    sizeLimitOf(typeName, cap = Number.POSITIVE_INFINITY) {
      let bound = sizeBounds.get(typeName);
      if (bound === undefined) {
        const message = registry.getMessage(typeName);
        sizeBounds.set(typeName, (bound = message ? encodedSizeBound(message) : Number.POSITIVE_INFINITY));
      }
      return sizeLimit(bound, cap);
    },
    lowerCaseUuids(typeName, message) {
      let lowering = lowerings.get(typeName);
      if (!lowering) lowerings.set(typeName, (lowering = uuidLowering(schemaOf(typeName))));
      return lowering(message);
    },
    wireProblem(typeName, bytes) {
      let check = wireChecks.get(typeName);
      if (!check) wireChecks.set(typeName, (check = wireCheck(schemaOf(typeName))));
      return check(bytes);
    },
    checkDecoded(typeName, message) {
      let check = compiledChecks.get(typeName);
      if (check === undefined) {
        const schema = schemaOf(typeName);
        const rules = compile(schema);
        compiledChecks.set(typeName, (check = rules ? { rules, text: nulInDecoded(schema), masks: holdsBoundedMask(schema) } : null));
      }
      if (check === null) {
        // The counts, on the object at hand, before the bytes are decoded again for protovalidate: an oversized list or
        // mask is refused on one decode, and its CEL rules never look through it.
        const items: FieldViolation[] = [];
        walk(schemaOf(typeName), message as Record<string, unknown>, "", items, [], decodedValueOf);
        return items.length > 0 ? items : undefined;
      }
      const out: FieldViolation[] = [];
      check.rules(message, "", out);
      check.text(message, out);
      if (out.length === 0) return out;
      if (check.masks) {
        // A mask over its count of paths is reported alone, as `check` reports it. Its own rule (size(this.paths) <= N) has
        // failed then, so a message that passes is not walked.
        const items: FieldViolation[] = [];
        walk(schemaOf(typeName), message as Record<string, unknown>, "", items, [], decodedValueOf);
        if (items.length > 0) return items;
      }
      // As `check` does: a list over its max_items is reported alone, without what is inside it.
      const overfull = out.filter((v) => v.description.startsWith(tooManyItems));
      if (overfull.length === 0) return out;
      return overfull.filter((v) => !overfull.some((o) => o !== v && v.field.startsWith(`${o.field}[`)));
    },
    checkItemCounts(typeName, bytes) {
      // Unknown fields are skipped, not kept: only the lists' lengths are looked at.
      const { schema, message, error } = decode(typeName, bytes, false);
      if (error) return error;
      const items: FieldViolation[] = [];
      walk(schema, message as unknown as Record<string, unknown>, "", items, []);
      return items;
    },
    check(typeName, bytes) {
      const { schema, message, error } = decode(typeName, bytes);
      if (error) return error;
      const items: FieldViolation[] = [];
      const wide: FieldViolation[] = [];
      walk(schema, message as unknown as Record<string, unknown>, "", items, wide);
      if (items.length > 0) return [...items, ...wide];
      const text: FieldViolation[] = [];
      nulInMessage(schema)(message, text);
      validator ??= loadProtovalidate().createValidator({ registry });
      const result = validator.validate(schema, message);
      if (result.kind === "error") throw result.error;
      if (result.kind === "valid") return [...wide, ...text];
      // A message-level rule has no field path; by convention its id names the field.
      const found = result.violations.map((v) => ({ field: v.field.length > 0 ? pathToString(v.field) : v.ruleId, description: v.message }));
      // A bound in the contract may already say what the number check says.
      return [...found, ...wide.filter((c) => !found.some((f) => f.field === c.field)), ...text];
    },
  };
}

/** ts-proto's property names of the fields decodedValueOf has read: worked out once each, not on every call. */
const propertyNames = new WeakMap<DescField, string>();

/** A field's value in a ts-proto message (its property, camel-cased); undefined when unset. */
function decodedValueOf(message: Record<string, unknown>, field: DescField): unknown {
  let prop = propertyNames.get(field);
  if (prop === undefined) propertyNames.set(field, (prop = propertyName(field.name)));
  return message[prop] ?? undefined;
}

/** A field's value in a @bufbuild/protobuf message, oneof members included; undefined when unset. */
function valueOf(message: Record<string, unknown>, field: DescField): unknown {
  if (field.oneof) {
    const oneof = message[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
    return oneof?.case === field.localName ? oneof.value : undefined;
  }
  return message[field.localName];
}
