/**
 * Prints the runtime's StreamSpec and ConsumerSpec as the lines of an object
 * literal. Each printer table is keyed by every field of its spec, so a field
 * added to the runtime's spec does not compile until the plugin prints it.
 */
import type { GeneratedFile, Printable } from "@bufbuild/protoplugin";
import type { ConsumerSpec, StreamSpec } from "../../platform/events/index.js";

/** One printer per field of T, optional fields included; the table's order is the printed order. */
type FieldPrinters<T> = { readonly [K in keyof T]-?: (value: Exclude<T[K], undefined>, f: GeneratedFile) => Printable };

const streamFields: FieldPrinters<StreamSpec> = {
  name: (v, f) => f.string(v),
  subjects: (v, f) => f.array(v.map((s) => f.string(s))),
  storage: (v, f) => f.string(v),
  replicas: (v) => v,
  maxAgeMs: (v) => v,
  duplicateWindowMs: (v) => v,
  maxMessageBytes: (v) => v,
  description: (v, f) => f.string(v),
};

const consumerFields: FieldPrinters<ConsumerSpec> = {
  durable: (v, f) => f.string(v),
  stream: (v, f) => f.string(v),
  filterSubject: (v, f) => f.string(v),
  eventType: (v, f) => f.string(v),
  maxDeliver: (v) => v,
  backoffMs: (v, f) => f.array([...v]),
  ackWaitMs: (v) => v,
};

/** Prints `name: value,` for each field of `spec` that is set, `indent` before each. */
function printFields<T extends object>(f: GeneratedFile, spec: T, fields: FieldPrinters<T>, indent: string): void {
  for (const key of Object.keys(fields) as (keyof T & string)[]) {
    const value = spec[key];
    if (value !== undefined) f.print(indent, key, ": ", fields[key](value as Exclude<T[typeof key], undefined>, f), ",");
  }
}

/** The properties of a StreamSpec literal; `description` only when the contract has one. */
export function printStreamSpecFields(f: GeneratedFile, spec: StreamSpec, indent: string): void {
  printFields(f, spec, streamFields, indent);
}

/** The properties of a ConsumerSpec literal. */
export function printConsumerSpecFields(f: GeneratedFile, spec: ConsumerSpec, indent: string): void {
  printFields(f, spec, consumerFields, indent);
}
