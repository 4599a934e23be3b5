import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, describe, expect, it } from "vitest";
import { grpcDescriptorSet } from "../../gen/ts/grpc_descriptor_set.js";
import { createTempDir } from "../../test/support/temp-dir.js";
import { repoRoot } from "../repo-root.js";
import { buildGrpcDescriptorSet, googleapisCommonProtos } from "./grpc-descriptors.js";

describe("buildGrpcDescriptorSet", () => {
  const tmp = createTempDir("concord-grpc-descriptors-test-");
  afterAll(() => tmp.remove());

  it("compiles grpc.health.v1 and google.rpc's error details under their canonical names, with imports and comments", () => {
    const out = join(tmp.path, "grpc.binpb");
    buildGrpcDescriptorSet(out);
    const set = fromBinary(FileDescriptorSetSchema, readFileSync(out));
    expect(set.file.map((f) => f.name).sort()).toEqual(["google/protobuf/duration.proto", "google/rpc/error_details.proto", "grpc/health/v1/health.proto"]);
    expect(set.file.every((f) => f.sourceCodeInfo !== undefined)).toBe(true);
    const registry = createFileRegistry(set);
    expect(registry.getService("grpc.health.v1.Health")?.methods.map((m) => m.name)).toEqual(["Check", "Watch", "List"]);
    const statuses = registry.getMessage("grpc.health.v1.HealthListResponse")?.field.statuses;
    expect(statuses?.fieldKind === "map" && statuses.message?.typeName).toBe("grpc.health.v1.HealthCheckResponse");
    expect(registry.getMessage("google.rpc.BadRequest.FieldViolation")?.fields.map((f) => f.name)).toEqual(expect.arrayContaining(["field", "description"]));
    // What gen/ holds is what this builds (gen:check compares every byte of gen/).
    expect(readFileSync(out).equals(Buffer.from(grpcDescriptorSet))).toBe(true);
  });

  it("takes error_details.proto from the googleapis-common-protos that tools/setup.mjs installs", () => {
    const setup = readFileSync(join(repoRoot, "tools/setup.mjs"), "utf8");
    expect(setup).toContain(`"${googleapisCommonProtos.distribution}==${googleapisCommonProtos.version}"`);
  });
});
