/**
 * The validation side of `npm run breaking`: buf compares how a message is
 * encoded, not its protovalidate rules. A rule made tighter breaks the
 * builds still running during a rolling deploy: a server of the new build
 * refuses an older client's request with INVALID_ARGUMENT, a consumer of
 * the new build dead-letters an older producer's event (and one its stream
 * already holds). So every rule on a request or an event, and on the
 * messages they hold, is compared with the rule it replaces; one that may
 * refuse a value the old rule let through is refused here. Answers are not
 * compared: the server checks requests, the consumer checks events, and no
 * client of this project checks an answer.
 */
import { create, createRegistry, getOption, hasOption, isFieldSet, ScalarType, type DescEnum, type DescField, type DescFile, type DescMessage, type DescOneof, type Message } from "@bufbuild/protobuf";
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt";
import { createValidator } from "@bufbuild/protovalidate";
import {
  FieldRulesSchema,
  Ignore,
  field as fieldRulesExt,
  file_buf_validate_validate,
  message as messageRulesExt,
  oneof as oneofRulesExt,
  type FieldRules,
  type MessageRules,
} from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { findMessage, readEventsManifest } from "./sdk-manifest.js";
import { isIgnoredPath, locateField, locateMessage, locateOneof } from "./source-locations.js";

/** What to do instead of a rule made tighter, after each such finding. */
export const tightenAdvice = "Instead: first ship every sender keeping to the new rule (sending nothing it refuses), then tighten it in a commit of its own that lists its file under breaking: ignore.";

/** What to do instead of a field whose rules refuse it unset, where an older sender leaves it unset. */
export const unsetAdvice = "Instead: let it pass unset (optional, or ignore: IGNORE_IF_ZERO_VALUE, and not required) until every sender sets it.";

/** Who checks a message against its rules: the server (a request) or the consumer (an event). */
type Reader = "server" | "consumer";

/**
 * One line per validation rule of `current` that may refuse a request or an
 * event that `previous`'s rules let through: a rule added (on a field both
 * sides have, or on a new field, or one no longer optional, where it
 * refuses the zero value an older sender leaves there), a bound narrowed, an `in` list shrunk or a `not_in`
 * list grown, an enum's value taken out under `defined_only`, `ignore` changed to skip less, and a CEL expression, pattern,
 * const or other value changed, which cannot be proved looser. Loosening
 * passes. A field whose type changed, which buf reports, is left to buf. Lines start `file:line:column:`, as buf's own; one whose file is
 * under one of the `ignored` paths (buf.yaml's `breaking.ignore`, relative
 * to proto/) is left out, as buf leaves it.
 */
