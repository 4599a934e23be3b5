/**
 * The event side of `npm run breaking`: buf compares messages field by
 * field, but what a running consumer holds on to is an event's full name
 * (its `ce-type`), its stream and the filter subject of its durable. A
 * change to any of them goes past buf's rules and leaves the consumers of
 * the version still running without the event, so it is refused here; so
 * is a durable renamed, whose new name would take the stream over again,
 * or given another event, whose filter the server keeps. A stream that
 * keeps less than before (subjects dropped, a shorter max age or duplicate
 * window), another storage, or fewer replicas, is refused too; one that
 * keeps more passes, as provisioning widens the stream, and so do more
 * replicas (see streamChanges).
 */
import type { DescFile, DescMessage, DescService } from "@bufbuild/protobuf";
import { compareKeeping, wantedDuplicateWindowMs } from "../../platform/events/provision.js";
import { subjectIsWithin } from "../../platform/events/subject-match.js";
import { findConcordOptions } from "../protoc-gen-events/concord-options.js";
import { readEventsManifest, type StreamManifest } from "./sdk-manifest.js";
import { isIgnoredPath, locateFileOption, locateMessage, locateService } from "./source-locations.js";

/** What to do instead of an event removed, renamed or moved, after each such finding. */
export const newEventAdvice =
  "Instead: declare the new event beside it and emit both, move its consumers to the new one through new durables, then remove the old one in a commit that lists its file under breaking: ignore (README.md, Breaking changes).";

/**
 * One line per event of `previous` that a consumer built on it would no
 * longer receive from a producer built on `current`: removed or renamed,
 * moved to another stream, or on a subject its durable does not match; and
 * per subscription whose durable was renamed, which a new durable would
 * take from the stream's oldest event again, or whose durable took another
 * event before, whose filter subject the server keeps; and per setting of a
 * stream that keeps less than before, changes storage or has fewer
 * replicas (streamChanges).
 * Lines start `file:line:column:`, as buf's own, where `current` declares
 * what they are about; an event `current` no longer has at all, where
 * `previous` declared it, saying so with `previousName` (the revision it is
 * of: "HEAD~1"), as that line may be another or gone in the work tree. An
 * event or a service whose file is under one of the `ignored` paths
 * (buf.yaml's `breaking.ignore`, relative to proto/) is left out, as buf
 * leaves it. Throws protoc-gen-events' ContractError when either side's
 * options break a contract rule.
 */
export function incompatibleEventChanges(current: readonly DescFile[], previous: readonly DescFile[], ignored: readonly string[] = [], previousName = "the contracts compared against"): string[] {
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
      const finding = message
        ? `${locateMessage(message)}:Event "${before.type}" is no longer an event (its (concord.v1.event) option is gone)`
        : `${locateMessage(findMessage(previous, before.type)!)}:Event "${before.type}" (declared there in ${previousName}) was removed or renamed (consumers take events by this name, their ce-type)`;
      found.push(`${finding}; its consumers would receive nothing. ${newEventAdvice}`);
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
  found.push(...streamChanges(currentManifest.streams, previousManifest.streams, current, isIgnored));
  return found;
}

/** What to do instead of narrowing what a stream keeps, after each such finding. */
export const streamEditAdvice =
  "Instead: ship it in a commit of its own that lists its file under breaking: ignore, and have the operator narrow the stream by hand (nats stream edit) once no consumer needs what it drops (README.md, Breaking changes)";

/** What a change to a stream's subjects that drops some while adding others does, and what to do instead. */
const subjectsSwapped =
  "the new build's services refuse to start (exit 2) against the stream, which keeps subjects the contract lacks and lacks some it has, and npx concord streams provision refuses to change it; " +
  "Instead: add the new subjects in one release (provisioning adds them to the stream, which loses nothing) and drop the old ones in a later one";

/**
 * One line per stream setting of both sides that does not simply keep
 * more. What a stream keeps may grow with its contract: `npx concord
 * streams provision` widens a stream to more subjects, a longer max age or
 * duplicate window, and every service accepts a stream that keeps more than
 * its contract, so such changes pass. A narrowing is never applied by
 * provisioning (it would delete events or leave subjects without a stream):
 * the stream keeps what it kept, and the contract says otherwise until the
 * operator narrows it by hand, which drops events; each line says which.
 * Subjects some dropped and some added, and another storage (which
 * nats-server cannot change), stop the new build's services at start.
 * Fewer replicas cost durability once the operator's provisioning moves the
 * stream down to them (a service never does); each line says how much.
 * More replicas (which provisioning, and each service as it starts, moves
 * the stream up to, the server copying the events while it serves) and the
 * description pass.
 */
