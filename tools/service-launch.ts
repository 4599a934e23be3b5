import { existsSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./repo-root.js";

/** The services `npm start` runs, in start order. */
export const serviceNames = ["products", "orders"] as const;
export type ServiceName = (typeof serviceNames)[number];

/**
 * V8 flags for service processes. A smaller young generation (each
 * semi-space defaults to 16 MiB) and a 128 MiB old generation make V8 collect
 * rather than grow: a service's live heap under saga load measured about
 * 30 MiB, while without a cap its resident memory kept growing past 200 MiB.
 * Raise the cap for services that hold more in memory.
 */
export const serviceNodeFlags = ["--max-semi-space-size=4", "--max-old-space-size=128"];

/**
 * How production runs a service: plain Node on the JavaScript that
 * `npm run build` compiled into dist/ (no TypeScript loader in the process).
 * Throws when the build is missing.
 */
export function serviceCommand(name: ServiceName, extraNodeFlags: readonly string[] = []): { command: string; args: string[] } {
  const script = join(repoRoot, "dist", "services", name, "main.js");
  if (!existsSync(script)) throw new Error(`${script} is missing; run \`npm run build\` first (npm start does)`);
  return { command: process.execPath, args: [...serviceNodeFlags, ...extraNodeFlags, "--enable-source-maps", script] };
}
