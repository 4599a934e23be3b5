import { existsSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import type * as Events from "../../platform/events/index.js";
import type * as Log from "../../platform/log/index.js";
import type * as Sql from "../../platform/sql/index.js";
import { repoRoot } from "../../tools/repo-root.js";

/**
 * The platform as production runs it: the JavaScript `npm run build` wrote to
 * dist/, not the TypeScript sources through the worker's TypeScript loader
 * (whose transform adds work of its own, such as naming each function it
 * creates, on every call). Types come from the sources. Throws when the build
 * is missing (`npm run bench` builds first).
 */
export async function compiledPlatform(): Promise<{ events: typeof Events; log: typeof Log; sql: typeof Sql }> {
  const entry = (name: string) => join(repoRoot, "dist", "platform", name, "index.js");
  for (const name of ["events", "log", "sql"]) {
    if (!existsSync(entry(name))) throw new Error(`${entry(name)} is missing; run \`npm run build\` first`);
  }
  const load = (name: string) => import(pathToFileURL(entry(name)).href);
  const [events, log, sql] = await Promise.all([load("events"), load("log"), load("sql")]);
  return { events, log, sql };
}

/** One module of the compiled platform that its index does not export, such as "events/pull-intake.js" (types from the sources). */
export async function compiledModule<T>(path: string): Promise<T> {
  const file = join(repoRoot, "dist", "platform", path);
  if (!existsSync(file)) throw new Error(`${file} is missing; run \`npm run build\` first`);
  return (await import(pathToFileURL(file).href)) as T;
}

/** The TypeScript `npm run build` compiles into dist/: the services and what they import, from these folders. */
const compiledFolders = ["platform", "services", "gen"];

/**
 * Why dist/ under `root` does not hold the code of the sources, or undefined
 * when it does: a source file changed since it was compiled (newer than its
 * .js in dist/), or a service's entry point (services/<name>/main.ts) not
 * compiled at all. Other sources without a .js there are passed over: no
 * service imported them when dist/ was built, and a file that imports one now
 * has changed since, which is caught.
 */
export function staleBuild(root: string = repoRoot): string | undefined {
  const dist = join(root, "dist");
  for (const folder of compiledFolders) {
    for (const source of typeScriptSources(join(root, folder))) {
      const path = relative(root, source);
      const compiled = join(dist, path.replace(/\.ts$/, ".js"));
      const isEntry = /^services[\\/][^\\/]+[\\/]main\.ts$/.test(path);
      if (!existsSync(compiled)) {
        if (isEntry) return `${relative(root, compiled)} is missing`;
        continue;
      }
      if (statSync(source).mtimeMs > statSync(compiled).mtimeMs) return `${path} changed since it was compiled to ${relative(root, compiled)}`;
    }
  }
  return undefined;
}

/** Every .ts file under `dir` but tests and declarations. */
function* typeScriptSources(dir: string): Generator<string> {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* typeScriptSources(path);
    else if (entry.isFile() && entry.name.endsWith(".ts") && !entry.name.endsWith(".test.ts") && !entry.name.endsWith(".d.ts")) yield path;
  }
}