export function tighterValidationRules(current: readonly DescFile[], previous: readonly DescFile[], ignored: readonly string[] = []): string[] {
  const pairs = new Map<string, { after: DescMessage; before: DescMessage; readers: Set<Reader> }>();
  const visit = (after: DescMessage, before: DescMessage, reader: Reader): void => {
    const key = `${after.typeName} ${before.typeName}`;
    let pair = pairs.get(key);
    if (pair?.readers.has(reader)) return;
    if (!pair) pairs.set(key, (pair = { after, before, readers: new Set() }));
    pair.readers.add(reader);
    // Only through fields an older sender knows: one it lacks arrives unset, and what its message would hold is never checked.
    for (const field of after.fields) {
      const old = before.fields.find((f) => f.number === field.number);
      if (!old || retyped(old, field)) continue;
      const [now, then] = [messageOf(field), messageOf(old)];
      if (now && then) visit(now, then, reader);
    }
  };
  const servicesBefore = new Map(previous.flatMap((f) => f.services).map((s) => [s.typeName, s]));
  for (const service of current.flatMap((f) => f.services)) {
    for (const method of service.methods) {
      const old = servicesBefore.get(service.typeName)?.methods.find((m) => m.name === method.name);
      if (old) visit(method.input, old.input, "server");
    }
  }
  const eventsBefore = new Set(readEventsManifest(previous).events.map((e) => e.type));
  for (const event of readEventsManifest(current).events) {
    if (eventsBefore.has(event.type)) visit(findMessage(current, event.type), findMessage(previous, event.type), "consumer");
  }

  const found: string[] = [];
  for (const { after, before, readers } of pairs.values()) {
    const harm = [...readers].sort().map((r) => (r === "server" ? "a request an older client sends could be refused with INVALID_ARGUMENT" : "an event an older producer sends, or its stream holds, could be dead-lettered")).join(", and ");
    const report = (at: string, what: string, changes: readonly string[], advice = tightenAdvice): void => {
      if (isIgnoredPath(at.slice(0, at.indexOf(":")), ignored)) return;
      for (const change of changes) found.push(`${at}:${what}: ${change}; ${harm}. ${advice}`);
    };
    report(locateMessage(after), `Message "${after.typeName}"`, tighterMessageRules(messageRules(before), messageRules(after)));
    for (const oneof of after.oneofs) {
      const old = before.oneofs.find((o) => o.name === oneof.name);
      if (oneofRequired(oneof) && !oneofRequired(old)) {
        report(locateOneof(oneof), `Oneof "${oneof.name}" of message "${after.typeName}"`, ["(buf.validate.oneof).required was set"]);
      } else if (oneofRequired(oneof) && old) {
        // An older sender that sets only a member taken out (its number reserved, which buf passes) sends the oneof unset.
        const gone = old.fields.filter((f) => !oneof.fields.some((n) => n.number === f.number));
        if (gone.length > 0) {
          report(locateOneof(oneof), `Oneof "${oneof.name}" of message "${after.typeName}"`, [
            `(buf.validate.oneof).required, and ${gone.map((f) => `${f.name} (${f.number})`).join(", ")} taken out of it, which an older sender may set alone`,
          ]);
        }
      }
    }
    let zeroRefused: Set<number> | undefined;
    for (const field of after.fields) {
      const old = before.fields.find((f) => f.number === field.number);
      const rules = fieldRules(field);
      // buf reports the type change, which its readers cannot decode; its rules, written for another type, say nothing more.
      if (!rules || (old && retyped(old, field))) continue;
      const what = `Field "${field.name}" of message "${after.typeName}"`;
      if (old) report(locateField(field), what, tighterFieldRules(fieldRules(old), rules, "(buf.validate.field)", { now: field.enum, then: old.enum }));
      // A field that had presence (optional, or in a oneof) and has none now is checked when unset, as its zero value.
      const lostPresence = old && (old.fieldKind === "scalar" || old.fieldKind === "enum") && old.presence !== IMPLICIT && field.presence === IMPLICIT;
      if (old && !lostPresence) continue;
      zeroRefused ??= fieldsRefusingZero(after);
      if (!zeroRefused.has(field.number)) continue;
      report(locateField(field), what, [
        old
          ? "no longer optional (nor in a oneof), so its rules check it when unset, and refuse the zero value (\"\", 0) it has then, which an older sender that leaves it unset sends"
          : "a new field whose rules refuse its zero value (unset, \"\", 0), which is what an older sender leaves in it",
      ], unsetAdvice);
    }
  }
  return found;
}

/** The fields of `message` whose rules refuse it when the field is left at its zero value, as protovalidate itself says. */
function fieldsRefusingZero(message: DescMessage): Set<number> {
  const result = createValidator().validate(message, create(message));
  if (result.kind === "error") throw result.error;
  const refused = new Set<number>();
  for (const v of result.violations ?? []) {
    const first = v.field[0];
    if (first?.kind === "field") refused.add(first.number);
  }
  return refused;
}

/** The rules a field's, a message's or a oneof's option sets; undefined (or false) when it sets none. */
function fieldRules(field: DescField): FieldRules | undefined {
  return hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
}

function messageRules(message: DescMessage): MessageRules | undefined {
  return hasOption(message, messageRulesExt) ? getOption(message, messageRulesExt) : undefined;
}

function oneofRequired(oneof: DescOneof | undefined): boolean {
  return oneof !== undefined && hasOption(oneof, oneofRulesExt) && getOption(oneof, oneofRulesExt).required;
}

/**
 * Scalar types between which buf's WIRE_JSON rules let a field change, as
 * they read the same numbers on the wire and in JSON; their rules messages
 * (Int32Rules and UInt32Rules...) have the same fields and are compared
 * with each other.
 */
