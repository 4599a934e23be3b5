import { AckPolicy, DeliverPolicy, RetentionPolicy, millis, nanos, StorageType, type JetStreamAccountStats, type JetStreamManager, type NatsError, type StreamInfo, type StreamConfig, type ConsumerInfo } from "nats";
import type { Logger } from "../log/index.js";
import { checkOptions } from "../options/index.js";
import { causeChain } from "../errors/index.js";
import { subjectIsWithin } from "./subject-match.js";
import type { ConsumerSpec, StreamSpec } from "./types.js";

// JetStream API error codes (nats-server errors.json).
const streamNotFound = 10059;
const consumerNotFound = 10014;
const replicasNotSupported = 10074; // "replicas > 1 not supported in non-clustered mode"
const noSuitablePeers = 10005; // "no suitable peers for placement": too few servers online for the replicas, for now
const subjectsOfAnotherStream = 10065; // "subjects overlap with an existing stream", which it does not name
/** How long a stream's creation is retried while a cluster has too few servers online (forming, one restarting). */
const placementWaitMs = 15_000;
const serverDefaultDuplicateWindowMs = 120_000;

/** Whether `err`, or an error it wraps, is nats-server's refusal of a subject the connection's user may not publish to. */
export const permissionDenied = (err: unknown): boolean => {
  for (const e of causeChain(err)) if ((e as { isPermissionError?: () => boolean }).isPermissionError?.() === true) return true;
  return false;
};

/** What tells how to provision streams where the services may not. */
const provisionHint = "the operator provisions streams (npx concord streams provision; npm start does it before the services start)";

/** Who changes what a service leaves as it is (an existing stream's description, replicas above its spec's). */
const operatorSets = "the operator's provisioning does (npx concord streams provision, which npm start runs before the services start)";

/**
 * Stream settings that make the server itself publish or copy messages:
 * what it sends goes out with no user's permissions, so a stream with one a
 * contract does not declare (none does) is refused. A user that could set
 * `republish` to a JetStream API subject could purge or delete any stream.
 */
const serverPublishingSettings = ["republish", "sources", "mirror", "subject_transform"] as const;

export interface EnsureStreamsOptions {
  /**
   * Hears of replicas raised, left at 1 or left above the spec's, and of what was widened or left (see ensureStreams);
   * not of replicas lowered, which `lowered` gives the caller to say.
   */
  readonly logger?: Logger;
  /**
   * Provisioning as the operator (npx concord streams provision, npm start):
   * an existing stream's replicas are moved down to its spec's as well as
   * up, and its description is set to the spec's. Without it, as a service
   * provisions at its start, replicas are only raised and an existing
   * stream's description is left as it is (see ensureStreams).
   */
  readonly operator?: boolean;
  /**
   * Streams another service owns: created when missing, checked, never
   * changed (description, atomic batch, replicas are their owner's to set;
   * its NATS user alone may update them).
   */
  readonly foreign?: readonly string[];
}

/**
 * Creates each stream that is missing and checks each one that exists.
 * Idempotent. Throws, naming the stream, the setting and the existing and
 * wanted values, when an existing stream differs in storage or retention
 * (limits), has subjects some of which its spec lacks while it lacks some
 * of the spec's, or has any of republish, sources, mirror or a subject
 * transform: those are not changed behind an operator's back, so start-up
 * stops instead.
 *
 * What a stream keeps may grow with its contract, never shrink: an
 * existing stream that keeps less than its spec (fewer subjects, a shorter
 * max age or duplicate window; subjects are judged by what they match, so
 * a stream on `a.>` keeps all a spec on `a.b.>` asks for, and one on
 * `a.b.>` less than a spec on `a.>`) is widened to it, which loses nothing, and
 * one that keeps more is left so (shrinking it would delete events at once
 * or leave published subjects without a stream; the operator does that by
 * hand, see README "Breaking changes"). Where this user may not widen it,
 * or the stream is another service's, StreamShortOfSpecError; where another
 * stream holds the subjects it would be created or widened with,
 * StreamSubjectsHeldError.
 *
 * Under the generated NATS permissions a service's user may read its
 * streams but not create or change them (no subject permission can refuse
 * a stream's configuration, and a stream that republishes escapes them):
 * the operator provisions them with the same function (`operator`). A
 * missing stream is then an error that says so, and a setting the operator
 * has not yet brought in line (atomic batch, fewer replicas than the spec)
 * a warning.
 *
 * Replicas follow the spec upwards: a stream is created with the replicas
 * its contract declares, and an existing one with fewer is moved up to them
 * (JetStream copies the data to the new peers while it serves). Only the
 * operator (`operator`) moves one with more replicas down to its spec, and
 * says so (`lowered`); a service leaves it so and logs it at info. Nor does
 * a service rewrite an existing stream's description, which the operator
 * sets. During a rolling deploy an instance of the older build, starting
 * with its older contract as a user that may change streams (a deployment
 * without the generated permissions), would otherwise move the replicas
 * the newer contract raised back down, and the description back, while the
 * newer build runs.
 *
 * A standalone server, which refuses more than one replica, keeps the
 * stream at 1, logged as a warning: a contract declares what a cluster must
 * give, and one development server still runs the same contracts. A
 * cluster with fewer servers than declared refuses the stream, and
 * start-up stops with the server's reason.
 *
 * A stream's largest message (max_msg_size, the spec's maxMessageBytes,
 * headers counted with the payload) is set when it is created, and on an
 * existing stream too, since it only refuses messages published after: a
 * larger one by a service as by the operator, a smaller one (or one where
 * the stream has none) by the operator alone (see ensureMessageLimit). A
 * spec without maxMessageBytes leaves it as it is.
 *
 * On a server that has atomic batch publish (nats-server 2.12 and later,
 * JetStream API level 2), every stream allows it (`allow_atomic`, set on
 * existing streams too): the outbox relay then publishes many events in one
 * batch (see createOutboxRelay's `batchStreams`). Resolves with the streams
 * that allow it.
 */