function streamChanges(current: readonly StreamManifest[], previous: readonly StreamManifest[], files: readonly DescFile[], isIgnored: (file: string) => boolean): string[] {
  const options = findConcordOptions(files);
  if (!options) return [];
  const found: string[] = [];
  for (const before of previous) {
    const after = current.find((s) => s.name === before.name);
    if (!after || isIgnored(after.file) || isIgnored(before.file)) continue;
    const at = locateFileOption(files.find((f) => `${f.name}.proto` === after.file)!, options.streamNumber);
    const report = (change: string, effect: string) => found.push(`${at}:Stream ${before.name}: ${change}; ${effect}.`);
    const narrowed = (effect: string) =>
      `provisioning never narrows a stream, so it keeps what it kept (every service accepts a stream that keeps more than its contract) until the operator narrows it by hand; ${effect}. ${streamEditAdvice}`;
    // Compared as provisioning compares a stream with its contract, the stream as it was standing for the existing one.
    const [windowBefore, windowAfter] = [wantedDuplicateWindowMs(before), wantedDuplicateWindowMs(after)];
    const kept = compareKeeping(
      { subjects: before.subjects, maxAgeMs: before.maxAgeMs, duplicateWindowMs: windowBefore },
      { subjects: after.subjects, maxAgeMs: after.maxAgeMs, duplicateWindowMs: windowAfter },
    );
    const { existing: was, wanted: is, dropped, added } = kept.subjects;
    if (dropped.length > 0) {
      const outside = is.some((i) => dropped.some((s) => subjectIsWithin(i, s))) ? ` outside ${is.join(", ")}` : "";
      report(
        `subjects changed from ${was.join(", ")} to ${is.join(", ")}`,
        added.length > 0 ? subjectsSwapped : narrowed(`once it is, an event published on ${dropped.join(", ")}${outside} is stored nowhere (its producer's outbox holds it back)`),
      );
    }
    if (after.storage !== before.storage) {
      report(
        `storage changed from ${before.storage} to ${after.storage}`,
        "the new build's services refuse to start (exit 2) against the stream, and nats-server refuses to change a stream's storage: the stream would have to be deleted and made again, losing every event it holds. " +
          "Instead: keep the storage; events kept otherwise need a stream of their own: declare them in a new file with its stream, beside these (README.md, Breaking changes)",
      );
    }
    if (kept.maxAge === "more") {
      report(
        `max_age shortened from ${age(before.maxAgeMs)} to ${age(after.maxAgeMs)}`,
        narrowed(`once it is, nats-server deletes at once every event older than ${age(after.maxAgeMs)}, which a consumer further behind, and a new durable (which starts at the stream's oldest event), never receive`),
      );
    }
    if (kept.duplicateWindow === "more") {
      report(
        `duplicate_window shortened from ${age(windowBefore)} to ${age(windowAfter)}`,
        narrowed("once it is, an event published again later than that (an outbox relay retrying after a crash) is stored twice, and the consumers' inboxes drop the repeat"),
      );
    }
    if (after.replicas < before.replicas) report(`replicas lowered from ${before.replicas} to ${after.replicas}`, replicasLowered(before.replicas, after.replicas));
  }
  return found;
}

/**
 * What a stream moved from `before` replicas down to `after` gives up: an
 * event is acknowledged once a majority of its replicas stored it, and the
 * stream stays up while a majority is left.
 */
function replicasLowered(before: number, after: number): string {
  const majority = (replicas: number) => Math.floor(replicas / 2) + 1;
  const servers = (n: number) => (n === 0 ? "no server" : n === 1 ? "1 server" : `${n} servers`);
  const costs = [
    ...(majority(after) < majority(before) ? [`an acknowledged event is on ${servers(majority(after))} where it was on ${majority(before)}`] : []),
    ...(after - majority(after) < before - majority(before) ? [`the stream stays up through the loss of ${servers(after - majority(after))} where it did through ${before - majority(before)}`] : []),
  ];
  return (
    `a service never lowers a stream's replicas, so the stream keeps ${before} until the operator next provisions the streams (npx concord streams provision, as npm start does), which moves it down to ${after}: ` +
    `then ${costs.join(", and ")} (README.md, Durability). ` +
    "Instead: keep the replicas; where fewer are meant, ship the change in a commit of its own that lists its file under breaking: ignore (README.md, Breaking changes)"
  );
}

/** A duration in milliseconds in its largest whole unit (30d, 2m, 1500ms); 0 is a max_age's "forever". */
function age(ms: number): string {
  if (ms === 0) return "none (kept forever)";
  const unit = ([["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1_000]] as const).find(([, size]) => ms % size === 0);
  return unit ? `${ms / unit[1]}${unit[0]}` : `${ms}ms`;
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
