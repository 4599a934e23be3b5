/**
 * Go and Python SDKs from the contracts, next to gen/ts: `buf generate` with
 * buf.gen.sdk.yaml (protoc-gen-go, protoc-gen-go-grpc and grpcio-tools, all
 * pinned, see sdk-tools.ts, and whatever other plugin it lists), then what
 * the plugins do not write: the Go module files, the Python package files,
 * gen/events.json and the event constants of both languages, printed from the
 * concord.v1 options.
 */
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { parseDocument } from "yaml";
import { repoRoot } from "../repo-root.js";
import { bufBin } from "./image.js";
import { writeGoModule } from "./sdk-go.js";
import { formatEventsManifest, loadImageFiles, readEventsManifest } from "./sdk-manifest.js";
import { completePythonPackage } from "./sdk-python.js";
import { checkSdkTools, sdkHeader } from "./sdk-tools.js";
import { listFiles } from "./files.js";

/** The buf template of the SDKs, at the repository root. */
export const sdkTemplate = join(repoRoot, "buf.gen.sdk.yaml");

/** Proto roots of our own; the image's other files (validate.proto, google/protobuf) are imports. */
const ownRoots = ["concord", "shop"];

/** What gen/ holds besides the plugins' output of the SDK template; no SDK plugin may write there. */
const reservedParts = ["ts", "events.json"];

/** One plugin of an SDK template. */
export interface SdkPlugin {
  /** How messages name it, e.g. "protoc_builtin java" or "local .tools/bin/protoc-gen-go". */
  readonly name: string;
  /** Its out directory, normalized, below gen/. */
  readonly out: string;
  /** The template with this plugin alone, as JSON (which buf reads as YAML). */
  readonly template: string;
}

/**
 * The plugins of a buf.gen v2 template, each with a template of its own
 * (the managed mode and other settings kept). Throws, naming the plugin,
 * when its out is not a directory below gen/ or lies where `npm run gen`
 * writes something else (gen/ts, gen/events.json).
 */
export function readSdkTemplate(templatePath: string): SdkPlugin[] {
  const document = parseDocument(readFileSync(templatePath, "utf8"));
  if (document.errors.length > 0) throw new Error(`${templatePath} is not valid YAML: ${document.errors[0].message}`);
  const config = document.toJS() as { plugins?: Record<string, unknown>[] } | null;
  if (!config || !Array.isArray(config.plugins) || config.plugins.length === 0) throw new Error(`${templatePath} lists no plugins`);
  return config.plugins.map((plugin, index) => {
    const kind = ["local", "protoc_builtin", "remote"].find((k) => plugin[k] !== undefined);
    const name = kind ? `${kind} ${[plugin[kind]].flat().join(" ")}` : `plugin ${index + 1}`;
    const where = `${templatePath}: ${name}`;
    if (typeof plugin.out !== "string" || plugin.out === "") throw new Error(`${where} has no out directory`);
    const out = posix.normalize(plugin.out).replace(/\/$/, "");
    if (!out.startsWith("gen/") || out.split("/").includes("..")) throw new Error(`${where} writes to ${plugin.out}, outside gen/; give it an out directory below gen/, such as gen/<language>`);
    const part = out.split("/")[1];
    if (reservedParts.includes(part)) throw new Error(`${where} writes to ${plugin.out}, where \`npm run gen\` writes ${part === "ts" ? "the TypeScript code (buf.gen.yaml)" : "the event manifest"}; give it an out directory of its own below gen/`);
    return { name, out, template: JSON.stringify({ ...config, plugins: [plugin] }) };
  });
}

/**
 * Writes the SDKs from the image at `imagePath` (a FileDescriptorSet with
 * imports and source info, as buildImage writes it) into `outDir`: every
 * plugin's output of `template` (buf.gen.sdk.yaml: `<outDir>/go`, a Go
 * module, and `<outDir>/python`, a package tree for PYTHONPATH, and any
 * directory another plugin writes) and `<outDir>/events.json`. Replaces those
 * and leaves the rest of `outDir` alone; returns the top-level names it wrote.
 * The output is the same bytes for the same contracts and tools. Throws,
 * writing nothing, when a pinned generator is missing (saying what to run),
 * when a plugin fails (with its message), and, naming the plugin, when a
 * plugin's out is not below gen/ or it writes no file.
 */