const interchangeable: ReadonlyArray<readonly [ScalarType, ScalarType]> = [
  [ScalarType.INT32, ScalarType.UINT32],
  [ScalarType.INT64, ScalarType.UINT64],
  [ScalarType.FIXED32, ScalarType.SFIXED32],
  [ScalarType.FIXED64, ScalarType.SFIXED64],
];

/** A scalar type's name, the same for two interchangeable ones. */
const scalarKey = (type: ScalarType): string => ScalarType[interchangeable.find((pair) => pair.includes(type))?.[0] ?? type];

/** A FieldRules type case ("uint32", "string", "repeated"...), the same for the rules of two interchangeable scalar types. */
function ruleKey(rules: string): string {
  const scalar = (ScalarType as unknown as Record<string, ScalarType | undefined>)[rules.toUpperCase()];
  return scalar === undefined ? rules : scalarKey(scalar);
}

/** What a field holds: a scalar type, enum or message, alone, as a list's items or as a map's values (and the map's key). */
function valueType(field: DescField): string {
  const element = field.message ? `message ${field.message.typeName}` : field.enum ? `enum ${field.enum.typeName}` : scalarKey(field.scalar!);
  if (field.fieldKind === "list") return `list of ${element}`;
  if (field.fieldKind === "map") return `map of ${scalarKey(field.mapKey)} to ${element}`;
  return element;
}

/** Whether a field changed type in a way buf reports (FIELD_WIRE_JSON_COMPATIBLE_TYPE or _CARDINALITY). */
function retyped(old: DescField, now: DescField): boolean {
  return valueType(old) !== valueType(now);
}

/** The message a field holds (alone, in a list, or as a map's value), if any. */
function messageOf(field: DescField): DescMessage | undefined {
  if (field.fieldKind === "message") return field.message;
  if (field.fieldKind === "list" && field.listKind === "message") return field.message;
  if (field.fieldKind === "map" && field.mapKind === "message") return field.message;
  return undefined;
}

const IMPLICIT = FeatureSet_FieldPresence.IMPLICIT;

/** How much `ignore` skips: a higher rank checks fewer values. */
const ignoreRank: Record<number, number> = { [Ignore.UNSPECIFIED]: 0, [Ignore.IF_ZERO_VALUE]: 1, [Ignore.ALWAYS]: 2 };

/** The enum a field holds (alone, in a list, or as a map's value), in the contract as it is now and as it was. */
interface Enums {
  readonly now: DescEnum | undefined;
  readonly then: DescEnum | undefined;
}

/** What in `after` (a field's rules, or a list's items, or a map's keys or values) may refuse what `before` let through. */
function tighterFieldRules(before: FieldRules | undefined, after: FieldRules, name: string, enums: Enums): string[] {
  if (after.ignore === Ignore.ALWAYS) return [];
  const was = before ?? create(FieldRulesSchema);
  const changes: string[] = [];
  const checks = after.required || after.cel.length > 0 || after.celExpression.length > 0 || after.type.case !== undefined;
  if (checks && ignoreRank[after.ignore]! < ignoreRank[was.ignore]!) {
    changes.push(`${name}.ignore changed from IGNORE_${Ignore[was.ignore]} to IGNORE_${Ignore[after.ignore]}, so its rules check values they skipped`);
    if (was.ignore === Ignore.ALWAYS) return changes;
  }
  if (after.required && !was.required) changes.push(`${name}.required was set`);
  changes.push(...tighterCel(was, after, name), ...tighterExtensions(was, after, name));
  if (after.type.case !== undefined) {
    // A field moved to an interchangeable type (int32 to uint32) has its old rules read as the new type's.
    const sameShape = was.type.case !== undefined && ruleKey(was.type.case) === ruleKey(after.type.case);
    const old = was.type.case === after.type.case ? was.type.value : sameShape ? create(schemaOf(after.type.value), was.type.value as never) : undefined;
    changes.push(...tighterTypedRules(old, after.type.value, `${name}.${after.type.case}`, enums));
  }
  return changes;
}

