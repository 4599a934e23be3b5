import { type DescMessage, type Registry, createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createValidator } from "@bufbuild/protovalidate";
import type { FieldViolation } from "./status-error.js";

/** Checks request bytes against the protovalidate rules declared in the contracts. */
export interface RequestValidator {
  /**
   * Every rule the message of `typeName` encoded in `bytes` breaks; empty
   * when it is valid. Undecodable bytes are one violation on field "".
   */
  validate(typeName: string, bytes: Uint8Array): FieldViolation[];
  /** The registry built from the descriptor set (services, messages). */
  readonly registry: Registry;
}

/**
 * Builds a validator from the generated descriptor set. Requests are decoded
 * a second time with @bufbuild/protobuf because protovalidate reads only its
 * messages, not ts-proto's plain objects.
 */
export function createRequestValidator(descriptorSet: Uint8Array): RequestValidator {
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, descriptorSet));
  const validator = createValidator({ registry });
  const schemas = new Map<string, DescMessage>();
  const schemaOf = (typeName: string): DescMessage => {
    let schema = schemas.get(typeName);
    if (!schema) {
      schema = registry.getMessage(typeName);
      if (!schema) throw new Error(`message ${typeName} is not in the descriptor set; run \`npm run gen\``);
      schemas.set(typeName, schema);
    }
    return schema;
  };
  return {
    registry,
    validate(typeName, bytes) {
      const schema = schemaOf(typeName);
      let message;
      try {
        message = fromBinary(schema, bytes);
      } catch (err) {
        return [{ field: "", description: `request is not a valid ${typeName}: ${(err as Error).message}` }];
      }
      const result = validator.validate(schema, message);
      if (result.kind === "valid") return [];
      if (result.kind === "error") throw result.error;
      // A message-level rule has no field path; by convention its id names the field.
      return result.violations.map((v) => ({ field: v.field.length > 0 ? pathToString(v.field) : v.ruleId, description: v.message }));
    },
  };
}
