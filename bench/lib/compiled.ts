import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type * as Events from "../../platform/events/index.js";
import type * as Log from "../../platform/log/index.js";
import type * as Sql from "../../platform/sql/index.js";

/**
 * The platform as production runs it: the JavaScript `npm run build` wrote to
 * dist/, not the TypeScript sources through the worker's TypeScript loader
 * (whose transform adds work of its own, such as naming each function it
 * creates, on every call). Types come from the sources. Throws when the build
 * is missing (`npm run bench` builds first).
 */
export async function compiledPlatform(): Promise<{ events: typeof Events; log: typeof Log; sql: typeof Sql }> {
  const dist = new URL("../../dist/platform/", import.meta.url);
  const entry = (name: string) => new URL(`${name}/index.js`, dist);
  for (const name of ["events", "log", "sql"]) {
    if (!existsSync(fileURLToPath(entry(name)))) throw new Error(`${fileURLToPath(entry(name))} is missing; run \`npm run build\` first`);
  }
  const [events, log, sql] = await Promise.all([import(entry("events").href), import(entry("log").href), import(entry("sql").href)]);
  return { events, log, sql };
}
