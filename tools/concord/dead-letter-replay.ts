/**
 * A replay of many dead letters, in two passes so that it holds one dead
 * letter at a time, however many it replays: the first checks every chosen
 * dead letter against its source stream and keeps a few fields of each;
 * the second reads each again, checks it again and replays it.
 */
import type { NatsConnection } from "nats";
import { deadLetterStreamSpec } from "../../platform/events/index.js";
import { type DeadLetter, type DeadLetterFilter, findDeadLetter, getDeadLetter, jetStreamManagerOf, matchesFilter, nextDeadLetter, replayDeadLetter, type SourceEvent, sourceEventOf } from "./dead-letters.js";

/** What a replay keeps of a chosen dead letter between its passes: what finds it again and what is printed, never its payload or headers. */
export interface ChosenDeadLetter {
  readonly seq: number;
  readonly subject: string;
  readonly type: string;
  readonly id: string;
  readonly consumer: string;
  readonly reason: string;
}

/** The dead letters a replay acts on: these sequences, or every one that passes the filter (every one without a filter). */
export type ReplayChoice = { readonly seqs: readonly number[] } | { readonly filter?: DeadLetterFilter };

/** How a replay goes, and what it says as it goes. */
export interface ReplayOptions {
  /** Check and say what would be replayed; publish and delete nothing. */
  readonly dryRun?: boolean;
  /**
   * Refuse a dead letter whose event its source stream stored before this:
   * every consumer of its subject receives a replay, and one that handled it
   * knows so only for its inbox's retention. Default: none refused.
   */
  readonly notBefore?: Date;
  /** The retention notBefore comes from, as a refusal names it (`2d, from INBOX_RETENTION`). */
  readonly retention?: string;
  /** At most this many replays a second. Default: as fast as JetStream takes them. */
  readonly perSecond?: number;
  /** A dead letter that fails the check (in either pass), with why: it is left in the dead letter stream and the run goes on. */
  readonly refused?: (letter: ChosenDeadLetter, refusal: string) => void;
  /** A dead letter a dry run would replay. */
  readonly wouldReplay?: (letter: ChosenDeadLetter) => void;
  /** A dead letter replayed and deleted. */
  readonly replayed?: (letter: ChosenDeadLetter) => void;
  /**
   * A dead letter checked in the first pass and gone in the second (another replay or a purge took it), or whose
   * replay JetStream held already (another replay published it first), with why.
   */
  readonly skipped?: (letter: ChosenDeadLetter, why: string) => void;
  /** After each dead letter of the second pass: how many were replayed, skipped and refused at their turn so far, of how many passed the first. */
  readonly progress?: (replayed: number, skipped: number, chosen: number, refusedAtTurn: number) => void;
  /** Runs once every chosen dead letter has been checked, before the second pass. */
  readonly betweenPasses?: () => Promise<void>;
  /** Once aborted (Ctrl-C), the run stops before its next dead letter: the first pass replays nothing, the second replays and deletes the one in hand first. */
  readonly stop?: AbortSignal;
}

/** What every outcome but "none" counts besides: the dead letters that failed the check, left in the dead letter stream. */
export interface Refusals {
  readonly refused: number;
  /** How many of them for their age (notBefore). */
  readonly pastInbox: number;
}

/** How a replay ended. */
export type ReplayOutcome =
  | { readonly kind: "none" }
  | ({ readonly kind: "checked"; readonly chosen: number } & Refusals)
  | ({ readonly kind: "replayed"; readonly chosen: number; readonly replayed: number; readonly skipped: number } & Refusals)
  | ({ readonly kind: "stopped"; readonly chosen: number; readonly replayed: number; readonly skipped: number } & Refusals)
  | ({ readonly kind: "failed"; readonly chosen: number; readonly replayed: number; readonly skipped: number; readonly seq: number; readonly error: Error } & Refusals);

/**
 * Replays the chosen dead letters that pass the check: the first pass reads
 * them one at a time and checks each against its source stream
 * (sourceEventOf); one refused is said (`refused`), left in the dead letter
 * stream, and counted in the outcome, and the others go on to be replayed.
 * A refusal is the dead letter's own: another's cannot hold it up, nor can
 * one a service's user filed under its own consumers to hold up a replay of
 * all. A dry run ends after the first pass ("checked"). The second pass
 * reads each again by its sequence: one gone meanwhile, or whose replay
 * JetStream held already (another run replayed it first), is skipped,
 * saying so; one that no longer passes the check (its source stream
 * changed) is refused as in the first pass; one whose event JetStream does
 * not take, or that cannot be read again, stops the run there ("failed",
 * with how many were replayed), as an aborted `stop` does between two dead
 * letters ("stopped"). Rejects when a dead letter named by sequence does
 * not exist, or a stream cannot be read in the first pass.
 */
