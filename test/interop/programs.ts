/**
 * The Go and Python interop programs (test/interop/go, test/interop/python)
 * as the tests run them: one subcommand per call, flags in `--name value`
 * form (Go's flag package takes those too), findings as JSON on stdout.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { repoRoot } from "../../tools/repo-root.js";

const run = promisify(execFile);


/**
 * One interop program; `run` resolves with its JSON result and rejects with
 * its stderr when it exits non-zero. `env` adds to its environment: the
 * programs call over TLS trusting INTEROP_TLS_CA, with INTEROP_ADMIN_TOKEN to
 * the product service and INTEROP_CUSTOMER_TOKEN to the order service.
 */
export interface InteropProgram {
  readonly language: "go" | "python";
  run<T = any>(command: string, flags?: Readonly<Record<string, string>>, env?: Readonly<Record<string, string>>): Promise<T>;
}

function program(language: InteropProgram["language"], file: string, prefix: string[], env: NodeJS.ProcessEnv): InteropProgram {
  return {
    language,
    async run(command, flags = {}, extraEnv = {}) {
      const args = [...prefix, command, ...Object.entries(flags).flatMap(([name, value]) => [`--${name}`, value])];
      try {
        const { stdout } = await run(file, args, { cwd: repoRoot, env: { ...env, ...extraEnv }, timeout: 30_000, maxBuffer: 4 << 20 });
        return JSON.parse(stdout);
      } catch (err) {
        const e = err as { stderr?: string; stdout?: string; message: string };
        throw new Error(`${language} interop ${command} failed: ${e.stderr?.trim() || e.message}`, { cause: err });
      }
    },
  };
}

/**
 * Builds test/interop/go (against gen/go, through its `replace`) into `outDir`.
 * Fast when `node tools/setup.mjs --for-tests` has warmed the module and build
 * caches; a cold build takes about 90 s on two cores.
 */
export async function buildGoProgram(outDir: string): Promise<InteropProgram> {
  const binary = join(outDir, "interop");
  const env = { ...process.env, GOWORK: "off", GOFLAGS: "-mod=readonly" };
  try {
    await run("go", ["build", "-o", binary, "."], { cwd: join(repoRoot, "test/interop/go"), env, timeout: 240_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`building test/interop/go failed (run \`node tools/setup.mjs --for-tests\` first): ${e.stderr?.trim() || e.message}`, { cause: err });
  }
  return program("go", binary, [], env);
}

/** test/interop/python/interop.py with the venv's Python and gen/python on PYTHONPATH. */
export function pythonProgram(): InteropProgram {
  const python = join(repoRoot, ".venv/bin/python");
  if (!existsSync(python)) throw new Error("no .venv/bin/python; run `node tools/setup.mjs --for-tests` first");
  const env = { ...process.env, PYTHONPATH: join(repoRoot, "gen/python"), PYTHONDONTWRITEBYTECODE: "1" };
  return program("python", python, [join(repoRoot, "test/interop/python/interop.py")], env);
}
