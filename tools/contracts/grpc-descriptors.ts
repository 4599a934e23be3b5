/**
 * The descriptors a Concord gRPC server serves through reflection besides
 * the contracts: grpc.health.v1 (the health service every server runs) and
 * google.rpc's error details (the google.rpc.BadRequest an INVALID_ARGUMENT
 * carries, which grpcurl prints only when it can resolve the type). Both are
 * compiled with protoc from the .proto files that pinned packages ship, so no
 * third-party .proto file is kept in the repository.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { protocBin } from "./image.js";
import { venvPython } from "./sdk-tools.js";

/** googleapis-common-protos from PyPI (in .venv, pinned by tools/setup.mjs) ships google/rpc/error_details.proto. */
export const googleapisCommonProtos = { distribution: "googleapis-common-protos", version: "1.76.0" } as const;

/** The files compiled, by their canonical import paths. */
export const grpcProtoFiles = ["grpc/health/v1/health.proto", "google/rpc/error_details.proto"] as const;

/**
 * Writes a FileDescriptorSet (imports and source info included) of
 * grpc.health.v1 and google.rpc's error details to `outFile`. The health
 * service comes from the grpc-health-check npm package (the servers speak it
 * through platform/grpc/health.ts), the error details from
 * googleapis-common-protos in .venv.
 * Throws, saying what to run, when the pinned Python package is missing.
 */
export function buildGrpcDescriptorSet(outFile: string): void {
  const sources = new Map<string, string>([
    ["grpc/health/v1/health.proto", healthProtoPath],
    ["google/rpc/error_details.proto", errorDetailsProtoPath()],
  ]);
  const work = mkdtempSync(join(tmpdir(), "concord-grpc-descriptors-"));
  try {
    // Each file goes under its canonical path, which is the name reflection serves it by.
    for (const [name, source] of sources) {
      mkdirSync(dirname(join(work, name)), { recursive: true });
      copyFileSync(source, join(work, name));
    }
    execFileSync(protocBin(), [`-I${work}`, "--include_imports", "--include_source_info", `-o${outFile}`, ...grpcProtoFiles], { stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw stderr ? new Error(`compiling grpc.health.v1 and google.rpc's error details failed:\n${stderr}`, { cause: err }) : err;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function errorDetailsProtoPath(): string {
  const { distribution, version } = googleapisCommonProtos;
  const script = `import importlib.metadata as m; d = m.distribution(${JSON.stringify(distribution)}); print(d.version); print(d.locate_file("google/rpc/error_details.proto"))`;
  let found: string[] = [];
  try {
    if (existsSync(venvPython)) found = execFileSync(venvPython, ["-c", script], { stdio: ["ignore", "pipe", "ignore"] }).toString().trim().split("\n");
  } catch {
    found = [];
  }
  const [foundVersion, path] = found;
  if (foundVersion !== version || path === undefined || !existsSync(path)) {
    const seen = foundVersion === undefined ? "and it is missing" : foundVersion !== version ? `found ${foundVersion}` : "but it has no google/rpc/error_details.proto";
    throw new Error(`${distribution} ${version} is needed in .venv, ${seen}; run \`node tools/setup.mjs --for-gen\``);
  }
  return path;
}
