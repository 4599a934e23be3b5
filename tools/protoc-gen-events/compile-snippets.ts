/**
 * Test support: compiles small proto snippets, next to the real
 * concord/v1/options.proto, and runs protoc-gen-events on them in-process.
 * They are compiled the way `npm run gen` compiles proto/ (buildImage, with
 * protoc): buf's compiler drops the comments of file options, which the
 * stream descriptions come from.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { create, fromBinary } from "@bufbuild/protobuf";
import { CodeGeneratorRequestSchema, FileDescriptorSetSchema, type CodeGeneratorRequest } from "@bufbuild/protobuf/wkt";
import { buildImage } from "../contracts/image.js";
import { repoRoot } from "../repo-root.js";
import { protocGenEvents } from "./plugin.js";

/** Proto sources by path, for example `{ "t/v1/a.proto": "syntax = ..." }`. */
export type Snippets = Record<string, string>;

/**
 * Builds a CodeGeneratorRequest for `snippets` (all of them to generate) with
 * the plugin parameter `parameter`. Throws with protoc's message when a snippet
 * does not compile.
 */
export function compileRequest(snippets: Snippets, parameter = "target=ts,import_extension=js"): CodeGeneratorRequest {
  const dir = mkdtempSync(join(tmpdir(), "protoc-gen-events-"));
  try {
    for (const [path, source] of Object.entries(snippets)) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), source);
    }
    mkdirSync(join(dir, "concord/v1"), { recursive: true });
    copyFileSync(join(repoRoot, "proto/concord/v1/options.proto"), join(dir, "concord/v1/options.proto"));
    const image = join(dir, "image.binpb");
    buildImage(dir, image);
    const set = fromBinary(FileDescriptorSetSchema, readFileSync(image));
    return create(CodeGeneratorRequestSchema, { fileToGenerate: Object.keys(snippets), parameter, protoFile: set.file });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs the plugin on `snippets`; returns the generated files' content by name. */
export function generate(snippets: Snippets, parameter?: string): Record<string, string> {
  const response = protocGenEvents.run(compileRequest(snippets, parameter));
  if (response.error) throw new Error(response.error);
  return Object.fromEntries(response.file.map((f) => [f.name, f.content]));
}

/** A proto3 file in package `pkg` importing the Concord options, with `body` after the header. */
export function protoFile(pkg: string, body: string, imports: readonly string[] = []): string {
  return [`syntax = "proto3";`, `package ${pkg};`, `import "concord/v1/options.proto";`, ...imports.map((i) => `import "${i}";`), "", body].join("\n");
}

/** The usual stream option for a test package, e.g. `t.v1` captures `t.v1.>`. */
export function streamOption(name: string, subjects: readonly string[], extra = ""): string {
  return `option (concord.v1.stream) = { name: "${name}" ${subjects.map((s) => `subjects: "${s}"`).join(" ")} ${extra} };`;
}
