/**
 * `concord`: the operator's command for a running system. Looks at the
 * services' health, consumers' lag and outboxes, follows the events, and
 * looks after the dead letter stream and the parked outbox events.
 */
import { existsSync, realpathSync, rmSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs, type ParseArgsConfig } from "node:util";
import type { NatsConnection } from "nats";
import { allEvents } from "../gen/ts/concord_streams.js";
import { deadLetterStreamSpec, subjectProblem } from "../platform/events/index.js";
import { connectNats, defaultNatsUrl, endProcess, natsUrlProblem, exitOnSignals, exitQuietlyOnClosedOutput, reason, seedFileToUse, watchEvents } from "./event-watch.js";
import { emptyDatabaseOption, optionsElsewhere, parseArgsProblem, usageProblemLine } from "./parse-args-problem.js";
import { type DeadLetter, type DeadLetterFilter, deleteDeadLetters, getDeadLetter, matchesFilter, purgeDeadLetters, readDeadLetters } from "./concord/dead-letters.js";
import { type Refusals, replayChosenDeadLetters } from "./concord/dead-letter-replay.js";
import { helps, usage } from "./concord/help.js";
import { payloadPrinter } from "./concord/readable-payload.js";
import { abandonedRange, durableConsumers, findConsumer, PastInboxError, redeliver, type SequenceRange } from "./concord/redeliver.js";
import { postgresOnlySaid, printStatus, serviceTargets, targetOptions } from "./concord/status.js";
import { type InboxRetention, inboxRetentionOf } from "./concord/inbox-retention.js";
import { differencesSaid, ProvisionRefused, provisionStreams } from "./concord/provision.js";
import { deleteStaleConsumers, inUse, inUseWhileWatched, staleConsumers, watchMs } from "./concord/stale-consumers.js";
import { createLogger } from "../platform/log/index.js";
import { noStartRanIn, otherThanRunningStartNote, outboxCommand, outboxOptions, serviceDatabase, unusedDatabaseUrlNote } from "./outbox.js";
import { backupSqlite, besideADatabase, type ConsumerPosition, GivenRefused, consumerPositions, consumersOf, consumersNotRecorded, notABackup, ownershipProblem, readBackupRecord, recordFileOf, restoreSqlite, sourceProblem, toReplaceIt, withAdvice, writeBackupRecord } from "./concord/database-backup.js";
import { dataDir as dataDirOf } from "./client-security.js";
import { isPostgresUrl } from "../platform/sql/index.js";
import { urlWithoutSecrets } from "../platform/config/index.js";
import { backupPostgres, postgresProgram, readDump, readPostgresDatabase, restorePostgres } from "./concord/postgres-backup.js";
import { eitherOf, isServiceName, serviceNames } from "./services.js";
import { tracesCommand, tracesOptions, usageOf as usageOfTraces } from "./traces.js";

export { endProcess, exitQuietlyOnClosedOutput };

/** How long `status` waits for NATS to greet it: it is a quick look, and says what it found without NATS too. */
const statusNatsTimeoutMs = 5_000;

/**
 * Bad usage: exit status 2, with one line naming the problem and where the
 * usage is (`npx concord <command> --help`, of the command, the group, or
 * none for `concord` itself), not the whole help, which hid the problem
 * above a screenful.
 */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command: string,
  ) {
    super(message);
  }
}

type Options = NonNullable<ParseArgsConfig["options"]>;
const helpOption: Options = { help: { type: "boolean", short: "h" } };
const nats: Options = { nats: { type: "string" }, ...helpOption };
const filters: Options = { consumer: { type: "string" }, subject: { type: "string" }, type: { type: "string" } };

/** The commands parsed here that never connect to NATS: they refuse --nats, as any option of other commands. */
const withoutNats: ReadonlySet<string> = new Set(["database restore"]);

/** The options of each command parsed here, besides --help and, but for those `withoutNats`, --nats. */
const optionsOf: Readonly<Record<string, Options>> = {
  status: targetOptions,
  "events tail": { all: { type: "boolean" }, subject: { type: "string" }, type: { type: "string" }, full: { type: "boolean" } },
  "dlq list": { ...filters, from: { type: "string" }, limit: { type: "string" }, full: { type: "boolean" } },
  "dlq show": { full: { type: "boolean" } },
  "dlq replay": { ...filters, all: { type: "boolean" }, "dry-run": { type: "boolean" }, rate: { type: "string" }, "past-inbox": { type: "boolean" }, "inbox-retention": { type: "string" } },
  "dlq purge": { yes: { type: "boolean" } },
  "consumer redeliver": { from: { type: "string" }, to: { type: "string" }, "dry-run": { type: "boolean" }, "past-inbox": { type: "boolean" }, "inbox-retention": { type: "string" } },
  "consumer stale": { delete: { type: "boolean" } },
  "database backup": { database: { type: "string" } },
  "database restore": { database: { type: "string" } },
  "streams provision": {},
};

/** Every command's options as it parses them, in the order of `concord --help`: the outbox and traces tools parse theirs. */
const everyOptionOf: Readonly<Record<string, Options>> = {
  ...Object.fromEntries(Object.entries(optionsOf).map(([command, options]) => [command, { ...(withoutNats.has(command) ? helpOption : nats), ...options }])),
  "outbox parked": outboxOptions,
  ...Object.fromEntries(Object.entries(tracesOptions).map(([command, options]) => [`traces ${command}`, options])),
};

/**
 * For each option, the commands that take it, but `command` (and, for a group
 * that parses its own, as traces does, the group's commands): the first as
 * `npx concord dlq replay`, the rest without the program, as `events tail`.
 */
const elsewhereOf = (command: string): Record<string, string[]> => optionsElsewhere(everyOptionOf, "npx concord", (other) => other === command || other.startsWith(`${command} `));

/**
 * The command's options and operands; a mistyped option is named with the one
 * it likely meant, an option of other commands with those commands, and a
 * NATS URL (--nats, else NATS_URL) that is not one as the services say it.
 */