export async function replayChosenDeadLetters(nc: NatsConnection, choice: ReplayChoice, options: ReplayOptions = {}): Promise<ReplayOutcome> {
  const chosen: ChosenDeadLetter[] = [];
  const refusals = { refused: 0, pastInbox: 0 };
  const refuse = (letter: ChosenDeadLetter, source: { readonly refusal: string; readonly pastInbox?: true }) => {
    refusals.refused++;
    if (source.pastInbox) refusals.pastInbox++;
    options.refused?.(letter, source.refusal);
  };
  for await (const letter of chosenDeadLetters(nc, choice)) {
    if (options.stop?.aborted) return { kind: "stopped", chosen: chosen.length, replayed: 0, skipped: 0, ...refusals };
    const source = checkedSource(letter, await sourceEventOf(nc, letter), options.notBefore, options.retention);
    if ("refusal" in source) refuse(summaryOf(letter), source);
    else chosen.push(summaryOf(letter));
  }
  const count = chosen.length;
  if (count + refusals.refused === 0) return { kind: "none" };
  if (options.dryRun) {
    for (const letter of chosen) options.wouldReplay?.(letter);
    return { kind: "checked", chosen: count, ...refusals };
  }
  const refusedFirst = refusals.refused;
  await options.betweenPasses?.();
  let replayed = 0;
  let skipped = 0;
  const started = performance.now();
  for (const summary of chosen) {
    if (options.perSecond !== undefined) {
      const wait = started + (replayed * 1000) / options.perSecond - performance.now();
      if (wait > 0) await pause(wait, options.stop);
    }
    if (options.stop?.aborted) return { kind: "stopped", chosen: count, replayed, skipped, ...refusals };
    let duplicate;
    try {
      // Reading it again fails as replaying it does (NATS stopped answering, say): either way the run says how far it got.
      const letter = await findDeadLetter(nc, summary.seq);
      const gone = whyGone(summary, letter);
      if (gone !== undefined) {
        skipped++;
        options.skipped?.(summary, gone);
        options.progress?.(replayed, skipped, count, refusals.refused - refusedFirst);
        continue;
      }
      const source = checkedSource(letter!, await sourceEventOf(nc, letter!), options.notBefore, options.retention);
      if ("refusal" in source) {
        refuse(summary, source);
        options.progress?.(replayed, skipped, count, refusals.refused - refusedFirst);
        continue;
      }
      ({ duplicate } = await replayDeadLetter(nc, letter!, source));
    } catch (err) {
      return { kind: "failed", chosen: count, replayed, skipped, seq: summary.seq, error: err as Error, ...refusals };
    }
    if (duplicate) {
      // Two runs at once read it in turn: counted by both, the letters replayed added up to more than there were.
      skipped++;
      options.skipped?.(summary, `dead letter ${summary.seq} was replayed already (JetStream held its replay, published by another run at the same time or one cut short), so this run stored nothing; it is deleted`);
      options.progress?.(replayed, skipped, count, refusals.refused - refusedFirst);
      continue;
    }
    replayed++;
    options.replayed?.(summary);
    options.progress?.(replayed, skipped, count, refusals.refused - refusedFirst);
  }
  return { kind: "replayed", chosen: count, replayed, skipped, ...refusals };
}

/**
 * The chosen dead letters, read one at a time by sequence. Not through a
 * consumer (readDeadLetters): it asks for more as letters arrive,
 * not as they are read, and a first pass that checks each is slower than
 * the server sends them, so they would pile up here.
 */
async function* chosenDeadLetters(nc: NatsConnection, choice: ReplayChoice): AsyncGenerator<DeadLetter> {
  if ("seqs" in choice) {
    // A sequence named twice is one dead letter: its second turn found it gone and blamed another run.
    for (const seq of new Set(choice.seqs)) yield await getDeadLetter(nc, seq);
    return;
  }
  const jsm = await jetStreamManagerOf(nc);
  const info = await jsm.streams.info(deadLetterStreamSpec.name).catch((err: unknown) => {
    throw new Error(`the dead letter stream ${deadLetterStreamSpec.name} cannot be read (have the services started?): ${(err as Error).message}`, { cause: err });
  });
  const last = info.state.last_seq;
  for (let letter = await nextDeadLetter(nc, 1, last); letter; letter = await nextDeadLetter(nc, letter.seq + 1, last)) {
    if (!choice.filter || matchesFilter(letter, choice.filter)) yield letter;
  }
}

/** Waits `ms`, or less once `stop` is aborted. */
function pause(ms: number, stop: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    stop?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      stop?.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** The source event, or a refusal for an event stored before `notBefore` (see ReplayOptions.notBefore). */
function checkedSource(letter: DeadLetter, source: SourceEvent | { readonly refusal: string }, notBefore: Date | undefined, retention: string | undefined): SourceEvent | { readonly refusal: string; readonly pastInbox?: true } {
  if ("refusal" in source || notBefore === undefined || source.storedAt.getTime() >= notBefore.getTime()) return source;
  return {
    pastInbox: true,
    refusal: `dead letter ${letter.seq} is of an event stored at ${source.storedAt.toISOString()}, longer ago than the inboxes' retention${retention ? ` (${retention})` : ""}: every consumer of ${letter.subject} receives a replay, and one that handled it may no longer know so and would take effect again; it is not replayed`,
  };
}

function summaryOf(letter: DeadLetter): ChosenDeadLetter {
  return { seq: letter.seq, subject: letter.subject, type: letter.type, id: letter.id, consumer: letter.consumer, reason: letter.reason };
}

/** Why the dead letter read again in the second pass is not the one the first pass checked; undefined when it is. */
function whyGone(checked: ChosenDeadLetter, now: DeadLetter | undefined): string | undefined {
  if (now === undefined) return `dead letter ${checked.seq} is gone since it was checked (replayed or purged meanwhile)`;
  // A sequence is never used twice by one stream; a dead letter stream deleted and made anew starts again from 1.
  if (now.id !== checked.id || now.subject !== checked.subject || now.consumer !== checked.consumer) {
    return `dead letter ${checked.seq} is no longer the one checked (the dead letter stream was made anew meanwhile)`;
  }
  return undefined;
}