/** The message-level rules: CEL expressions and oneof rules. */
function tighterMessageRules(before: MessageRules | undefined, after: MessageRules | undefined): string[] {
  if (!after) return [];
  const name = "(buf.validate.message)";
  const changes = [...tighterCel(before, after, name), ...tighterExtensions(before, after, name)];
  for (const rule of after.oneof) {
    // At most one of a set holds for any subset; "exactly one" holds only for the same set.
    const implied = before?.oneof.some((o) => rule.fields.every((f) => o.fields.includes(f)) && (!rule.required || (o.required && o.fields.length === rule.fields.length)));
    if (!implied) changes.push(`${name}.oneof {fields: [${rule.fields.join(", ")}]${rule.required ? ", required: true" : ""}} was added or made stricter`);
  }
  return changes;
}

/** CEL expressions of `after` that `before` does not have: a changed expression cannot be proved looser. */
function tighterCel(before: FieldRules | MessageRules | undefined, after: FieldRules | MessageRules, name: string): string[] {
  const had = new Set([...(before?.cel.map((r) => r.expression) ?? []), ...(before?.celExpression ?? [])]);
  return [
    ...after.cel.filter((r) => !had.has(r.expression)).map((r) => `${name}.cel "${r.id}" was added or its expression changed (${JSON.stringify(r.expression)}), which cannot be proved looser`),
    ...after.celExpression.filter((e) => !had.has(e)).map((e) => `${name}.cel_expression ${JSON.stringify(e)} was added or changed, which cannot be proved looser`),
  ];
}

/** Rules this reader does not know (predefined rules are extensions): changed ones cannot be proved looser. */
function tighterExtensions(before: Message | undefined, after: Message, name: string): string[] {
  const unknown = after.$unknown ?? [];
  return unknown.length > 0 && keyOf(unknown) !== keyOf(before?.$unknown ?? []) ? [`${name} has extension (predefined) rules added or changed, which cannot be proved looser`] : [];
}

const minimums = new Set(["min_len", "min_bytes", "min_items", "min_pairs"]);
const maximums = new Set(["max_len", "max_bytes", "max_items", "max_pairs", "within"]);

/**
 * One rules message of a type (StringRules, Int64Rules, RepeatedRules...),
 * field by field, by what each rule means: a minimum may not rise, a
 * maximum may not fall, the bounds of `greater_than` and `less_than` may not
 * narrow, an `in` list may not lose a value nor a `not_in` list gain one, a
 * flag (uuid, defined_only, unique...) may not be set, nor an enum lose a
 * value under defined_only; any other rule (const, len, pattern...) may not
 * be added or changed.
 */