export async function ensureStreams(jsm: JetStreamManager, specs: readonly StreamSpec[], options: EnsureStreamsOptions = {}): Promise<ProvisionedStreams> {
  checkOptions("ensureStreams", options, ["logger", "foreign", "operator"]);
  const foreign = new Set(options.foreign ?? []);
  for (const spec of specs) validateStreamSpec(spec);
  const { api } = await jsm.getAccountInfo();
  const atomic = ((api as { level?: number }).level ?? 0) >= atomicBatchApiLevel;
  const atomicBatch: StreamSpec[] = [];
  const widened: StreamSettings[] = [];
  const keepsMore: StreamSettings[] = [];
  const lowered: StreamSettings[] = [];
  for (const spec of specs) {
    const found: FoundSettings = { widened: [], keepsMore: [], lowered: [] };
    if (await ensureStream(jsm, spec, atomic, options.logger, foreign.has(spec.name), options.operator === true, found)) atomicBatch.push(spec);
    if (found.widened.length > 0) widened.push({ stream: spec.name, settings: found.widened });
    if (found.keepsMore.length > 0) keepsMore.push({ stream: spec.name, settings: found.keepsMore });
    if (found.lowered.length > 0) lowered.push({ stream: spec.name, settings: found.lowered });
  }
  return { atomicBatch, widened, keepsMore, lowered };
}

/**
 * An existing stream whose settings conflict with its spec, which
 * ensureStreams leaves as it is. The message advises a service starting up;
 * `conflict` (what differs, without advice) lets another caller advise its own user.
 */
export class StreamConflictError extends Error {
  override readonly name: string = "StreamConflictError";
  /** "stream NAME exists with settings that conflict with its spec (setting: existing ..., wanted ...; ...)". */
  readonly conflict: string;
  constructor(readonly stream: string, conflicts: readonly string[]) {
    const conflict = `stream ${stream} exists with settings that conflict with its spec (${conflicts.join("; ")})`;
    super(
      `${conflict}: left as it is; migrate the stream deliberately (for example with the nats CLI: edit it, or remove it if its messages may go), ` +
        "or change the contract back to what the stream has, then start again",
    );
    this.conflict = conflict;
  }
}

/** An existing durable consumer that cannot be made into its spec (a push consumer, another ack policy or filter), which ensureConsumers leaves as it is. */
export class ConsumerConflictError extends Error {
  override readonly name: string = "ConsumerConflictError";
}

/** A stream that is missing where this NATS user may not create it (the operator provisions it). */
export class StreamMissingError extends Error {
  override readonly name: string = "StreamMissingError";
}

/**
 * A stream or durable consumer that nats-server refuses to create because a
 * JetStream limit of its own or of the account leaves no room for it (see
 * `limitRefusals`): the operator's to raise, not something that trying
 * again mends.
 */
