/**
 * The event side of `npm run breaking`: buf compares messages field by
 * field, but what a running consumer holds on to is an event's full name
 * (its `ce-type`), its stream and the filter subject of its durable. A
 * change to any of them goes past buf's rules and leaves the consumers of
 * the version still running without the event, so it is refused here; so
 * is a durable renamed, whose new name would take the stream over again,
 * or given another event, whose filter the server keeps.
 */
import type { DescFile, DescMessage, DescService } from "@bufbuild/protobuf";
import { readEventsManifest } from "./sdk-manifest.js";
import { isIgnoredPath, locateMessage, locateService } from "./source-locations.js";

/** What to do instead of an event removed, renamed or moved, after each such finding. */
export const newEventAdvice =
  "Instead: declare the new event beside it and emit both, move its consumers to the new one through new durables, then remove the old one in a commit that lists its file under breaking: ignore (README.md, Breaking changes).";

/**
 * One line per event of `previous` that a consumer built on it would no
 * longer receive from a producer built on `current`: removed or renamed,
 * moved to another stream, or on a subject its durable does not match; and
 * per subscription whose durable was renamed, which a new durable would
 * take from the stream's oldest event again, or whose durable took another
 * event before, whose filter subject the server keeps.
 * Lines start `file:line:column:`, as buf's own. An event or a service
 * whose file is under one of the `ignored` paths (buf.yaml's
 * `breaking.ignore`, relative to proto/) is left out, as buf leaves it. Throws protoc-gen-events'
 * ContractError when either side's options break a contract rule.
 */
export function incompatibleEventChanges(current: readonly DescFile[], previous: readonly DescFile[], ignored: readonly string[] = []): string[] {
  const currentManifest = readEventsManifest(current);
  const previousManifest = readEventsManifest(previous);
  const now = new Map(currentManifest.events.map((e) => [e.type, e]));
  const isIgnored = (file: string) => isIgnoredPath(file, ignored);
  const found: string[] = [];
  for (const before of previousManifest.events) {
    if (isIgnored(before.file)) continue;
    const after = now.get(before.type);
    if (!after) {
      const message = findMessage(current, before.type);
      const why = message ? "is no longer an event (its (concord.v1.event) option is gone)" : "was removed or renamed (consumers take events by this name, their ce-type)";
      found.push(`${message ? locateMessage(message) : `${before.file}:1:1`}:Event "${before.type}" ${why}; its consumers would receive nothing. ${newEventAdvice}`);
      continue;
    }
    const at = locateMessage(findMessage(current, after.type)!);
    if (after.stream !== before.stream) {
      found.push(`${at}:Event "${before.type}" moved from stream ${before.stream} to ${after.stream}; its consumers read ${before.stream}. ${newEventAdvice}`);
    }
    if (after.filterSubject !== before.filterSubject) {
      found.push(`${at}:Event "${before.type}" changed its subject from "${before.subjectTemplate}" to "${after.subjectTemplate}"; its consumers filter on "${before.filterSubject}" and would receive nothing. ${newEventAdvice}`);
    }
  }
  const durables = new Map<string, string[]>();
  for (const s of currentManifest.subscriptions) durables.set(`${s.service} ${s.event}`, [...(durables.get(`${s.service} ${s.event}`) ?? []), s.durable]);
  for (const before of previousManifest.subscriptions) {
    const after = durables.get(`${before.service} ${before.event}`);
    if (!after || after.includes(before.durable)) continue;
    const service = findService(current, before.service)!;
    if (isIgnored(`${service.file.name}.proto`)) continue;
    found.push(
      `${locateService(service)}:Service "${before.service}" takes "${before.event}" through durable ${after.join(", ")}, no longer ${before.durable}; a new durable starts at the stream's oldest event and its handler takes each again, while ${before.durable} stays on the server. Instead: keep the name ${before.durable}.`,
    );
  }
  // The server keeps a durable's filter subject, and a service whose durable filters on another subject refuses to start.
  const tookBefore = new Map(previousManifest.subscriptions.map((s) => [`${s.stream} ${s.durable}`, s]));
  for (const now of currentManifest.subscriptions) {
    const before = tookBefore.get(`${now.stream} ${now.durable}`);
    if (!before || before.event === now.event || before.filterSubject === now.filterSubject) continue;
    const service = findService(current, now.service)!;
    if (isIgnored(`${service.file.name}.proto`)) continue;
    found.push(
      `${locateService(service)}:Service "${now.service}" takes "${now.event}" through durable ${now.durable}, which took "${before.event}"; the server keeps its filter "${before.filterSubject}", and the new build refuses to start with a durable that filters on another subject, while the running build still reads "${before.event}" through it. Instead: take "${now.event}" through a durable of a new name.`,
    );
  }
  return found;
}

function findMessage(files: readonly DescFile[], typeName: string): DescMessage | undefined {
  const within = (messages: readonly DescMessage[]): DescMessage | undefined => {
    for (const m of messages) {
      if (m.typeName === typeName) return m;
      const nested = within(m.nestedMessages);
      if (nested) return nested;
    }
    return undefined;
  };
  for (const file of files) {
    const hit = within(file.messages);
    if (hit) return hit;
  }
  return undefined;
}

function findService(files: readonly DescFile[], typeName: string): DescService | undefined {
  return files.flatMap((f) => f.services).find((s) => s.typeName === typeName);
}
