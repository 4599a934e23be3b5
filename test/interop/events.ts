/**
 * gen/events.json, the language-neutral manifest the Go and Python SDKs come
 * with, as the interop tests read it.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { EventsManifest } from "../../tools/contracts/sdk-manifest.js";
import { repoRoot } from "../../tools/repo-root.js";

/** gen/events.json. */
export function eventsManifest(): EventsManifest {
  return JSON.parse(readFileSync(join(repoRoot, "gen/events.json"), "utf8")) as EventsManifest;
}

/** The subject of an event of `type`, from the manifest's template. */
export function subjectOf(manifest: EventsManifest, type: string, tokens: Readonly<Record<string, string>>): string {
  const event = manifest.events.find((e) => e.type === type);
  if (!event) throw new Error(`gen/events.json has no event ${type}`);
  return event.subjectTemplate.replace(/\{([^{}]+)\}/g, (_, name: string) => {
    const value = tokens[name];
    if (!value || /[.*>\s]/.test(value)) throw new Error(`bad value ${JSON.stringify(value)} for {${name}} of ${type}`);
    return value;
  });
}