function tighterTypedRules(before: Message | undefined, after: Message, name: string, enums: Enums): string[] {
  const enumType = enums.now;
  const schema = schemaOf(after);
  // An enum's values are written as numbers; its names say more.
  const show = (value: unknown): string =>
    Array.isArray(value) ? `[${value.map(show).join(", ")}]` : enumType && typeof value === "number" && schema.typeName === "buf.validate.EnumRules" ? `${value} (${enumType.value[value]?.name ?? "no value"})` : showValue(value);
  const changes = [...tighterExtensions(before, after, name)];
  const was = (field: DescField): unknown => (before && isFieldSet(before, field) ? valueOf(before, field) : undefined);
  for (const field of schema.fields) {
    if (field.name === "example") continue;
    const rule = `${name}.${field.name}`;
    if (field.oneof?.name === "greater_than" || field.oneof?.name === "less_than") {
      if (field === field.oneof.fields[0] && field.oneof.name === "greater_than") changes.push(...narrowerRange(schema, before, after, name));
      continue;
    }
    if (field.name === "strict") {
      // Unset is true: a well-known regex is strict unless told otherwise.
      if (isFieldSet(after, field) ? valueOf(after, field) === true : was(field) === false) changes.push(`${rule} was set to true or unset (true)`);
      continue;
    }
    if (!isFieldSet(after, field)) continue;
    const now = valueOf(after, field);
    const then = was(field);
    if (field.fieldKind === "message" && field.message.typeName === FieldRulesSchema.typeName) {
      changes.push(...tighterFieldRules(then as FieldRules | undefined, now as FieldRules, rule, enums));
    } else if (field.name === "in") {
      const lost = (then as unknown[] | undefined)?.filter((v) => !(now as unknown[]).some((n) => keyOf(n) === keyOf(v)));
      if (then === undefined || (then as unknown[]).length === 0) changes.push(`${rule} = ${show(now)} was added`);
      else if (lost!.length > 0) changes.push(`${rule} no longer holds ${lost!.map(show).join(", ")}`);
    } else if (field.name === "not_in") {
      const gained = (now as unknown[]).filter((v) => !((then as unknown[] | undefined) ?? []).some((o) => keyOf(o) === keyOf(v)));
      if (gained.length > 0) changes.push(`${rule} now also holds ${gained.map(show).join(", ")}`);
    } else if (minimums.has(field.name) || maximums.has(field.name)) {
      const higher = minimums.has(field.name);
      // No minimum is a minimum of 0: min_len 0 checks nothing.
      if (then === undefined) {
        if (!higher || numeric(now) > 0) changes.push(`${rule} = ${show(now)} was added`);
      } else if (higher ? numeric(now) > numeric(then) : numeric(now) < numeric(then)) changes.push(`${rule} was ${higher ? "raised" : "lowered"} from ${show(then)} to ${show(now)}`);
    } else if (field.fieldKind === "scalar" && typeof now === "boolean") {
      if (now && then !== true) changes.push(`${rule} was set`);
      // A value taken out of the enum (its number reserved, which buf passes) is one defined_only now refuses.
      else if (now && field.name === "defined_only") {
        const gone = enums.then?.values.filter((v) => enumType?.value[v.number] === undefined) ?? [];
        if (gone.length > 0) changes.push(`${rule} now refuses ${gone.map((v) => `${v.number} (${v.name})`).join(", ")}, taken out of enum ${enumType!.typeName}`);
      }
    } else if (then === undefined) {
      changes.push(`${rule} = ${show(now)} was added`);
    } else if (keyOf(now) !== keyOf(then) && !impliedText(field.name, then, now)) {
      changes.push(`${rule} changed from ${show(then)} to ${show(now)}, which cannot be proved looser`);
    }
  }
  return changes;
}

/** Whether a text rule changed to `now` lets through everything `then` did: a shorter prefix or suffix, a shorter `contains`, a longer `not_contains`. */
function impliedText(rule: string, then: unknown, now: unknown): boolean {
  if (typeof then !== "string" || typeof now !== "string") return false;
  if (rule === "prefix") return then.startsWith(now);
  if (rule === "suffix") return then.endsWith(now);
  if (rule === "contains") return then.includes(now);
  if (rule === "not_contains") return now.includes(then);
  return false;
}

/** A bound of a range: its value (whole numbers as bigint) and whether the value itself is out. */
interface Bound {
  readonly rule: string;
  readonly at: number | bigint;
  readonly open: boolean;
  readonly shown: string;
}

/** The `greater_than` and `less_than` bounds of one rules message narrowed from `before` to `after`. */
function narrowerRange(schema: DescMessage, before: Message | undefined, after: Message, name: string): string[] {
  const [low, high] = ["greater_than", "less_than"].map((o) => schema.oneofs.find((x) => x.name === o)!);
  const range = (m: Message | undefined) => (m ? { low: boundOf(m, low!), high: boundOf(m, high!) } : { low: undefined, high: undefined });
  const [then, now] = [range(before), range(after)];
  const named = (b: Bound | undefined) => (b ? `${b.rule} ${b.shown}` : "none");
  const inverted = (r: { low?: Bound | "now"; high?: Bound | "now" }) =>
    typeof r.low === "object" && typeof r.high === "object" && (r.low.at > r.high.at || (r.low.at === r.high.at && (r.low.open || r.high.open)));
  if (inverted(then) || inverted(now)) {
    // gt above lt is the range outside them: compared only as a whole.
    const same = (a: Bound | "now" | undefined, b: Bound | "now" | undefined) => keyOf(a) === keyOf(b);
    if (same(then.low, now.low) && same(then.high, now.high)) return [];
    return [`${name} bounds changed from ${describe(then)} to ${describe(now)}, a range outside its bounds, which cannot be proved looser`];
  }
  const changes: string[] = [];
  for (const [side, higherIsTighter] of [["low", true], ["high", false]] as const) {
    const [a, b] = [then[side], now[side]];
    if (b === undefined) continue;
    if (a === undefined) changes.push(`${name}.${b === "now" ? (side === "low" ? "gt_now" : "lt_now") : `${b.rule} = ${b.shown}`} was added`);
    else if (a === "now" || b === "now") {
      if (a !== b) changes.push(`${name} bound changed from ${a === "now" ? "now" : named(a)} to ${b === "now" ? "now" : named(b)}, which cannot be proved looser`);
    } else {
      const narrower = higherIsTighter ? b.at > a.at : b.at < a.at;
      if (narrower || (b.at === a.at && b.open && !a.open)) changes.push(`${name} bound narrowed from ${named(a)} to ${named(b)}`);
    }
  }
  return changes;

  function describe(r: { low?: Bound | "now"; high?: Bound | "now" }): string {
    return [r.low, r.high].map((b) => (b === "now" ? "now" : named(b))).join(" and ");
  }
}