export class JetStreamLimitError extends Error {
  override readonly name: string = "JetStreamLimitError";
  /** The stream refused, or the stream of the consumer refused. */
  constructor(message: string, readonly stream: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * A stream that keeps less than its spec (fewer subjects, a shorter max age
 * or duplicate window) where this NATS user may not widen it, or that
 * another service owns (the operator provisions it). Where another stream
 * holds the subjects it would be widened to, StreamSubjectsHeldError.
 */
export class StreamShortOfSpecError extends Error {
  override readonly name: string = "StreamShortOfSpecError";
}

/**
 * A stream that nats-server refuses to create, or to widen to its spec,
 * because another stream holds some of its subjects (the message names that
 * stream): the operator's to settle by narrowing the other stream, not
 * something that trying again would change.
 */
export class StreamSubjectsHeldError extends Error {
  override readonly name: string = "StreamSubjectsHeldError";
  constructor(message: string, readonly stream: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * How an existing stream's setting compares with its spec's: the same;
 * keeping more (more subjects, events or message ids kept longer), left as
 * it is, as nothing the spec promises is missing and narrowing it would
 * drop events; keeping less, widened to the spec, which loses nothing; or
 * neither (subjects some added, some gone), a conflict.
 */
export type Reach = "same" | "more" | "less" | "other";

interface KeptSetting {
  readonly setting: string;
  readonly reach: Reach;
  readonly existing: unknown;
  readonly wanted: unknown;
  /** The update that gives the stream its spec's value. */
  readonly widen: Partial<StreamConfig>;
}

/** What a stream keeps, as its settings say: duplicate window as the server holds it (see wantedDuplicateWindowMs). */
export interface Keeping {
  readonly subjects: readonly string[];
  /** 0 keeps events for ever. */
  readonly maxAgeMs: number;
  readonly duplicateWindowMs: number;
}

/**
 * What `existing` keeps compared with `wanted`, setting by setting (see
 * Reach: "more" is `existing` keeping more): the one comparison that both
 * provisioning (an existing stream against its spec) and the breaking check
 * (a contract's stream before against after) make. Subjects are judged by
 * what they match, as nats-server does: a stream on `a.>` keeps all a spec
 * on `a.b.>` asks for. `dropped` are those of `existing` that `wanted`
 * does not match, `added` those of `wanted` that `existing` does not; each
 * side's subjects are given sorted and without repeats.
 */
export function compareKeeping(existing: Keeping, wanted: Keeping) {
  const was = [...new Set(existing.subjects)].sort();
  const is = [...new Set(wanted.subjects)].sort();
  const dropped = was.filter((s) => !is.some((w) => subjectIsWithin(s, w)));
  const added = is.filter((w) => !was.some((s) => subjectIsWithin(w, s)));
  const span = (a: number, b: number): Reach => (a === b ? "same" : a > b ? "more" : "less");
  const forever = (ms: number) => (ms === 0 ? Number.POSITIVE_INFINITY : ms);
  return {
    subjects: { existing: was, wanted: is, dropped, added, reach: (dropped.length > 0 ? (added.length > 0 ? "other" : "more") : added.length > 0 ? "less" : "same") as Reach },
    maxAge: span(forever(existing.maxAgeMs), forever(wanted.maxAgeMs)),
    duplicateWindow: span(existing.duplicateWindowMs, wanted.duplicateWindowMs),
  };
}

/** The settings that say what a stream keeps, compared with its spec's (see Reach). */
function keptSettings(config: StreamConfig, spec: StreamSpec): KeptSetting[] {
  const maxAge = millis(config.max_age);
  const window = millis(config.duplicate_window);
  const wantedWindow = wantedDuplicateWindowMs(spec);
  const { subjects, maxAge: ageReach, duplicateWindow } = compareKeeping(
    { subjects: config.subjects ?? [], maxAgeMs: maxAge, duplicateWindowMs: window },
    { subjects: spec.subjects, maxAgeMs: spec.maxAgeMs, duplicateWindowMs: wantedWindow },
  );
  return [
    { setting: "subjects", reach: subjects.reach, existing: subjects.existing, wanted: subjects.wanted, widen: { subjects: subjects.wanted } },
    { setting: "max_age (ms)", reach: ageReach, existing: maxAge, wanted: spec.maxAgeMs, widen: { max_age: nanos(spec.maxAgeMs) } },
    { setting: "duplicate_window (ms)", reach: duplicateWindow, existing: window, wanted: wantedWindow, widen: { duplicate_window: nanos(wantedWindow) } },
  ];
}

/** What provisioning found the streams to allow. */
export interface ProvisionedStreams {
  /** The streams that take atomic batch publishes. */
  readonly atomicBatch: readonly StreamSpec[];
  /**
   * The streams widened to their specs at this call, each with what was widened ("max_age (ms): existing 3600000,
   * wanted 7200000"; a max_msg_size raised: "max_msg_size (bytes): existing 8192, wanted 16384").
   */
  readonly widened: readonly StreamSettings[];
  /** The streams left keeping more than their specs, which provisioning never narrows, each with what it keeps more of ("max_age (ms): existing 7200000, wanted 3600000"). */
  readonly keepsMore: readonly StreamSettings[];
  /**
   * The streams moved down to their specs' replicas or max_msg_size at this call, which only the operator does
   * ("num_replicas: existing 3, wanted 1", "max_msg_size (bytes): existing none, wanted 8192").
   */
  readonly lowered: readonly StreamSettings[];
}

/** A stream and settings of it that differ from its spec, each as "setting: existing ..., wanted ...". */
export interface StreamSettings {
  readonly stream: string;
  readonly settings: readonly string[];
}

/** What ensureStream found of one stream's settings (see ProvisionedStreams), filled in as it goes. */
interface FoundSettings {
  readonly widened: string[];
  readonly keepsMore: string[];
  readonly lowered: string[];
}

/** The JetStream API level of nats-server 2.12, the first with atomic batch publish. */
const atomicBatchApiLevel = 2;
/** Stream settings nats.js 2.29 does not type yet. */
type NewerStreamConfig = { allow_atomic?: boolean };

/**
 * Creates each durable pull consumer that is missing (explicit ack, no
 * max_deliver: see `serverMaxDeliver`), and updates max_deliver and ack_wait
 * of existing ones.
 * Throws a clear error when the stream is missing or an existing consumer
 * cannot be changed into the spec (filter subject, push consumer, ack policy).
 * With `newDatabase` (the service's database was made at this start), warns
 * of consumers that acknowledged events already: their effects are not in it.
 */
export async function ensureConsumers(
  jsm: JetStreamManager,
  specs: readonly ConsumerSpec[],
  options: { readonly logger?: Logger; readonly newDatabase?: boolean } = {},
): Promise<void> {
  checkOptions("ensureConsumers", options, ["logger", "newDatabase"]);
  for (const spec of specs) validateConsumerSpec(spec);
  const handledBefore: { consumer: string; stream: string; ackFloor: number }[] = [];
  for (const spec of specs) {
    const floor = await ensureConsumer(jsm, spec, options.logger);
    if (floor > 0) handledBefore.push({ consumer: spec.durable, stream: spec.stream, ackFloor: floor });
  }
  if (options.newDatabase && handledBefore.length > 0) warnOfNewDatabase(handledBefore, options.logger);
}

/**
 * A database made at this start, while the service's durable consumers had
 * acknowledged events, is most likely not the one they were handled into: a
 * file deleted or lost, or a DATA_DIR or database URL other than before.
 * The service runs on it as on any (those events are not delivered again),
 * so it says so once, at start.
 */
function warnOfNewDatabase(handledBefore: readonly { consumer: string; stream: string; ackFloor: number }[], logger: Logger | undefined): void {
  const which = handledBefore.map((c) => `${c.consumer} up to ${c.stream} sequence ${c.ackFloor}`).join(", ");
  logger?.warn(
    { consumers: handledBefore },
    `the service's database was made new at this start, yet its consumers have acknowledged events already (${which}): ` +
      "what those events did is not in it. If its database was deleted or lost, or the DATA_DIR or database URL is not the one it ran on, " +
      'stop it and put that database back (README "Backups and restores"); if it is meant to start empty, nothing is to be done',
  );
}

const apiErrorCode = (err: unknown): number | undefined => (err as NatsError).api_error?.err_code;

/**
 * An account's limit and how much of it is in use, to follow its name (" (2, with 2 in use)"), or " (none set)" (then
 * the server's binds, where it has one); nothing when the account's figures could not be read.
 */
const accountFigure = (used: number | undefined, max: number | undefined, unit = ""): string =>
  used === undefined || max === undefined ? "" : max < 0 ? " (none set)" : ` (${max}${unit}, with ${used}${unit} in use)`;

/**
 * What the account's streams hold back of a storage by their max_bytes (nats-server's `reserved_storage` and
 * `reserved_memory`, which nats.js does not type), to follow the advice: a stream made with a large max_bytes takes
 * that much of the limit before it holds a byte. Nothing when none is, or the figures could not be read.
 */
const reservedSaid = (account: JetStreamAccountStats | undefined, storage: "storage" | "memory"): string => {
  const reserved = (account as { reserved_storage?: number; reserved_memory?: number } | undefined)?.[`reserved_${storage}`] ?? 0;
  return reserved > 0 ? `; the account's streams reserve ${reserved} bytes of it by their max_bytes: lower the max_bytes of those that reserve more than they need` : "";
};

/**
 * JetStream's refusals of a new stream or consumer (by err_code, nats-server
 * errors.json) for want of room under a limit of the server's
 * configuration or of the account's: each says which limit, from the
 * account's figures where this user may read them, and what to do.
 */
const limitRefusals: ReadonlyMap<number, (account: JetStreamAccountStats | undefined) => string> = new Map([
  [10027, (a) => `the account of this NATS user may hold no more streams: raise its max_streams${accountFigure(a?.streams, a?.limits.max_streams)} in the server's configuration (accounts { <account> { jetstream { max_streams: ... } } }), or delete streams nothing needs`],
  [10026, (a) => `the account of this NATS user, or the stream, may hold no more consumers: raise the account's max_consumers${accountFigure(a?.consumers, a?.limits.max_consumers)} in the server's configuration, or the stream's, or delete consumers nothing reads (npx concord consumer stale lists those no contract declares)`],
  [10047, (a) => `JetStream's file storage has no room for it: raise the server's jetstream { max_file_store }, or the account's max_file${accountFigure(a?.storage, a?.limits.max_storage, " bytes")}, whichever binds, or free space on the disk of the server's store${reservedSaid(a, "storage")}`],
  [10028, (a) => `JetStream's memory storage has no room for it: raise the server's jetstream { max_memory_store }, or the account's max_mem${accountFigure(a?.memory, a?.limits.max_memory, " bytes")}, whichever binds${reservedSaid(a, "memory")}`],
  [10023, (a) => `JetStream's limits leave no room for it: raise the server's jetstream { max_file_store, max_memory_store }, or the account's max_file${accountFigure(a?.storage, a?.limits.max_storage, " bytes")} and max_mem${accountFigure(a?.memory, a?.limits.max_memory, " bytes")}, whichever binds`],
  [10002, () => "the account's JetStream limits (accounts { <account> { jetstream { ... } } } in the server's configuration) leave no room for it: raise them"],
  [10113, () => "the account requires every stream to set max_bytes (its jetstream max_bytes_required), and the contracts' streams keep events by age, not by size: lift that requirement for the account the services use"],
  [10120, () => "the account has JetStream limits for some numbers of replicas (tiered limits), and none for this stream's: give it limits for that tier too, or limits for every stream"],
]);

/**
 * The server's reason for refusing a new stream or consumer, with the limit to raise, when `err` is one of
 * `limitRefusals`; undefined for any other error.
 */
async function limitRefusal(jsm: JetStreamManager, err: unknown): Promise<string | undefined> {
  const code = apiErrorCode(err);
  const advice = code === undefined ? undefined : limitRefusals.get(code);
  if (!advice) return undefined;
  const account = await jsm.getAccountInfo().catch(() => undefined); // a user that may not read it is told without figures
  return `${(err as Error).message} (err_code ${code}): ${advice(account)}`;
}

const standaloneWarning = (spec: StreamSpec) =>
  `nats-server is not clustered: stream ${spec.name} keeps 1 replica, not the ${spec.replicas} its contract declares; ` +
  `a crash of this server's machine can lose what it acknowledged last (run a cluster, see README "Durability")`;

/** Creates or checks one stream; resolves with whether it takes atomic batch publishes. */
async function ensureStream(
  jsm: JetStreamManager,
  spec: StreamSpec,
  atomic: boolean,
  logger: Logger | undefined,
  foreign: boolean,
  operator: boolean,
  found: FoundSettings,
): Promise<boolean> {
  const allowsAtomic = (i: StreamInfo) => (i.config as NewerStreamConfig).allow_atomic === true;
  let info = await streamInfo(jsm, spec.name);
  if (!info) {
    const add = (replicas: number) =>
      jsm.streams.add({
        name: spec.name,
        subjects: [...spec.subjects],
        storage: spec.storage === "file" ? StorageType.File : StorageType.Memory,
        num_replicas: replicas,
        max_age: nanos(spec.maxAgeMs),
        duplicate_window: nanos(wantedDuplicateWindowMs(spec)),
        ...(spec.maxMessageBytes !== undefined ? { max_msg_size: maxMsgSizeOf(spec.maxMessageBytes) } : {}),
        ...(spec.description ? { description: spec.description } : {}),
        // Only where the server knows it: older servers may refuse a setting they do not know.
        ...(atomic ? ({ allow_atomic: true } as NewerStreamConfig) : {}),
      });
    // A cluster that is forming, or has a server restarting, cannot place every replica yet: ask again for a while.
    const placed = async (replicas: number) => {
      const until = Date.now() + placementWaitMs;
      for (let told = false; ; ) {
        try {
          return await add(replicas);
        } catch (err) {
          // "…, peer offline": servers it needs are known but not up; without that, the cluster is too small.
          if (apiErrorCode(err) !== noSuitablePeers || !/offline/i.test((err as Error).message) || Date.now() >= until) throw err;
          if (!told) logger?.warn({ stream: spec.name, replicas, err: (err as Error).message }, "too few JetStream servers online to place the stream's replicas yet; asking again");
          told = true;
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
      }
    };
    try {
      try {
        return allowsAtomic(await placed(spec.replicas));
      } catch (err) {
        if (spec.replicas === 1 || apiErrorCode(err) !== replicasNotSupported) throw err;
        // Said once the stream is made: one the server refuses (a limit) is said to be refused, and nothing else.
        const made = await add(1);
        logger?.warn({ stream: spec.name, declaredReplicas: spec.replicas, replicas: 1 }, standaloneWarning(spec));
        return allowsAtomic(made);
      }
    } catch (err) {
      // Another instance may have created it in the meantime; then compare with that one.
      info = await streamInfo(jsm, spec.name);
      if (!info && permissionDenied(err)) throw new StreamMissingError(`stream ${spec.name} does not exist, and this NATS user may not create it: ${provisionHint}`, { cause: err });
      // Another stream holding its subjects is the operator's to settle: refused in one line, as a stream missing is.
      if (!info && apiErrorCode(err) === subjectsOfAnotherStream) throw new StreamSubjectsHeldError(`stream ${spec.name} does not exist, and nats-server refuses to create it: ${await withOverlapNamed(jsm, spec, err)}`, spec.name, { cause: err });
      const limit = info ? undefined : await limitRefusal(jsm, err);
      if (limit) throw new JetStreamLimitError(`stream ${spec.name} does not exist, and nats-server refuses to create it: ${limit}`, spec.name, { cause: err });
      if (!info) throw new Error(`creating stream ${spec.name} (subjects ${spec.subjects.join(", ")}, ${spec.replicas} replicas) failed: ${(err as Error).message}`, { cause: err });
    }
  }
  const { config } = info;
  const conflicts: string[] = [];
  const values = (setting: string, existing: unknown, wanted: unknown) => `${setting}: existing ${JSON.stringify(existing)}, wanted ${JSON.stringify(wanted)}`;
  const differs = (setting: string, existing: unknown, wanted: unknown) => {
    if (JSON.stringify(existing) !== JSON.stringify(wanted)) conflicts.push(values(setting, existing, wanted));
  };
  // What the stream keeps: one that keeps more than its spec is left so, one that keeps less is widened to it.
  const short: string[] = [];
  const more: string[] = [];
  const widening: Partial<StreamConfig> = {};
  for (const kept of keptSettings(config, spec)) {
    if (kept.reach === "other") conflicts.push(values(kept.setting, kept.existing, kept.wanted));
    else if (kept.reach === "more") more.push(values(kept.setting, kept.existing, kept.wanted));
    else if (kept.reach === "less") {
      short.push(values(kept.setting, kept.existing, kept.wanted));
      Object.assign(widening, kept.widen);
    }
  }
  // Said at each start, so that the operator hears of the narrowing a contract left to them.
  const tellMore = () => {
    if (more.length === 0) return;
    logger?.info(
      { stream: spec.name, keepsMore: more },
      `stream ${spec.name} keeps more than its spec (${more.join("; ")}): left as it is, as provisioning never narrows a stream; ` +
        `the operator narrows it by hand once nothing needs what that drops (README "Breaking changes")`,
    );
    found.keepsMore.push(...more);
  };
  differs("storage", config.storage, spec.storage);
  // Work-queue or interest retention would delete events once one consumer took them: other consumers, replays and redeliveries need them kept.
  differs("retention", config.retention, RetentionPolicy.Limits);
  for (const setting of serverPublishingSettings) {
    const existing = (config as unknown as Record<string, unknown>)[setting];
    if (existing !== undefined && existing !== null && !(Array.isArray(existing) && existing.length === 0)) conflicts.push(`${setting}: existing ${JSON.stringify(existing)}, wanted none`);
  }
  if (conflicts.length > 0) throw new StreamConflictError(spec.name, conflicts);
  const shortOfSpecSaid = (why: string) => `stream ${spec.name} keeps less than its spec (${short.join("; ")}), and ${why}`;
  const shortOfSpec = (why: string, cause?: unknown) => new StreamShortOfSpecError(shortOfSpecSaid(why), cause === undefined ? undefined : { cause });
  if (foreign) {
    // Another service's, or the dead letter stream, which is no service's own.
    if (short.length > 0) throw shortOfSpec(`it is not this service's to widen: ${provisionHint}`);
    tellMore();
    return allowsAtomic(info);
  }
  if (short.length > 0) {
    try {
      info = await jsm.streams.update(spec.name, widening);
    } catch (err) {
      if (permissionDenied(err)) throw shortOfSpec(`this NATS user may not widen it: ${provisionHint}`, err);
      if (apiErrorCode(err) === subjectsOfAnotherStream) {
        throw new StreamSubjectsHeldError(shortOfSpecSaid(`nats-server refuses to widen it: ${await withOverlapNamed(jsm, spec, err)}`), spec.name, { cause: err });
      }
      throw new Error(`widening stream ${spec.name} to its spec (${short.join("; ")}) failed: ${(err as Error).message}`, { cause: err });
    }
    logger?.info({ stream: spec.name, widened: short }, `stream ${spec.name} widened to its spec, which keeps more (${short.join("; ")})`);
    found.widened.push(...short);
  }
  tellMore();
  /** Brings one setting in line; where this user may not change streams, says so and goes on with the stream as it is. */
  const update = async <T>(setting: string, change: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await change();
    } catch (err) {
      if (!permissionDenied(err)) throw err;
      logger?.warn({ stream: spec.name, setting }, `stream ${spec.name}'s ${setting} differs from its spec, and this NATS user may not change it; ${provisionHint}`);
      return undefined;
    }
  };
  await ensureMessageLimit(jsm, spec, config, operator, logger, found, update);
  if ((config.description ?? "") !== (spec.description ?? "")) {
    if (operator) await update("description", () => jsm.streams.update(spec.name, { description: spec.description ?? "" }));
    else logger?.info({ stream: spec.name, description: config.description ?? "" }, `stream ${spec.name}'s description differs from its contract's: left as it is, as a service never rewrites it; ${operatorSets}`);
  }
  let atomicAllowed = allowsAtomic(info);
  if (atomic && !atomicAllowed) {
    try {
      const updated = await update("allow_atomic", () => jsm.streams.update(spec.name, { allow_atomic: true } as NewerStreamConfig as Partial<StreamConfig>));
      if (updated) atomicAllowed = allowsAtomic(updated);
    } catch (err) {
      throw new Error(`allowing atomic batch publish on stream ${spec.name} failed: ${(err as Error).message}`, { cause: err });
    }
  }
  if (config.num_replicas === spec.replicas) return atomicAllowed;
  // A standalone server's stream info names no cluster. Never ask one to move replicas: nats-server 2.9 refuses
  // the update but writes the new replicas to the stream's metadata, and cannot load the stream after a restart.
  if (!info.cluster?.name) {
    if (config.num_replicas === 1) logger?.warn({ stream: spec.name, declaredReplicas: spec.replicas, replicas: 1 }, standaloneWarning(spec));
    return atomicAllowed;
  }
  if (config.num_replicas > spec.replicas && !operator) {
    logger?.info(
      { stream: spec.name, replicas: config.num_replicas, declaredReplicas: spec.replicas },
      `stream ${spec.name} has ${config.num_replicas} replicas, more than the ${spec.replicas} its contract declares: left so, as a service never lowers a stream's replicas; ${operatorSets}`,
    );
    return atomicAllowed;
  }
  await update("num_replicas", () => moveReplicas(jsm, spec, config.num_replicas, logger, found));
  return atomicAllowed;
}

/** JetStream's max_msg_size for a limit of `bytes`: -1, none, for 0. */
const maxMsgSizeOf = (bytes: number): number => (bytes > 0 ? bytes : -1);

/** A max_msg_size as said in logs and provisioning's summary. */
const maxMsgSizeSaid = (size: number): string => (size > 0 ? `${size}` : "none");

/**
 * Gives an existing stream its spec's max_msg_size (maxMessageBytes), which
 * only refuses messages published from then on: those it holds stay. A
 * larger one (or none) is set by whoever may change the stream, logged as
 * widening is, since events the contract allows would be refused below it.
 * A smaller one only by the operator (`operator`), said in its summary; a
 * service leaves a larger limit so and says so at info: during a rolling
 * deploy an older build would otherwise lower the limit a newer contract
 * raised, and the newer build's events would be refused. A limit the
 * operator raised by hand is lowered to the contract's at their next
 * provisioning all the same: it follows from the contract, and a payload
 * over it is one consumers dead-letter for its size anyway; more room is
 * given by the contract. Where the spec has no say (no maxMessageBytes),
 * nothing is done.
 */
async function ensureMessageLimit(
  jsm: JetStreamManager,
  spec: StreamSpec,
  config: StreamConfig,
  operator: boolean,
  logger: Logger | undefined,
  found: FoundSettings,
  update: <T>(setting: string, change: () => Promise<T>) => Promise<T | undefined>,
): Promise<void> {
  if (spec.maxMessageBytes === undefined) return;
  const existing = maxMsgSizeOf(config.max_msg_size ?? -1);
  const wanted = maxMsgSizeOf(spec.maxMessageBytes);
  if (existing === wanted) return;
  const said = `max_msg_size (bytes): existing ${maxMsgSizeSaid(existing)}, wanted ${maxMsgSizeSaid(wanted)}`;
  const takes = (size: number) => (size < 0 ? Number.POSITIVE_INFINITY : size);
  const raise = takes(wanted) > takes(existing);
  if (!raise && !operator) {
    logger?.info(
      { stream: spec.name, maxMsgSize: existing, declaredMaxMsgSize: wanted },
      `stream ${spec.name} takes larger messages than its contract allows (${said}): left so, as a service never lowers a stream's limit; ${operatorSets}`,
    );
    return;
  }
  const changed = await update("max_msg_size", async () => {
    try {
      return await jsm.streams.update(spec.name, { max_msg_size: wanted });
    } catch (err) {
      if (permissionDenied(err)) throw err;
      throw new Error(`setting stream ${spec.name}'s max_msg_size to its spec's (${said}) failed: ${(err as Error).message}`, { cause: err });
    }
  });
  if (!changed) return;
  if (raise) {
    logger?.info({ stream: spec.name, widened: [said] }, `stream ${spec.name} widened to its spec, which takes larger messages (${said})`);
    found.widened.push(said);
  } else found.lowered.push(said);
}

/**
 * The server's reason for refusing `spec`'s stream, naming, where it is that
 * another stream holds some of its subjects, that stream and its subjects
 * (nats-server names neither): a stream keeps the subjects a newer contract
 * dropped until the operator narrows it by hand.
 */
async function withOverlapNamed(jsm: JetStreamManager, spec: StreamSpec, err: unknown): Promise<string> {
  const reason = (err as Error).message;
  if (apiErrorCode(err) !== subjectsOfAnotherStream) return reason;
  const holders = new Map<string, readonly string[]>();
  try {
    for (const subject of spec.subjects) {
      for await (const name of jsm.streams.names(subject)) {
        if (name !== spec.name && !holders.has(name)) holders.set(name, (await jsm.streams.info(name)).config.subjects ?? []);
      }
    }
  } catch {
    return reason; // This user may not list the streams: the server's reason alone.
  }
  if (holders.size === 0) return reason;
  const named = [...holders].map(([name, subjects]) => `stream ${name} holds ${subjects.join(", ")}`).join("; ");
  return (
    `${reason} (${named}); a subject belongs to one stream only: where a contract moved these subjects from that stream, ` +
    `it keeps them until the operator narrows it by hand (nats stream edit), once nothing needs them there (README "Breaking changes")`
  );
}

/**
 * Moves an existing stream of a cluster from `existing` replicas to its spec's; a move up is logged, a move down goes
 * into `found.lowered` alone, for the operator's provisioning to say once (it said it twice, logged and in its summary).
 */
async function moveReplicas(jsm: JetStreamManager, spec: StreamSpec, existing: number, logger: Logger | undefined, found: FoundSettings): Promise<void> {
  try {
    await jsm.streams.update(spec.name, { num_replicas: spec.replicas });
  } catch (err) {
    throw new Error(`moving stream ${spec.name} from ${existing} to ${spec.replicas} replicas (as its spec declares) failed: ${(err as Error).message}`, { cause: err });
  }
  if (spec.replicas < existing) found.lowered.push(`num_replicas: existing ${existing}, wanted ${spec.replicas}`);
  else logger?.info({ stream: spec.name, from: existing, to: spec.replicas }, `stream ${spec.name} moved from ${existing} to ${spec.replicas} replicas, as its spec declares`);
}

/**
 * The durable consumers' max_deliver on the server: none (-1). A message
 * delivered max_deliver times and then nak'd, or left to its ack_wait, is
 * never delivered again, and nobody is told but an advisory: a consumer that
 * stopped, died, or could not reach its database at that delivery would leave
 * the event behind, neither handled nor dead-lettered. The consumer counts
 * the attempts itself (the spec's maxDeliver, see retry.ts) and ends each
 * event with an ack or a dead letter.
 */
const serverMaxDeliver = -1;

/** Makes or updates the consumer; resolves with its acknowledgement floor's stream sequence, 0 while it has acknowledged nothing. */
async function ensureConsumer(jsm: JetStreamManager, spec: ConsumerSpec, logger: Logger | undefined): Promise<number> {
  const where = `consumer ${spec.durable} on stream ${spec.stream}`;
  const maxDeliver = serverMaxDeliver;
  let info = await consumerInfo(jsm, spec);
  if (!info) {
    try {
      await jsm.consumers.add(spec.stream, {
        durable_name: spec.durable,
        description: `consumes ${spec.eventType}`,
        filter_subject: spec.filterSubject,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        max_deliver: maxDeliver,
        ack_wait: nanos(spec.ackWaitMs),
      });
      return 0;
    } catch (err) {
      info = await consumerInfo(jsm, spec);
      const limit = info ? undefined : await limitRefusal(jsm, err);
      if (limit) throw new JetStreamLimitError(`${where} does not exist, and nats-server refuses to create it: ${limit}`, spec.stream, { cause: err });
      if (!info) throw new Error(`creating ${where} (filter ${spec.filterSubject}) failed: ${(err as Error).message}`, { cause: err });
    }
  }
  const { config } = info;
  // The durable name is the contract's: the operator's way out is to delete the consumer, which the service then makes
  // again from the stream's first event.
  const remake =
    `: delete it (nats consumer rm ${spec.stream} ${spec.durable}, as a NATS user that may: neither the services' users nor the operator's do) ` +
    `and the service makes it again as it starts, from the stream's first event ` +
    `(its inbox skips the events it handled within its retention, 7 days by default; older ones would be handled again); ` +
    `its durable name comes from the contract`;
  if (config.deliver_subject) throw new ConsumerConflictError(`${where} exists as a push consumer, and the service reads through a pull consumer${remake}`);
  if (config.ack_policy !== AckPolicy.Explicit) throw new ConsumerConflictError(`${where} exists with ack policy ${config.ack_policy}, and the service acks each event (explicit)${remake}`);
  if ((config.filter_subject ?? "") !== spec.filterSubject) {
    throw new ConsumerConflictError(
      `${where} exists with filter subject ${JSON.stringify(config.filter_subject ?? "")}, wanted ${JSON.stringify(spec.filterSubject)}; ` +
        `a durable consumer's filter cannot be changed in place: give the consumer a new durable name, or delete the old one`,
    );
  }
  warnOfAbandoned(info, spec, logger);
  if (config.max_deliver !== maxDeliver || millis(config.ack_wait ?? 0) !== spec.ackWaitMs) {
    try {
      await jsm.consumers.update(spec.stream, spec.durable, { max_deliver: maxDeliver, ack_wait: nanos(spec.ackWaitMs) });
    } catch (err) {
      throw new Error(`updating ${where} to max_deliver ${maxDeliver} (none) and ack_wait ${spec.ackWaitMs} ms failed: ${(err as Error).message}`, { cause: err });
    }
  }
  // Told by the consumer's own sequence, one per delivery: the stream sequence of a filtered consumer can move past
  // other subjects' events it never had (see warnOfAbandoned).
  return info.ack_floor.consumer_seq > 0 ? info.ack_floor.stream_seq : 0;
}

/**
 * A consumer with nothing pending whose acknowledgements stop short of what
 * it delivered holds events the server gave up on: delivered max_deliver
 * times (as earlier versions set it) and never acknowledged, so neither
 * handled nor dead-lettered, and never delivered again. Says so, with the
 * stream sequences and the command that has them delivered again.
 */
function warnOfAbandoned(info: ConsumerInfo, spec: ConsumerSpec, logger: Logger | undefined): void {
  const floor = info.ack_floor.stream_seq;
  const last = info.delivered.stream_seq;
  // Told by the consumer's own sequence, one per delivery: a filtered consumer's delivered stream sequence also
  // moves past the other subjects' events it passed over (on a cluster), which were never delivered to it.
  if (!logger || info.num_pending > 0 || info.num_ack_pending > 0 || info.ack_floor.consumer_seq >= info.delivered.consumer_seq) return;
  logger.warn(
    { consumer: spec.durable, stream: spec.stream, ackFloor: floor, delivered: last },
    `consumer ${spec.durable} on stream ${spec.stream} holds events the server stopped delivering (a max_deliver reached): ` +
      `at least one of stream sequences ${floor + 1} to ${last} was neither acknowledged nor dead-lettered; to have them delivered again, ` +
      `run \`npx concord consumer redeliver ${spec.durable} --from ${floor + 1} --to ${last}\` (README "Delivery guarantees"), ` +
      `which publishes them again while the service runs; the inbox skips those already handled`,
  );
}

async function streamInfo(jsm: JetStreamManager, name: string): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(name);
  } catch (err) {
    if ((err as NatsError).api_error?.err_code === streamNotFound) return undefined;
    throw new Error(`reading stream ${name} failed: ${(err as Error).message}`, { cause: err });
  }
}

async function consumerInfo(jsm: JetStreamManager, spec: ConsumerSpec): Promise<ConsumerInfo | undefined> {
  try {
    return await jsm.consumers.info(spec.stream, spec.durable);
  } catch (err) {
    const code = (err as NatsError).api_error?.err_code;
    if (code === consumerNotFound) return undefined;
    if (code === streamNotFound) {
      throw new Error(`consumer ${spec.durable} reads stream ${spec.stream}, which does not exist; provision the stream first (ensureStreams)`, { cause: err });
    }
    throw new Error(`reading consumer ${spec.durable} on stream ${spec.stream} failed: ${(err as Error).message}`, { cause: err });
  }
}

/** The duplicate window the server will hold for a stream of `spec`: 0 means its 2-minute default, never longer than max age. */
export function wantedDuplicateWindowMs(spec: Pick<StreamSpec, "maxAgeMs" | "duplicateWindowMs">): number {
  const window = spec.duplicateWindowMs || serverDefaultDuplicateWindowMs;
  return spec.maxAgeMs > 0 ? Math.min(window, spec.maxAgeMs) : window;
}

/** Why `name` cannot name a stream or a durable consumer, or undefined when it can. */
export const nameProblem = (name: unknown): string | undefined =>
  typeof name !== "string" || name === "" || /[.*>\s/\\]/.test(name) ? `${JSON.stringify(name)} is not a valid name (non-empty, no ".", "*", ">", "/", "\\" or white space)` : undefined;

/** Why `subject` is not a valid subject or filter (tokens non-empty, no white space, wildcards alone, ">" last). */
export function subjectProblem(subject: unknown): string | undefined {
  if (typeof subject !== "string" || subject === "") return `${JSON.stringify(subject)} is not a subject`;
  const tokens = subject.split(".");
  for (const [i, token] of tokens.entries()) {
    if (token === "" || /\s/.test(token) || (token !== "*" && token !== ">" && /[*>]/.test(token)) || (token === ">" && i < tokens.length - 1)) {
      return `${JSON.stringify(subject)} is not a valid subject (token ${i + 1})`;
    }
  }
  return undefined;
}

const nonNegativeInteger = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0;

/** Throws, naming the stream, when a stream spec cannot be provisioned as given. */
export function validateStreamSpec(spec: StreamSpec): void {
  const problems: string[] = [];
  const nameIssue = nameProblem(spec.name);
  if (nameIssue) problems.push(`name ${nameIssue}`);
  if (!Array.isArray(spec.subjects) || spec.subjects.length === 0) problems.push("subjects is empty");
  else problems.push(...spec.subjects.map(subjectProblem).filter((p): p is string => p !== undefined));
  if (spec.storage !== "file" && spec.storage !== "memory") problems.push(`storage ${JSON.stringify(spec.storage)} is neither "file" nor "memory"`);
  if (!Number.isInteger(spec.replicas) || spec.replicas < 1 || spec.replicas > 5) problems.push(`replicas ${spec.replicas} is not 1..5`);
  if (!nonNegativeInteger(spec.maxAgeMs)) problems.push(`maxAgeMs ${spec.maxAgeMs} is not a whole number of ms >= 0`);
  if (!nonNegativeInteger(spec.duplicateWindowMs)) problems.push(`duplicateWindowMs ${spec.duplicateWindowMs} is not a whole number of ms >= 0`);
  // JetStream holds max_msg_size in a 32-bit integer.
  if (spec.maxMessageBytes !== undefined && (!nonNegativeInteger(spec.maxMessageBytes) || spec.maxMessageBytes > 2 ** 31 - 1)) {
    problems.push(`maxMessageBytes ${spec.maxMessageBytes} is not a whole number of bytes from 0 to 2147483647`);
  }
  if (problems.length > 0) throw new Error(`invalid stream spec ${String(spec.name)}: ${problems.join("; ")}`);
}

/** Throws, naming the consumer, when a consumer spec cannot be provisioned as given. */
export function validateConsumerSpec(spec: ConsumerSpec): void {
  const problems: string[] = [];
  const durableIssue = nameProblem(spec.durable);
  if (durableIssue) problems.push(`durable ${durableIssue}`);
  const streamIssue = nameProblem(spec.stream);
  if (streamIssue) problems.push(`stream ${streamIssue}`);
  const filterIssue = subjectProblem(spec.filterSubject);
  if (filterIssue) problems.push(`filterSubject ${filterIssue}`);
  if (typeof spec.eventType !== "string" || spec.eventType === "") problems.push("eventType is empty");
  if (!Number.isInteger(spec.maxDeliver) || spec.maxDeliver < 1) problems.push(`maxDeliver ${spec.maxDeliver} is not a whole number >= 1`);
  if (!Array.isArray(spec.backoffMs) || !spec.backoffMs.every(nonNegativeInteger)) problems.push(`backoffMs ${JSON.stringify(spec.backoffMs)} is not a list of whole numbers of ms >= 0`);
  if (!Number.isInteger(spec.ackWaitMs) || spec.ackWaitMs <= 0) problems.push(`ackWaitMs ${spec.ackWaitMs} is not a whole number of ms > 0`);
  if (problems.length > 0) throw new Error(`invalid consumer spec ${String(spec.durable)}: ${problems.join("; ")}`);
}