function parse(command: string, args: string[]) {
  const all = everyOptionOf[command]!;
  let parsed;
  try {
    parsed = parseArgs({ args, options: all, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(parseArgsProblem(err, Object.keys(all), elsewhereOf(command)), command);
  }
  // Before anything is done: nats://host:notaport failed only once connecting, a database backup taken by then.
  const natsProblem = !parsed.values.help && Object.hasOwn(all, "nats") ? natsUrlProblem(parsed.values.nats as string | undefined) : undefined;
  if (natsProblem) throw new UsageError(natsProblem, command);
  return parsed;
}

/** Connects for the length of `work`: as the operator to change dead letters, as the observer to read. */
async function withNats<T>(url: string | undefined, work: (nc: NatsConnection) => Promise<T>, user: "observer" | "operator" = "observer"): Promise<T> {
  const nc = await connectNats(url ?? defaultNatsUrl(), "concord", seedFileToUse(undefined, user));
  try {
    return await work(nc);
  } finally {
    await nc.close();
  }
}

/** As withNats, as the operator: replaying and purging change dead letters, which the observer may not. */
function withOperator<T>(url: string | undefined, work: (nc: NatsConnection) => Promise<T>): Promise<T> {
  return withNats(url, work, "operator");
}

const eventTypes: string[] = allEvents.map((e) => e.typeName).sort();

/**
 * Refuses (bad usage) a --subject that is not a NATS subject or filter, and
 * a --type the contracts do not declare, but for the dlq commands: a dead
 * letter's event may be of any type (one filed for its wrong ce-type, say),
 * and one that matches none is said so after (unknownFilterName).
 */
function checkSubjectAndType(values: Record<string, unknown>, command: string): void {
  if (values.subject !== undefined) {
    const problem = subjectProblem(String(values.subject));
    if (problem) throw new UsageError(`--subject: ${problem}: tokens are separated by single dots, "*" stands for one token, a final ">" for the rest`, command);
  }
  if (values.type !== undefined && !command.startsWith("dlq ") && !eventTypes.includes(String(values.type))) {
    throw new UsageError(`--type: no event type ${JSON.stringify(values.type)} in the contracts; they declare ${eventTypes.join(", ")}`, command);
  }
}

function filterOf(values: Record<string, unknown>, command: string): DeadLetterFilter | undefined {
  checkSubjectAndType(values, command);
  const filter = { ...(values.consumer !== undefined && { consumer: String(values.consumer) }), ...(values.subject !== undefined && { subject: String(values.subject) }), ...(values.type !== undefined && { type: String(values.type) }) };
  return Object.keys(filter).length > 0 ? filter : undefined;
}

/**
 * Says, failing the command, that the consumer a filter names does not exist,
 * when no dead letter matched and none of the streams has it, or that its
 * type is none the contracts declare: a name mistyped would otherwise match
 * nothing in silence. Resolves with the exit status: 1 when one is unknown,
 * else 0.
 */
async function unknownFilterName(nc: NatsConnection, filter: DeadLetterFilter | undefined, command: string): Promise<number> {
  if (filter?.type !== undefined && !eventTypes.includes(filter.type)) {
    console.error(`concord ${command}: no dead letter of type ${JSON.stringify(filter.type)}, which the contracts do not declare; they declare ${eventTypes.join(", ")}`);
    return 1;
  }
  if (filter?.consumer === undefined) return 0;
  const durables = await durableConsumers(await nc.jetstreamManager());
  if (durables.includes(filter.consumer)) return 0;
  console.error(`concord ${command}: there is no consumer ${JSON.stringify(filter.consumer)}; the durable consumers are ${durables.join(", ") || "none (have the services started?)"}`);
  return 1;
}

function sequenceOf(raw: string, command: string, flag?: string): number {
  // Past 2^53 a number is not the one typed: `dlq show 9007199254740993` read dead letter 9007199254740992.
  if (!/^[1-9]\d{0,15}$/.test(raw) || !Number.isSafeInteger(Number(raw))) throw new UsageError(`${flag ? `${flag}: ` : ""}${JSON.stringify(raw)} is not a dead letter sequence (a whole number from 1 to ${Number.MAX_SAFE_INTEGER})`, command);
  return Number(raw);
}

/** A dead letter as `dlq list` prints it: without its raw bytes and headers. */
function summary(letter: DeadLetter) {
  const { headers: _headers, data: _data, ...rest } = letter;
  return rest;
}

/**
 * The inboxes' retention a replay or a redelivery checks events' age
 * against, or undefined with --past-inbox, which checks none; bad usage
 * when both are given, or the retention is not one the services take.
 */
function retentionToCheck(values: Record<string, unknown>, command: string): InboxRetention | undefined {
  const given = values["inbox-retention"] as string | undefined;
  if (values["past-inbox"] === true) {
    if (given !== undefined) throw new UsageError("--past-inbox checks no event's age, and --inbox-retention sets the age to check: give one of them", command);
    return undefined;
  }
  try {
    return inboxRetentionOf(given, dataDirOf());
  } catch (err) {
    throw new UsageError((err as Error).message, command);
  }
}

/** How `command` prints payloads: cut to a readable size on a terminal, unless --full. */
function printerOf(command: string, values: Record<string, unknown>) {
  return payloadPrinter(`concord ${command}`, { terminal: process.stdout.isTTY === true, whole: values.full === true, note: (line) => console.error(line) });
}

/** How many dead letters `dlq list` prints unless given --limit: a screenful or two, not the thousands a flood files. */
const listLimit = 100;

async function dlqList(args: string[]): Promise<number> {
  const command = "dlq list";
  const { values, positionals } = parse(command, args);
  if (values.help) return help(command);
  if (positionals.length > 0) throw new UsageError(`unexpected ${positionals.join(" ")}`, command);
  const filter = filterOf(values, command);
  const from = values.from === undefined ? 1 : sequenceOf(String(values.from), command, "--from");
  const limit = values.limit === undefined ? listLimit : wholeNumberOf(String(values.limit), "--limit", command);
  const readable = printerOf(command, values);
  return withNats(values.nats as string | undefined, async (nc) => {
    let count = 0;
    let first: number | undefined;
    let last: number | undefined;
    let next: number | undefined;
    for await (const letter of readDeadLetters(nc, from)) {
      if (filter && !matchesFilter(letter, filter)) continue;
      // One more that matches is read, not printed: the listing then says where the next page starts.
      if (count === limit) {
        next = letter.seq;
        break;
      }
      count++;
      first ??= letter.seq;
      last = letter.seq;
      console.log(JSON.stringify(readable(summary(letter))));
    }
    if (count === 0 && (await unknownFilterName(nc, filter, command))) return 1;
    const range = first === undefined || first === last ? "" : ` (sequences ${first} to ${last})`;
    if (next === undefined) {
      console.error(`concord dlq list: ${count} dead letter(s)${from > 1 ? ` from sequence ${from} on` : ""}${range}`);
      return 0;
    }
    const again = ["npx concord dlq list", "--from", String(next), ...optionArgs(values, ["consumer", "subject", "type", "limit", "nats"]), ...(values.full === true ? ["--full"] : [])].join(" ");
    console.error(`concord dlq list: the first ${count} dead letter(s)${from > 1 ? ` from sequence ${from} on` : ""}${range}; more follow: \`${again}\` lists the next ${limit}`);
    return 0;
  });
}

/** The options among `names` given in `values`, as they would be typed again in a shell. */
function optionArgs(values: Record<string, unknown>, names: readonly string[]): string[] {
  return names.flatMap((name) => (values[name] === undefined ? [] : [`--${name}`, shellWord(String(values[name]))]));
}

/** `word` as one shell word: as it is when nothing in it is special to a shell, else in single quotes. */
function shellWord(word: string): string {
  return /^[\w.,:/@%+=-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** A whole number from 1 up, given to `flag`; bad usage otherwise. */
function wholeNumberOf(raw: string, flag: string, command: string): number {
  if (!/^[1-9]\d{0,15}$/.test(raw) || !Number.isSafeInteger(Number(raw))) throw new UsageError(`${flag}: ${JSON.stringify(raw)} is not a whole number from 1 to ${Number.MAX_SAFE_INTEGER}`, command);
  return Number(raw);
}

/**
 * Replays a second from `--rate`: `N/s`, N above 0 and below a million, with
 * at most 3 decimals (0.5/s is one every 2 s). Anything else is refused on
 * one line, a number without its unit too: no rate is read in a unit it was
 * not meant in.
 */
function rateOf(given: string): number {
  const match = /^(\d{1,6}(?:\.\d{1,3})?)\/s$/.exec(given);
  const perSecond = match ? Number(match[1]) : 0;
  if (perSecond > 0) return perSecond;
  const why = /^\d+(\.\d+)?$/.test(given) ? "; the unit, /s, is part of it" : "";
  throw new UsageError(`--rate takes replays per second as N/s, N above 0 and below a million with at most 3 decimals (50/s, or 0.5/s for one every 2 s), not ${JSON.stringify(given)}${why}`, "dlq replay");
}

async function dlqReplay(args: string[]): Promise<number> {
  const command = "dlq replay";
  const { values, positionals } = parse(command, args);
  if (values.help) return help(command);
  const seqs = positionals.map((p) => sequenceOf(p, command));
  const filter = filterOf(values, command);
  const ways = [seqs.length > 0, values.all === true, filter !== undefined].filter(Boolean).length;
  if (ways !== 1) throw new UsageError("name the dead letters to replay: their sequences, --all, or a filter (one of these)", command);
  const perSecond = values.rate === undefined ? undefined : rateOf(String(values.rate));
  const dryRun = values["dry-run"] === true;
  const retention = retentionToCheck(values, command);
  const stop = stopOnSignals(command, "the dead letter in hand is replayed", "which may leave it replayed and not deleted");
  return withOperator(values.nats as string | undefined, async (nc) => {
    let lastProgress = performance.now();
    // It rejects only in the first pass, before anything is replayed.
    const outcome = await replayChosenDeadLetters(nc, seqs.length > 0 ? { seqs } : { filter }, {
      dryRun,
      stop,
      ...(retention && { notBefore: new Date(Date.now() - retention.ms), retention: retention.said }),
      ...(perSecond !== undefined && { perSecond }),
      refused: (letter, refusal) => {
        console.log(JSON.stringify({ notReplayed: letter.seq, to: letter.subject, type: letter.type, id: letter.id, why: refusal }));
        console.error(`concord dlq replay: ${refusal}`);
      },
      wouldReplay: (letter) => console.log(JSON.stringify({ wouldReplay: letter.seq, to: letter.subject, type: letter.type, id: letter.id, consumer: letter.consumer, reason: letter.reason })),
      betweenPasses: async () => {
        lastProgress = performance.now();
      },
      replayed: (letter) => console.log(JSON.stringify({ replayed: letter.seq, to: letter.subject, type: letter.type, id: letter.id })),
      skipped: (_letter, why) => console.error(`concord dlq replay: ${why}; skipped`),
      progress: (done, skipped, chosen, refused) => {
        if (chosen > 1 && (performance.now() - lastProgress >= 1_000 || done + skipped + refused === chosen)) {
          lastProgress = performance.now();
          console.error(`concord dlq replay: ${done} of ${chosen} replayed${skipped > 0 ? `, ${skipped} skipped` : ""}${refused > 0 ? `, ${refused} refused at their turn` : ""}`);
        }
      },
    }).catch((err: unknown) => err as Error);
    if (outcome instanceof Error) {
      console.error(`concord dlq replay: ${reason(outcome)}; nothing replayed${dryRun ? " (--dry-run)" : ""}`);
      return 1;
    }
    if (outcome.kind === "none") {
      if (await unknownFilterName(nc, filter, command)) return 1;
      console.error("concord dlq replay: no dead letter matches; nothing replayed");
      return 0;
    }
    // A dead letter refused fails the run (exit 1) once the others are replayed: it is still there to see to.
    const refused = refusedNote(outcome);
    const status = outcome.refused > 0 ? 1 : 0;
    switch (outcome.kind) {
      case "checked":
        console.error(`concord dlq replay: would replay ${outcome.chosen} dead letter(s); nothing changed (--dry-run)${refused}`);
        return status;
      case "failed":
        console.error(`concord dlq replay: replaying dead letter ${outcome.seq} failed after ${outcome.replayed} of ${outcome.chosen}${skippedNote(outcome.skipped)}: ${reason(outcome.error)}${refused}`);
        return 1;
      case "replayed":
        console.error(`concord dlq replay: replayed ${outcome.replayed} dead letter(s) and deleted them from the dead letter stream${skippedNote(outcome.skipped)}${refused}`);
        return status;
      case "stopped":
        console.error(`concord dlq replay: stopped: replayed ${outcome.replayed} dead letter(s) and deleted them${skippedNote(outcome.skipped)}; the others are left in the dead letter stream${refused}`);
        return 130;
    }
  });
}

/**
 * A signal that Ctrl-C (or SIGTERM) aborts, for a command that goes through
 * many things to stop between two, saying how far it got; a second one
 * ends the process there, exit status 130.
 */
function stopOnSignals(command: string, inHand: string, atOnce: string): AbortSignal {
  const stop = new AbortController();
  const onSignal = () => {
    if (stop.signal.aborted) process.exit(130);
    console.error(`concord ${command}: stopping once ${inHand} (Ctrl-C again stops at once, ${atOnce})`);
    stop.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return stop.signal;
}

/** How a replay's last line counts the dead letters refused, each said above with why, and left in the dead letter stream. */
function refusedNote({ refused, pastInbox }: Refusals): string {
  if (refused === 0) return "";
  const past = pastInbox > 0 ? ` (give --past-inbox to replay the ${pastInbox} older than the inboxes' retention anyway, having checked that their effects are not there, or --inbox-retention the retention the services' inboxes keep)` : "";
  return `; ${refused} dead letter(s) cannot be replayed, said above with why (the "notReplayed" lines), and are left in the dead letter stream${past}`;
}

/** How a replay's last line counts the dead letters gone before their turn. */
function skippedNote(skipped: number): string {
  return skipped > 0 ? ` (${skipped} skipped: gone from the dead letter stream since they were checked, or replayed already by another run)` : "";
}

async function consumerRedeliver(args: string[]): Promise<number> {
  const command = "consumer redeliver";
  const { values, positionals } = parse(command, args);
  if (values.help) return help(command);
  if (positionals.length !== 1) throw new UsageError("name one durable consumer", command);
  const [durable] = positionals;
  if (values.to !== undefined && values.from === undefined) throw new UsageError("--to needs a --from", command);
  const from = values.from === undefined ? undefined : streamSequenceOf(String(values.from), "--from");
  const to = values.to === undefined ? undefined : streamSequenceOf(String(values.to), "--to");
  if (from !== undefined && to !== undefined && from > to) throw new UsageError(`--from ${from} is after --to ${to}`, command);
  const dryRun = values["dry-run"] === true;
  const retention = retentionToCheck(values, command);
  const stop = stopOnSignals(command, "the event in hand is published", "which may leave it published and not said so");
  return withOperator(values.nats as string | undefined, async (nc) => {
    const info = await findConsumer(await nc.jetstreamManager(), durable);
    // --from alone: up to the last event the consumer was given (a restore's redelivery, see "Backups and restores").
    const given: SequenceRange | undefined = from === undefined ? undefined : { from, to: to ?? info.delivered.stream_seq };
    if (given && to === undefined && given.to < given.from) {
      console.error(`concord consumer redeliver: ${durable} was given no event of stream ${info.stream_name} from sequence ${from} on (its last delivery is sequence ${given.to}); nothing published`);
      return 0;
    }
    const range = given ?? abandonedRange(info);
    if (typeof range === "string") {
      console.error(`concord consumer redeliver: ${range}; nothing published`);
      return given === undefined && info.num_ack_pending > 0 ? 1 : 0;
    }
    const where = `stream ${info.stream_name} sequences ${range.from} to ${range.to}`;
    const notBefore = retention && new Date(Date.now() - retention.ms);
    let count: number;
    let stoppedAt: number | undefined;
    try {
      ({ count, stoppedAt } = await redeliver(nc, info, range, {
        dryRun,
        stop,
        ...(notBefore && retention && { notBefore, retention: retention.said }),
        each: (e) => console.log(JSON.stringify(dryRun ? { wouldRedeliver: e.seq, to: e.subject, type: e.type, id: e.id } : { redelivered: e.seq, to: e.subject, type: e.type, id: e.id, ...(e.duplicate && { duplicate: true }) })),
        skipped: (seq, why) => console.error(`concord consumer redeliver: stream sequence ${seq} left out: ${why}`),
      }));
    } catch (err) {
      if (!(err instanceof PastInboxError)) throw err;
      console.error(`concord consumer redeliver: ${err.message}; nothing published (give --past-inbox to publish them anyway, having checked that their effects are not there, or --inbox-retention the retention the services' inboxes keep)`);
      return 1;
    }
    if (stoppedAt !== undefined) {
      const rest = `npx concord consumer redeliver ${durable} --from ${stoppedAt} --to ${range.to}${values.nats === undefined ? "" : ` --nats ${shellWord(String(values.nats))}`}`;
      console.error(
        dryRun
          ? `concord consumer redeliver: stopped before sequence ${stoppedAt}, ${count} event(s) of ${where} said up to there; nothing changed (--dry-run)`
          : stoppedAt === range.from
            ? `concord consumer redeliver: stopped while finding the events of ${where}; nothing published (\`${rest}\` publishes them)`
            : `concord consumer redeliver: stopped: published ${count} event(s) of ${where} again for ${durable}, those before sequence ${stoppedAt}; \`${rest}\` publishes the rest`,
      );
      return 130;
    }
    if (count === 0 && given) {
      // A range given by hand that holds nothing (mistyped, or past the stream's end) says what the stream does hold, in
      // place of "published 0 event(s) ...; its inbox skips those it handled already".
      const { state } = await (await nc.jetstreamManager()).streams.info(info.stream_name);
      const filters = info.config.filter_subjects?.length ? info.config.filter_subjects : [info.config.filter_subject || ">"];
      const holds = state.messages === 0 ? "it holds no events" : `it holds sequences ${state.first_seq} to ${state.last_seq}`;
      console.error(`concord consumer redeliver: stream ${info.stream_name} has no event on ${filters.join(", ")} (${durable}'s subject) in sequences ${range.from} to ${range.to}; ${holds}; nothing published`);
      return 0;
    }
    console.error(
      dryRun
        ? `concord consumer redeliver: would publish ${count} event(s) of ${where} again for ${durable}; nothing changed (--dry-run)`
        : `concord consumer redeliver: published ${count} event(s) of ${where} again for ${durable}; its inbox skips those it handled already`,
    );
    return 0;
  });
}

/** How long the database commands wait for NATS: they do their main work without it. */
const databaseNatsTimeoutMs = 5_000;

/**
 * The service and backup file a database command names, and the service's
 * database, a SQLite file or a PostgreSQL URL: --database, else where the
 * service keeps it (as the outbox tool finds it).
 */
function databaseArguments(command: string, args: string[]) {
  const { values, positionals } = parse(command, args);
  if (values.help) return { help: true as const };
  const [service, file, ...more] = positionals;
  if (!isServiceName(service)) throw new UsageError(service === undefined ? `name the service: ${eitherOf(serviceNames)}` : `unknown service ${JSON.stringify(service)}: expected ${eitherOf(serviceNames)}`, command);
  // An empty name made the backup's copy as .partial in the current folder, then failed to link it to "".
  if (file === undefined || file === "") throw new UsageError(file === "" ? "the backup file's name is empty" : "name the backup file", command);
  if (more.length > 0) throw new UsageError(`unexpected ${more.join(" ")}`, command);
  const emptyDatabase = emptyDatabaseOption(values, ["database"]);
  if (emptyDatabase) throw new UsageError(emptyDatabase, command);
  const dataDir = dataDirOf();
  const given = values.database as string | undefined;
  const database = given ?? serviceDatabase(service, dataDir);
  const note = given === undefined ? (unusedDatabaseUrlNote(service) ?? otherThanRunningStartNote(service, dataDir)) : undefined;
  if (note) console.error(`concord ${command}: ${note}`);
  const postgres = isPostgresUrl(database);
  // Nothing named the database: it is npm start's file in DATA_DIR, whose absence says DATA_DIR is not the start's.
  const dataDirMissing = !postgres && given === undefined && database === join(dataDir, `${service}.db`) && !existsSync(dataDir) ? dataDir : undefined;
  return { help: false as const, service, file, database, postgres, dataDirMissing, nats: values.nats as string | undefined };
}

/** Connects as the observer for reading consumers, or says why it could not and resolves with undefined. */
async function observerIfReachable(url: string | undefined, command: string, without: string): Promise<NatsConnection | undefined> {
  try {
    return await connectNats(url ?? defaultNatsUrl(), "concord", seedFileToUse(undefined, "observer"), databaseNatsTimeoutMs);
  } catch (err) {
    console.error(`concord ${command}: ${reason(err)}; ${without}`);
    return undefined;
  }
}

async function databaseBackup(args: string[]): Promise<number> {
  const command = "database backup";
  const given = databaseArguments(command, args);
  if (given.help) return help(command);
  const { service, file, database, postgres, dataDirMissing } = given;
  let pgDump: string | undefined;
  if (postgres) {
    let facts;
    try {
      facts = await readPostgresDatabase(database);
      pgDump = postgresProgram("pg_dump", facts.major);
    } catch (err) {
      console.error(`concord ${command}: ${(err as Error).message} (nothing was written)`);
      return 1;
    }
    const problem = withAdvice(ownershipProblem(facts.tables, facts.owners, service), service);
    if (problem) {
      console.error(`concord ${command}: ${urlWithoutSecrets(database)} cannot be backed up as the ${service} service's database: ${problem.reason}; ${problem.advice} (nothing was written)`);
      return problem.given ? 2 : 1;
    }
  } else {
    if (!existsSync(database)) {
      const fix = dataDirMissing ? noStartRanIn(dataDirMissing) : `name the service's database with --database, or set ${service.toUpperCase()}_DATABASE_URL as for the service`;
      console.error(`concord ${command}: ${database} does not exist; ${fix}`);
      return 2;
    }
    // A backup that a restore would refuse is no backup: said now, not on the day it is needed.
    const problem = sourceProblem(database, service);
    if (problem) {
      console.error(`concord ${command}: ${database} cannot be backed up as the ${service} service's database: ${problem.reason}; ${problem.advice} (nothing was written)`);
      return problem.given ? 2 : 1;
    }
  }
  // Said before NATS is waited for; backupSqlite and writeBackupRecord look again, for a backup to FILE made meanwhile.
  const taken = [file, recordFileOf(file)].find((f) => existsSync(f));
  const refused = taken === undefined ? besideADatabase(file) : (notABackup(taken, database) ?? `${taken} exists: a backup goes to a new file, and is never replaced; ${toReplaceIt(file)}`);
  if (refused !== undefined) {
    console.error(`concord ${command}: ${refused}`);
    return 2;
  }
  // Read before the snapshot: every event at or below a consumer's floor then was handled in a transaction the snapshot holds.
  // A service with no durable consumer (one of gRPC alone, say) has no floor to read, and NATS is not asked.
  const consumerless = consumersOf(service)?.length === 0;
  let positions: ConsumerPosition[] | null = consumerless ? [] : null;
  const nc = consumerless ? undefined : await observerIfReachable(given.nats, command, "the backup is taken without its consumers' positions");
  if (nc) {
    try {
      positions = await consumerPositions(nc, service);
    } catch (err) {
      console.error(`concord ${command}: ${reason(err)}; the backup is taken without its consumers' positions`);
    } finally {
      await nc.close();
    }
  }
  const takenAt = new Date().toISOString();
  let bytes: number;
  try {
    ({ bytes } = pgDump === undefined ? backupSqlite(database, file) : backupPostgres(database, file, pgDump));
  } catch (err) {
    console.error(`concord ${command}: ${(err as Error).message}`);
    return exitStatusOf(err);
  }
  // Its password left out: the record is read by whoever restores, and a URL needs none to say which database it was.
  const shown = postgres ? urlWithoutSecrets(database) : database;
  try {
    writeBackupRecord(file, { service, database: shown, takenAt, positions });
  } catch (err) {
    // A backup without its record would be restored without its consumers' positions, and say nothing of it.
    rmSync(file, { force: true });
    console.error(`concord ${command}: ${(err as Error).message}; the backup ${file} was deleted with it`);
    return 1;
  }
  console.log(JSON.stringify({ backup: file, service, database: shown, bytes, takenAt, positions }));
  console.error(
    consumerless
      ? `concord ${command}: the ${service} service's database backed up to ${file} (${bytes} bytes); it has no durable consumers, so a restore has nothing to deliver again`
      : positions
      ? `concord ${command}: the ${service} service's database backed up to ${file} (${bytes} bytes); its consumers' positions are in ${recordFileOf(file)}, for a restore`
      : `concord ${command}: the ${service} service's database backed up to ${file} (${bytes} bytes), without its consumers' positions: after a restore, redeliver each consumer's events from a stream sequence at or below its acknowledgement floor before this backup`,
  );
  return 0;
}

async function databaseRestore(args: string[]): Promise<number> {
  const command = "database restore";
  const given = databaseArguments(command, args);
  if (given.help) return help(command);
  const { service, file, database, postgres, dataDirMissing } = given;
  if (dataDirMissing) {
    // The restore would make DATA_DIR and a database there that no start uses, and say it was restored.
    console.error(`concord ${command}: ${noStartRanIn(dataDirMissing)}; nothing was restored`);
    return 2;
  }
  let record;
  try {
    record = readBackupRecord(file);
  } catch (err) {
    console.error(`concord ${command}: ${(err as Error).message}; nothing was restored`);
    return exitStatusOf(err);
  }
  if (record && record.service !== service) {
    console.error(`concord ${command}: ${file} is a backup of ${record.service} (${recordFileOf(file)}), not of ${service}; nothing was restored (restore it with \`npx concord database restore ${record.service} FILE\`)`);
    return 2;
  }
  if (postgres) {
    const refused = await restoreIntoPostgres(service, database, file);
    if (refused !== undefined) {
      console.error(`concord ${command}: ${refused.message}`);
      return exitStatusOf(refused);
    }
    console.error(`concord ${command}: ${file} restored into ${urlWithoutSecrets(database)}`);
  } else {
    let restored;
    try {
      restored = restoreSqlite(service, database, file);
    } catch (err) {
      console.error(`concord ${command}: ${(err as Error).message}`);
      return exitStatusOf(err);
    }
    console.error(`concord ${command}: ${file} restored as ${database}${movedAside(restored)}`);
  }
  // A service with no durable consumer (one of gRPC alone, say) has nothing to be delivered again.
  if (consumersOf(service)?.length === 0) return 0;
  if (!record?.positions) {
    console.error(
      `concord ${command}: ${record ? "the backup's record holds" : `there is no ${recordFileOf(file)}, so there are`} no consumer positions: after starting ${service}, deliver again what its consumers handled after the backup with \`npx concord consumer redeliver DURABLE --from SEQ\` (up to its last delivery), SEQ at or below each one's acknowledgement floor before the backup (1 if it did not exist then)`,
    );
    sayReservationsCheck(command, service);
    return 0;
  }
  console.error(`concord ${command}: start ${service}, then deliver again to its consumers what they handled after the backup (its inbox skips what the backup holds as handled):`);
  for (const p of record.positions) console.log(`npx concord consumer redeliver ${p.durable} --from ${p.ackFloor + 1}`);
  const missing = consumersNotRecorded(record);
  if (missing.length > 0) {
    // Taken before the contracts gave the service these consumers, or a record edited: their events handled after the
    // backup are in no command above, and would stay unhandled by the restored database.
    console.error(
      `concord ${command}: warning: ${recordFileOf(file)} holds no floor for ${missing.length} of the ${service} service's consumers (${missing.join(", ")}), so no command above delivers again what they handled after the backup: ` +
        "for each, run `npx concord consumer redeliver DURABLE --from SEQ` with SEQ at or below its acknowledgement floor before the backup (1 if it did not exist then; its inbox skips what the backup holds as handled)",
    );
  }
  sayReservationsCheck(command, service);
  return 0;
}

/**
 * Puts the dump `dump` of `service`'s database back into the PostgreSQL
 * database at `url` with the server's own version of pg_restore, once all is
 * known good: the dump (a pg_dump archive of the service's database, migrated
 * in full), the database there (none's yet, or the service's), and that no
 * other session is open on it (every instance of the service stopped, as a
 * SQLite restore wants the file unclaimed). Resolves with why it refused
 * (a GivenRefused where the dump or the database named is mistaken) or
 * failed, nothing changed, or undefined once restored.
 */
async function restoreIntoPostgres(service: string, url: string, dump: string): Promise<Error | undefined> {
  const shown = urlWithoutSecrets(url);
  if (!existsSync(dump)) return new GivenRefused(`${dump} does not exist; nothing was restored`);
  let facts;
  let pgRestore;
  try {
    facts = await readPostgresDatabase(url);
    pgRestore = postgresProgram("pg_restore", facts.major);
  } catch (err) {
    return new Error(`${(err as Error).message}; nothing was restored`);
  }
  const { problem, tables } = readDump(dump, service, facts.schema, pgRestore);
  if (problem) return new GivenRefused(`${dump} cannot be restored: ${problem}; nothing was restored`);
  if (facts.tables.has("schema_owner") && !facts.owners.includes(service)) {
    return new GivenRefused(`${shown} is ${facts.owners.length > 0 ? `the ${facts.owners.join(", ")} service's database` : "a database whose schema_owner names no service"}, not the ${service} service's: nothing was restored over it`);
  }
  // pg_restore --clean drops only what the dump holds: a table a migration made since the backup would stay, its
  // migration not in the restored schema_migrations, and the service's next start, making it again, would fail.
  const newer = [...facts.tables].filter((table) => !tables.has(table)).sort();
  if (newer.length > 0) {
    return new Error(
      `${shown} holds ${newer.length} table(s) that ${dump} does not (${newer.join(", ")}; made by a migration since the backup, say), which a restore would leave there, ` +
      `and the service, its restored schema_migrations without them, would fail to make again as it starts: drop them first (\`DROP TABLE ${newer.join(", ")}\` in psql on that database, once what they hold is kept where needed); nothing was restored`
    );
  }
  if (facts.sessions.length > 0) {
    return new Error(
      `${shown} is in use: ${facts.sessions.length} other session(s) on it, ${facts.sessions.join(", ")}: stop every instance of the ${service} service, and any tool on its database, first ` +
      "(under `npm start -- --postgres`, Ctrl-C stops everything; `npm start -- --postgres-only` then runs the server alone); nothing was restored"
    );
  }
  try {
    restorePostgres(url, dump, pgRestore);
  } catch (err) {
    return err as Error;
  }
  return undefined;
}

/** A database command's exit status for `err`: 2 for a refusal of what it was given, 1 for a failure once at work. */
const exitStatusOf = (err: unknown): number => (err instanceof GivenRefused ? 2 : 1);

/** After a restore of either side of the order saga: the check that finds what events no longer in their streams would have set right. */
function sayReservationsCheck(command: string, service: string): void {
  if (service !== "products" && service !== "orders") return;
  console.error(
    `concord ${command}: then, once the consumers have caught up (\`npx concord status\`: nothing pending), run \`npx tsx tools/reservations.ts check\`: it lists the stock the product service's reservations and the order service's orders disagree on (events gone from their streams, or commands not run), and says what --release and --reserve do about them`,
  );
}

/** Where a restore put what was there: the database, and the log and journal beside it, which SQLite would have applied to the restored file. */
function movedAside({ asideTo, moved }: { readonly asideTo: string | undefined; readonly moved: readonly string[] }): string {
  if (asideTo === undefined) return "";
  const beside = moved.filter((f) => f !== asideTo);
  const list = (items: readonly string[]) => (items.length > 1 ? `${items.slice(0, -1).join(", ")} and ${items.at(-1)}` : (items[0] ?? ""));
  if (beside.length === moved.length) return `; the ${list(beside.map((f) => f.slice(asideTo.length)))} left there without a database ${beside.length > 1 ? "are" : "is"} now ${list(beside)}`;
  return `; the database that was there is now ${asideTo}${beside.length > 0 ? `, with ${list(beside)}` : ""}`;
}

function streamSequenceOf(raw: string, flag: string): number {
  if (!/^[1-9]\d{0,15}$/.test(raw) || !Number.isSafeInteger(Number(raw))) throw new UsageError(`${flag} takes a stream sequence (a whole number from 1 to ${Number.MAX_SAFE_INTEGER}), got ${JSON.stringify(raw)}`, "consumer redeliver");
  return Number(raw);
}

/** The lines of `concord --help` of a command group (`dlq`: list, show, replay, purge), or undefined for a name that is no group. */
function groupOf(first: string): string | undefined {
  const lines = usage.split("\n");
  const commands = Object.keys(helps).filter((c) => c.startsWith(`${first} `));
  if (commands.length === 0) return undefined;
  const listed: string[] = [];
  lines.forEach((line, i) => {
    if (!commands.some((c) => line.startsWith(`  ${c.split(" ")[0]} ${c.split(" ")[1]}`))) return;
    listed.push(line);
    for (let j = i + 1; j < lines.length && /^ {20,}\S/.test(lines[j]); j++) listed.push(lines[j]);
  });
  return `Usage: npx concord ${first} <command> [options]\n\n${listed.join("\n")}\n\nRun \`npx concord ${first} <command> --help\` for a command's options.`;
}

/** `concord consumer stale [--delete]`: lists the durables no contract declares; deletes, as the operator, those not in use. */
async function consumerStale(rest: string[]): Promise<number> {
  const command = "consumer stale";
  const { values, positionals } = parse(command, rest);
  if (values.help) return help(command);
  if (positionals.length > 0) throw new UsageError(`unexpected ${positionals.join(" ")}`, command);
  const deleting = values.delete === true;
  const say = (line: string) => console.error(`concord consumer stale: ${line}`);
  return withNats(
    values.nats as string | undefined,
    async (nc) => {
      const jsm = await nc.jetstreamManager();
      const stale = await staleConsumers(jsm);
      const now = Date.now();
      for (const consumer of stale) {
        const busy = inUse(consumer, now);
        console.log(JSON.stringify({ ...consumer, ...(busy !== undefined && { inUse: busy }) }));
      }
      if (!deleting) {
        say(`${stale.length} durable consumer(s) no contract declares${stale.length > 0 ? "; --delete deletes those not in use" : ""}`);
        return 0;
      }
      if (stale.length === 0) {
        say("deleted 0 durable consumer(s)");
        return 0;
      }
      say(`watching them ${watchMs / 1_000} s for a client reading through one before deleting`);
      await sleep(watchMs);
      const later = new Map((await staleConsumers(jsm)).map((consumer) => [`${consumer.stream}/${consumer.durable}`, consumer]));
      const why = new Map(stale.map((consumer) => [consumer, inUseWhileWatched(consumer, later.get(`${consumer.stream}/${consumer.durable}`))]));
      const kept = stale.filter((consumer) => why.get(consumer) !== undefined && why.get(consumer) !== "gone");
      for (const consumer of kept) say(`kept ${consumer.durable} of ${consumer.stream}: ${why.get(consumer)}; stop what reads it, then run this again`);
      const deletable = stale.filter((consumer) => why.get(consumer) === undefined);
      const gone = [...stale.filter((consumer) => why.get(consumer) === "gone"), ...(await deleteStaleConsumers(jsm, deletable))];
      const deleted = deletable.filter((consumer) => !gone.includes(consumer));
      say(`deleted ${deleted.length} durable consumer(s)${deleted.length > 0 ? `: ${deleted.map((c) => `${c.durable} of ${c.stream}`).join(", ")}` : ""}${gone.length > 0 ? ` (${gone.length} deleted meanwhile by another)` : ""}`);
      return kept.length > 0 ? 1 : 0;
    },
    deleting ? "operator" : "observer",
  );
}

function help(command: string): number {
  console.log(helps[command]);
  return 0;
}

/** Runs `concord` with `argv` (after the program name); resolves with the exit status. */
export async function concord(argv: string[]): Promise<number> {
  const [first, second] = argv;
  if (first === undefined || first === "--help" || first === "-h" || first === "help") {
    if (first === undefined) {
      console.error(usage);
      return 2;
    }
    console.log(usage);
    return 0;
  }
  const command = first === "events" || first === "dlq" || first === "outbox" || first === "consumer" || first === "streams" || first === "database" ? `${first} ${second ?? ""}`.trim() : first;
  const rest = argv.slice(command.split(" ").length);
  try {
    const group = groupOf(first);
    if (group && !(command in helps)) {
      // `concord dlq`, `concord dlq --help`, `concord dlq lsit`: the group's commands, not "unknown command".
      if (second === "--help" || second === "-h") {
        console.log(group);
        return 0;
      }
      if (second === undefined) {
        // `concord dlq` alone lists the group's commands, as `concord` alone lists every command.
        console.error(`concord ${first}: name a command\n\n${group}`);
        return 2;
      }
      const commands = Object.keys(helps).filter((c) => c.startsWith(`${first} `)).map((c) => c.slice(first.length + 1));
      throw new UsageError(`no command ${JSON.stringify(second)}; its commands are ${commands.join(", ")}`, first);
    }
    switch (command) {
      case "status": {
        const { values, positionals } = parse(command, rest);
        if (values.help) return help(command);
        if (positionals.length > 0) throw new UsageError(`unexpected ${positionals.join(" ")}`, command);
        // Told nowhere else to look (no flag; no variable, which postgresOnlySaid sees), the start on DATA_DIR is the system asked after: one of PostgreSQL alone is said so.
        const alone = Object.keys(values).some((option) => option === "nats" || option in targetOptions) ? undefined : postgresOnlySaid();
        if (alone) {
          console.log(alone);
          return 1;
        }
        let targets;
        try {
          targets = serviceTargets(Object.fromEntries(Object.keys(targetOptions).map((option) => [option, values[option] as string | undefined])));
        } catch (err) {
          throw new UsageError((err as Error).message, command);
        }
        const url = (values.nats as string | undefined) ?? defaultNatsUrl();
        const connection = connectNats(url, "concord", undefined, statusNatsTimeoutMs);
        try {
          return (await printStatus({ url, connection }, targets, (line) => console.log(line))) ? 0 : 1;
        } finally {
          // A TLS handshake grpc-js gives no timeout (an instance that took the connection and never answers) would
          // keep the process alive after the report: endProcess ends it.
          await connection.then((nc) => nc.close(), () => undefined);
        }
      }
      case "events tail": {
        const { values, positionals } = parse(command, rest);
        if (values.help) return help(command);
        if (positionals.length > 0) throw new UsageError(`unexpected ${positionals.join(" ")}`, command);
        checkSubjectAndType(values, command);
        const subject = values.subject as string | undefined;
        const type = values.type as string | undefined;
        const nc = await connectNats((values.nats as string | undefined) ?? defaultNatsUrl(), "concord");
        exitOnSignals(nc);
        try {
          const readable = printerOf(command, values);
          await watchEvents({ nc, name: "concord events tail", all: values.all === true, subject, type, print: (line) => console.log(JSON.stringify(readable(line))) });
        } finally {
          await nc.close();
        }
        return 0;
      }
      case "dlq list":
        return await dlqList(rest);
      case "dlq show": {
        const { values, positionals } = parse(command, rest);
        if (values.help) return help(command);
        if (positionals.length !== 1) throw new UsageError("name one dead letter by its sequence", command);
        const seq = sequenceOf(positionals[0], command);
        return await withNats(values.nats as string | undefined, async (nc) => {
          const letter = await getDeadLetter(nc, seq);
          // The bytes as stored too: a payload that does not decode, or of a type no contract declares, was shown only as its size or the decoder's complaint.
          const kept = letter.payloadOmittedBytes === undefined && { payloadBase64: Buffer.from(letter.data).toString("base64") };
          console.log(JSON.stringify(printerOf(command, values)({ ...summary(letter), ...kept, headers: letter.headers }), null, 2));
          return 0;
        });
      }
      case "dlq replay":
        return await dlqReplay(rest);
      case "dlq purge": {
        const { values, positionals } = parse(command, rest);
        if (values.help) return help(command);
        const seqs = positionals.map((p) => sequenceOf(p, command));
        return await withOperator(values.nats as string | undefined, async (nc) => {
          if (seqs.length > 0) {
            if (values.yes !== true) {
              console.error(`concord dlq purge: this deletes dead letter(s) ${seqs.join(", ")} and no other; run again with --yes to do it`);
              return 2;
            }
            const { deleted, missing } = await deleteDeadLetters(nc, seqs);
            for (const seq of missing) console.error(`concord dlq purge: there is no dead letter ${seq} in ${deadLetterStreamSpec.name}: replayed or purged since, or never filed (\`concord dlq list\` shows those there are)`);
            console.log(`deleted ${deleted.length} dead letter(s)${deleted.length > 0 ? `: ${deleted.join(", ")}` : ""}`);
            return missing.length > 0 ? 1 : 0;
          }
          if (values.yes !== true) {
            const jsm = await nc.jetstreamManager();
            const { state } = await jsm.streams.info(deadLetterStreamSpec.name);
            console.error(`concord dlq purge: this deletes all ${state.messages} dead letter(s); run again with --yes to do it`);
            return 2;
          }
          console.log(`purged ${await purgeDeadLetters(nc)} dead letter(s)`);
          return 0;
        });
      }
      case "consumer redeliver":
        return await consumerRedeliver(rest);
      case "consumer stale":
        return await consumerStale(rest);
      case "database backup":
        return await databaseBackup(rest);
      case "database restore":
        return await databaseRestore(rest);
      case "streams provision": {
        const { values, positionals } = parse(command, rest);
        if (values.help) return help(command);
        if (positionals.length > 0) throw new UsageError(`unexpected ${positionals.join(" ")}`, command);
        return await withOperator(values.nats as string | undefined, async (nc) => {
          // Its warnings (a standalone server keeping 1 replica) go to standard error, the streams to standard output.
          const provisioned = await provisionStreams(nc, warningsAsLinesOf(command)).catch((err: unknown) => {
            if (!(err instanceof ProvisionRefused)) throw err;
            console.error(`concord ${command}: ${err.message}`);
            return undefined;
          });
          if (!provisioned) return 2;
          for (const stream of provisioned) console.log(JSON.stringify(stream));
          const told = provisioned.flatMap((st) => differencesSaid(st).map((d) => `${st.stream} ${d}`));
          console.error(`concord streams provision: ${provisioned.length} streams as their specs declare${told.length > 0 ? ` (${told.join(", ")})` : ""}`);
          return 0;
        });
      }
      case "outbox parked": {
        if (rest.includes("--help") || rest.includes("-h")) return help(command);
        // The service (or --database PATH) comes first for tools/outbox.ts; here the action does.
        const [action, ...more] = rest;
        if (action !== "list" && action !== "retry" && action !== "drop") {
          // tools/outbox.ts's order (the service, then the action) is refused here, and said how to write it.
          throw new UsageError(isServiceName(action) ? `say list, retry or drop, then the service: npx concord outbox parked list ${action}` : "say list, retry or drop", command);
        }
        const args = more[0] !== undefined && !more[0].startsWith("-") ? [more[0], action, ...more.slice(1)] : [action, ...more];
        return await outboxCommand(args, {
          program: "concord outbox parked",
          help: helps[command],
          elsewhere: elsewhereOf(command),
          badUsage: (problem) => refuseUsage(problem, command),
          // The service follows the action here, where tools/outbox.ts asks for it first.
          namedService: (service) => `npx concord outbox parked ${action} ${service}`,
        });
      }
      case "traces":
        if (rest.length === 0) {
          // As `concord dlq` alone: its commands, on standard error (exit 2).
          console.error(`concord traces: name a command\n\n${usageOfTraces("npx concord traces")}`);
          return 2;
        }
        return await tracesCommand(rest, {
          prog: "npx concord traces",
          elsewhere: elsewhereOf(command),
          badUsage: (problem, of) => refuseUsage(problem, of === undefined ? command : `${command} ${of}`),
          nameOf: (of) => programOf(`${command} ${of}`),
        });
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`, "");
    }
  } catch (err) {
    if (err instanceof UsageError) return refuseUsage(err.message, err.command);
    // Named as the command's own lines are: `concord dlq show: there is no dead letter 7 ...`.
    return failed(err, command === "traces" && rest[0] !== undefined && Object.hasOwn(tracesOptions, rest[0]) ? `traces ${rest[0]}` : command);
  }
}

/** What begins the lines of `command`: `concord dlq list`, or `concord` for none. */
const programOf = (command: string | undefined): string => (command ? `concord ${command}` : "concord");

/** Says bad usage in one line, the problem and the --help of `command` (none: of `concord` itself); returns exit status 2. */
/**
 * A logger for what the platform's code warns of while a command runs: each
 * warning one line on standard error, named as the command's own lines are
 * (`concord streams provision: nats-server is not clustered: ...`), not a
 * JSON log line.
 */
function warningsAsLinesOf(command: string) {
  return createLogger({
    service: "concord",
    level: "warn",
    destination: { write: (line: string) => void process.stderr.write(`concord ${command}: ${(JSON.parse(line) as { msg: string }).msg}\n`) },
  });
}

function refuseUsage(problem: string, command: string): number {
  console.error(usageProblemLine(programOf(command), problem, `npx concord ${command ? `${command} ` : ""}--help`));
  return 2;
}

/** Says why `command` (none: concord itself) failed (the server's reason, for NATS's refusals) and gives its exit status, 1. */
export function failed(err: unknown, command?: string): number {
  console.error(`${programOf(command)}: ${reason(err)}`);
  return 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  exitQuietlyOnClosedOutput();
  concord(process.argv.slice(2)).then(endProcess, (err: unknown) => endProcess(failed(err)));
}
