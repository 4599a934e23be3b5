import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { repoRoot } from "../repo-root.js";
import { dependencyDescriptorSet } from "./descriptors.js";


/** The buf CLI from the @bufbuild/buf npm package. */
export const bufBin = join(repoRoot, "node_modules", ".bin", "buf");

/** Every .proto file below `protoDir`, as paths relative to it, sorted. */
export function protoFiles(protoDir: string): string[] {
  const found: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith(".proto")) found.push(relative(protoDir, path));
    }
  };
  walk(protoDir);
  return found;
}

/**
 * Compiles the contracts under `protoDir` into a buf image (a
 * FileDescriptorSet with imports and source info) at `outFile`. Third-party
 * imports are resolved from the descriptors shipped in npm packages, so this
 * works with no buf registry. Throws with protoc's own message when a contract
 * does not compile.
 */
export function buildImage(protoDir: string, outFile: string): void {
  const work = mkdtempSync(join(tmpdir(), "concord-image-"));
  try {
    const deps = join(work, "deps.binpb");
    writeFileSync(deps, dependencyDescriptorSet());
    const files = protoFiles(protoDir);
    if (files.length === 0) throw new Error(`no .proto files under ${protoDir}`);
    execFileSync(
      protocBin(),
      [`--descriptor_set_in=${deps}`, `-I${protoDir}`, "--include_imports", "--include_source_info", `-o${outFile}`, ...files],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`compiling the contracts in ${protoDir} failed${stderr ? `:\n${stderr}` : ""}`, { cause: err });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** protoc from PATH (Debian's protobuf-compiler); `npm run gen` installs it when missing. */
export function protocBin(): string {
  try {
    execFileSync("protoc", ["--version"], { stdio: "ignore" });
    return "protoc";
  } catch {
    throw new Error("protoc was not found on PATH; install it with `apt-get install -y protobuf-compiler` (or run `node tools/setup.mjs --for-gen`)");
  }
}