export function generateSdks(imagePath: string, outDir: string, template = sdkTemplate): string[] {
  const plugins = readSdkTemplate(template);
  checkSdkTools();
  const image = readFileSync(imagePath);
  const files = loadImageFiles(image);
  const manifest = readEventsManifest(files);
  const work = mkdtempSync(join(tmpdir(), "concord-sdk-"));
  try {
    const gen = join(work, "gen");
    runPlugins(plugins, imagePath, work);
    stampHeaders(join(gen, "go"), ".go", "//");
    stampHeaders(join(gen, "python"), ".py", "#");
    stampHeaders(join(gen, "python"), ".pyi", "#");
    // Checksums already known (outDir's, or the committed ones when outDir is a fresh stand-in for gen/) spare tidy the checksum database.
    const knownSums = [join(outDir, "go", "go.sum"), join(repoRoot, "gen", "go", "go.sum")].find((f) => existsSync(f));
    writeGoModule(join(gen, "go"), goModulePath(template), manifest, files, knownSums && readFileSync(knownSums, "utf8"));
    completePythonPackage(join(gen, "python"), manifest, files);
    writeFileSync(join(gen, "events.json"), formatEventsManifest(manifest));

    const parts = [...new Set(listFiles(gen).map((f) => f.split("/")[0]))].sort();
    mkdirSync(outDir, { recursive: true });
    for (const part of parts) {
      rmSync(join(outDir, part), { recursive: true, force: true });
      cpSync(join(gen, part), join(outDir, part), { recursive: true });
    }
    return parts;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Runs each plugin on its own (buf generate with a one-plugin template) and
 * gathers the output under `<work>/gen`, so that a plugin that writes nothing
 * is seen, and named, rather than lost among the others' files.
 */
function runPlugins(plugins: SdkPlugin[], imagePath: string, work: string): void {
  const writtenBy = new Map<string, string>();
  plugins.forEach((plugin, index) => {
    const out = join(work, `plugin-${index}`);
    const templateFile = join(work, `plugin-${index}.json`);
    writeFileSync(templateFile, plugin.template);
    try {
      execFileSync(bufBin, ["generate", imagePath, "--template", templateFile, ...ownRoots.flatMap((r) => ["--path", r]), "-o", out], {
        cwd: repoRoot,
        stdio: ["ignore", "pipe", "pipe"],
      });
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
      throw new Error(`generating the SDKs failed in ${plugin.name}${stderr ? `:\n${stderr}` : ""}`, { cause: err });
    }
    const written = listFiles(join(out, plugin.out));
    if (written.length === 0) throw new Error(`${plugin.name} (out ${plugin.out}) wrote no file; check its options in the SDK template, or remove it`);
    for (const file of written) {
      const path = posix.join(plugin.out, file);
      const earlier = writtenBy.get(path);
      if (earlier) throw new Error(`${path} is written by both ${earlier} and ${plugin.name}; give one of them another out directory`);
      writtenBy.set(path, plugin.name);
    }
    cpSync(join(out, "gen"), join(work, "gen"), { recursive: true });
  });
}

/**
 * The Go module path: the `go_package_prefix` of buf.gen.sdk.yaml's managed
 * mode, so that the imports protoc-gen-go writes resolve inside the module.
 */
export function goModulePath(template = sdkTemplate): string {
  const match = /file_option:\s*go_package_prefix\s*\n\s*value:\s*(\S+)/.exec(readFileSync(template, "utf8"));
  if (!match) throw new Error(`${template} sets no go_package_prefix in managed mode; the Go module path is taken from it`);
  return match[1];
}

/** Puts the `@generated by npm run gen` line above the plugins' own headers. */
function stampHeaders(dir: string, extension: string, marker: "//" | "#"): void {
  for (const file of listFiles(dir).filter((f) => f.endsWith(extension))) {
    const path = join(dir, file);
    writeFileSync(path, sdkHeader(marker) + readFileSync(path, "utf8"));
  }
}

