/**
 * Prints what the runtime needs to know about a service's methods beyond
 * ts-proto's grpc-js definition: whether a call can be repeated safely.
 */
import { type DescService, ScalarType } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel as Idempotency } from "@bufbuild/protobuf/wkt";
import type { GeneratedFile } from "@bufbuild/protoplugin";
import { tsProtoPropertyName } from "./ts-proto-names.js";

/** The field a caller sets to make a call safe to repeat (AIP-155): a string named request_id. */
const requestIdFieldName = "request_id";

/**
 * Prints `<Service>Methods`, keyed like ts-proto's `<Service>Service`:
 * `idempotent` from the method's `idempotency_level` option
 * (NO_SIDE_EFFECTS or IDEMPOTENT), and `requestIdField`, the property of
 * the request's request_id when it has one. The platform's client repeats
 * a failed call only when it is idempotent or carries a request id.
 */
export function printMethods(f: GeneratedFile, service: DescService): void {
  f.print(f.jsDoc(`What the runtime knows about each method of ${service.typeName}: which calls may be repeated safely.`));
  f.print(f.export("const", `${service.name}Methods`), " = {");
  for (const method of service.methods) {
    const idempotent = method.idempotency === Idempotency.NO_SIDE_EFFECTS || method.idempotency === Idempotency.IDEMPOTENT;
    const requestId = method.input.fields.find((field) => field.name === requestIdFieldName && field.fieldKind === "scalar" && field.scalar === ScalarType.STRING);
    if (requestId) f.print("  ", method.localName, ": { idempotent: ", idempotent, ", requestIdField: ", f.string(tsProtoPropertyName(requestId)), " },");
    else f.print("  ", method.localName, ": { idempotent: ", idempotent, " },");
  }
  f.print("} as const;");
  f.print();
}