/** The bound a rules message sets in one of its range oneofs; gt_now and lt_now are "now". Whole numbers are made closed (gt 4 is gte 5). */
function boundOf(message: Message, oneof: DescOneof): Bound | "now" | undefined {
  const field = oneof.fields.find((f) => isFieldSet(message, f));
  if (!field) return undefined;
  const value = valueOf(message, field);
  if (typeof value === "boolean") return "now";
  const at = numeric(value);
  const open = field.name === "gt" || field.name === "lt";
  const shown = showValue(value);
  if (typeof at === "number" && !isWhole(field)) return { rule: field.name, at, open, shown };
  const whole = typeof at === "number" ? BigInt(at) : at;
  return { rule: field.name, at: open ? whole + (oneof.name === "greater_than" ? 1n : -1n) : whole, open: false, shown };
}

/** Whether a scalar rule field holds whole numbers (not float or double). */
function isWhole(field: DescField): boolean {
  return field.fieldKind === "scalar" && field.scalar !== ScalarType.DOUBLE && field.scalar !== ScalarType.FLOAT;
}

/** A number, bigint, or a Duration or Timestamp (in nanoseconds), as a comparable number. */
function numeric(value: unknown): number | bigint {
  if (typeof value === "number" || typeof value === "bigint") return value;
  const { seconds, nanos } = value as { seconds: bigint; nanos: number };
  return seconds * 1_000_000_000n + BigInt(nanos);
}

/** The rules messages of protovalidate, by name. */
const rulesRegistry = createRegistry(file_buf_validate_validate);

function schemaOf(message: Message): DescMessage {
  const schema = rulesRegistry.getMessage(message.$typeName);
  if (!schema) throw new Error(`unknown validation rules message ${message.$typeName}`);
  return schema;
}

/** A field's value, a oneof member's included. */
function valueOf(message: Message, field: DescField): unknown {
  const record = message as unknown as Record<string, unknown>;
  if (!field.oneof) return record[field.localName];
  const oneof = record[field.oneof.localName] as { case?: string; value?: unknown };
  return oneof.case === field.localName ? oneof.value : undefined;
}

/** A key equal for equal values: numbers, bigints, bytes, lists and messages. */
function keyOf(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? Buffer.from(v).toString("hex") : v)) ?? "undefined";
}

/** A rule's value as the contract writes it, near enough: strings quoted, durations and timestamps in seconds. */
function showValue(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(showValue).join(", ")}]`;
  if (typeof value === "string") return JSON.stringify(value);
  if (value instanceof Uint8Array) return `bytes 0x${Buffer.from(value).toString("hex")}`;
  if (typeof value === "object" && value !== null && "seconds" in value) {
    const { seconds, nanos } = value as { seconds: bigint; nanos: number };
    return `${seconds}${nanos ? `.${String(nanos).padStart(9, "0").replace(/0+$/, "")}` : ""}s`;
  }
  if (typeof value === "object" && value !== null && "paths" in value) return `{paths: ${showValue((value as { paths: string[] }).paths)}}`;
  return String(value);
}
