import { existsSync } from "node:fs";
import { join } from "node:path";
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
