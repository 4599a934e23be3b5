/**
 * The dead letter stream as an operator sees it: listing and showing dead
 * letters decoded, replaying them to the subject they came from, purging.
 */
import { DeliverPolicy, headers as natsHeaders, type JetStreamManager, type JsMsg, type MsgHdrs, type NatsConnection, type NatsError, type StoredMsg } from "nats";
import { deadLetterHeaders, deadLetterStreamSpec, deadLetterSubject, receivedHeaders } from "../../platform/events/index.js";
import { decodedPayload, subjectMatches } from "../event-watch.js";
import { openObserverReader } from "../nats/observer-consumer.js";

/** One dead letter, decoded. */
export interface DeadLetter {
  /** Its sequence in the dead letter stream: what `dlq show` and `dlq replay` take. */
  readonly seq: number;
  /** Where it was filed: concord.dlq.<stream>.<durable>. */
  readonly dlqSubject: string;
  /** When it was filed. */
  readonly filedAt: string;
  readonly reason: string;
  /** The subject the event was published to, where a replay sends it. */
  readonly subject: string;
  readonly stream: string;
  readonly streamSequence: number;
  readonly consumer: string;
  readonly deliveryCount: number;
  readonly type: string;
  readonly id: string;
  readonly source?: string;
  readonly time?: string;
  /** The W3C trace id of its traceparent, to find the trace. */
  readonly traceId?: string;
  readonly payload: unknown;
  /**
   * Set when the dead letter was filed without the event's payload (over the
   * server's max_payload with the dead letter's headers): its size in bytes.
   * A replay then reads the event from its source stream.
   */
  readonly payloadOmittedBytes?: number;
  /**
   * The event's own headers as filed (the concord-dlq-* ones left out): one
   * given more than once has every value, in order, in an array.
   */
  readonly headers: Readonly<Record<string, string | readonly string[]>>;
  readonly data: Uint8Array;
}

/** Which dead letters a command acts on. */
export interface DeadLetterFilter {
  /** Its durable consumer. */
  readonly consumer?: string;
  /** Its original subject, a NATS pattern (`*`, `>`). */
  readonly subject?: string;
  /** Its ce-type. */
  readonly type?: string;
}

/** Whether a dead letter passes every part of the filter given, its consumer being the one it was filed under (filedUnder). */
export function matchesFilter(letter: DeadLetter, filter: DeadLetterFilter): boolean {
  return (
    (filter.consumer === undefined || filedUnder(letter) === filter.consumer) &&
    (filter.subject === undefined || subjectMatches(filter.subject, letter.subject)) &&
    (filter.type === undefined || letter.type === filter.type)
  );
}

/**
 * The durable consumer whose subject (concord.dlq.<stream>.<durable>) the
 * dead letter was filed on: what `status` counts it under, and what the
 * server's permissions vouch for (a service's user files only under its own
 * consumers'), where its concord-dlq-consumer header is the filer's word.
 */
export function filedUnder(letter: DeadLetter): string {
  return letter.dlqSubject.slice(letter.dlqSubject.lastIndexOf(".") + 1);
}

const dlqHeaderNames = new Set(Object.values(deadLetterHeaders));

/** A message of the dead letter stream, decoded from its headers' names, each with every value it was given. */
export function deadLetterOf(seq: number, dlqSubject: string, filed: Date, stored: ReadonlyMap<string, readonly string[]>, data: Uint8Array): DeadLetter {
  const get = (name: string) => stored.get(name)?.[0] || undefined;
  const headers: Record<string, string | readonly string[]> = {};
  for (const [name, values] of stored) {
    if (!dlqHeaderNames.has(name.toLowerCase() as never) && !/^nats-/i.test(name)) headers[name] = values.length === 1 ? values[0] : values;
  }
  const type = get("ce-type") ?? "";
  const omitted = get(deadLetterHeaders.payloadOmitted);
  const traceparent = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(get("traceparent") ?? "");
  return {
    seq,
    dlqSubject,
    filedAt: get(deadLetterHeaders.time) ?? filed.toISOString(),
    reason: get(deadLetterHeaders.reason) ?? "",
    subject: get(deadLetterHeaders.subject) ?? "",
    stream: get(deadLetterHeaders.stream) ?? "",
    streamSequence: Number(get(deadLetterHeaders.streamSequence) ?? 0),
    consumer: get(deadLetterHeaders.consumer) ?? "",
    deliveryCount: Number(get(deadLetterHeaders.deliveryCount) ?? 0),
    type,
    id: get("ce-id") ?? "",
    source: get("ce-source"),
    time: get("ce-time"),
    traceId: traceparent?.[1],
    payload: omitted === undefined ? decodedPayload(type, data) : `(not kept with the dead letter: ${omitted} bytes; the source stream holds the event)`,
    ...(omitted !== undefined && { payloadOmittedBytes: Number(omitted) }),
    headers,
    data,
  };
}

function fromJsMsg(msg: JsMsg): DeadLetter {
  // Read from the block as it came (see eventLine): one dead letter with a header nats.js would not send stopped the listing.
  const repeats = new Map<string, string[]>();
  const h = receivedHeaders(msg, repeats);
  const stored = new Map(Object.entries(h).map(([name, first]) => [name, repeats.get(name) ?? [first]]));
  return deadLetterOf(msg.seq, msg.subject, new Date(Math.floor(msg.info.timestampNanos / 1e6)), stored, msg.data);
}

/**
 * A stored message's headers, or why nats.js cannot read them: its decoder
 * throws on a header it would not have sent (a name with a space, a lone
 * line feed), which another client may have stored.
 */
export function storedHeaders(stored: StoredMsg): MsgHdrs | { readonly unreadable: string } {
  try {
    return stored.header;
  } catch (err) {
    return { unreadable: (err as Error).message };
  }
}

const managers = new WeakMap<NatsConnection, Promise<JetStreamManager>>();

/**
 * The connection's JetStream manager, made once: nats.js asks the server for
 * the account's info each time one is made, a round trip more for each dead
 * letter a listing or replay reads, checks, publishes or deletes.
 */
export function jetStreamManagerOf(nc: NatsConnection): Promise<JetStreamManager> {
  let jsm = managers.get(nc);
  if (jsm === undefined) {
    jsm = nc.jetstreamManager();
    managers.set(nc, jsm);
    jsm.catch(() => managers.delete(nc));
  }
  return jsm;
}

/** JetStream's answer when a stream holds no message at (or after) the sequence asked for. */
const noMessageFound = 10037;
/** JetStream's answer when there is no stream of the name asked for. */
const noSuchStream = 10059;

/** How many bytes of dead letters a listing asks for at a time: a few of the largest the server takes. */
function pullAheadBytes(nc: NatsConnection): number {
  return 4 * (nc.info?.max_payload ?? 1024 * 1024);
}

/** How long one pull of a listing waits for dead letters before it ends (nats.js's least), and the stream is asked whether any is still there. */
const quietMs = 1_000;

/**
 * Every dead letter stored now, oldest first, from sequence `from` on (1 by
 * default), read in order through a
 * consumer of the observer's names (tools/nats/observer-consumer.ts;
 * nothing is changed). One pull of a few megabytes at a time, the
 * next asked for once the last is handed on, so a slow reader (a pager) holds
 * at most one pull's letters. Ends early when those not yet read are deleted
 * meanwhile (a replay or a purge run at the same time), which the consumer
 * would otherwise wait for for ever. Rejects when the stream cannot be read.
 */
export async function* readDeadLetters(nc: NatsConnection, from = 1): AsyncGenerator<DeadLetter> {
  const jsm = await jetStreamManagerOf(nc);
  const info = await jsm.streams.info(deadLetterStreamSpec.name).catch((err: unknown) => {
    throw new Error(`the dead letter stream ${deadLetterStreamSpec.name} cannot be read (have the services started?): ${(err as Error).message}`, { cause: err });
  });
  const lastSeq = info.state.last_seq;
  if (info.state.messages === 0 || from > lastSeq) return;
  const reader = await openObserverReader(nc, { stream: deadLetterStreamSpec.name, start: { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from } });
  try {
    let read = from - 1;
    for (;;) {
      // By bytes, not the default 100 messages: 100 dead letters near max_payload are 90 MB in flight, over the
      // server's 64 MB of pending output for a client, and it drops the connection as a slow consumer. A consumer
      // that pulls again as letters arrive (consume) would pile up all of them behind a slow reader. A pull is
      // read to its end before its letters are handed on.
      const pulled = await reader.fetch({ max_bytes: pullAheadBytes(nc), expires: quietMs });
      const letters: DeadLetter[] = [];
      let last = false;
      for (const msg of pulled) {
        if (msg.seq > lastSeq) {
          last = true;
          break;
        }
        letters.push(fromJsMsg(msg));
        read = msg.seq;
        if (msg.seq >= lastSeq || msg.info.pending === 0) {
          last = true;
          break;
        }
      }
      yield* letters;
      if (last || (letters.length === 0 && !(await storedBetween(jsm, read + 1, lastSeq)))) return;
    }
  } finally {
    await reader.close();
  }
}

/** Whether the dead letter stream still holds a message from sequence `from` to `to`. */
async function storedBetween(jsm: JetStreamManager, from: number, to: number): Promise<boolean> {
  return ((await storedMessage(jsm, deadLetterStreamSpec.name, from, ">"))?.seq ?? Number.POSITIVE_INFINITY) <= to;
}

/**
 * The message of `stream` at sequence `seq`, or with `subject` the first at
 * or after it on that subject; undefined when the stream holds none. Rejects,
 * naming the stream and sequence, when the stream cannot be read.
 */
export async function storedMessage(jsm: JetStreamManager, stream: string, seq: number, subject?: string): Promise<StoredMsg | undefined> {
  try {
    return await jsm.streams.getMessage(stream, subject === undefined ? { seq } : ({ seq, next_by_subj: subject } as never));
  } catch (err) {
    if ((err as NatsError).api_error?.err_code === noMessageFound) return undefined;
    throw new Error(`reading stream ${stream} at sequence ${seq} failed: ${(err as Error).message}`, { cause: err });
  }
}

/** One dead letter by its sequence; rejects saying so when there is none, and with the server's reason when it cannot be read. */
export async function getDeadLetter(nc: NatsConnection, seq: number): Promise<DeadLetter> {
  const jsm = await jetStreamManagerOf(nc);
  const stored = await jsm.streams.getMessage(deadLetterStreamSpec.name, { seq }).catch((err: unknown) => {
    if ((err as NatsError).api_error?.err_code === noMessageFound) {
      throw new Error(`there is no dead letter ${seq} in ${deadLetterStreamSpec.name}: replayed or purged since, or never filed (\`concord dlq list\` shows those there are)`, { cause: err });
    }
    throw new Error(`reading dead letter ${seq} in ${deadLetterStreamSpec.name} failed: ${(err as Error).message}`, { cause: err });
  });
  return deadLetterOfStored(stored);
}

/**
 * One dead letter by its sequence, or undefined when the stream no longer
 * holds it (replayed or purged). Rejects when the stream cannot be read.
 */
export async function findDeadLetter(nc: NatsConnection, seq: number): Promise<DeadLetter | undefined> {
  const stored = await storedMessage(await jetStreamManagerOf(nc), deadLetterStreamSpec.name, seq);
  return stored && deadLetterOfStored(stored);
}

/**
 * The first dead letter at or after sequence `seq` and up to `last`, or
 * undefined when there is none: read on its own, nothing pulled ahead.
 * Rejects when the stream cannot be read.
 */
export async function nextDeadLetter(nc: NatsConnection, seq: number, last: number): Promise<DeadLetter | undefined> {
  const stored = await storedMessage(await jetStreamManagerOf(nc), deadLetterStreamSpec.name, seq, ">");
  return stored && stored.seq <= last ? deadLetterOfStored(stored) : undefined;
}

function deadLetterOfStored(stored: StoredMsg): DeadLetter {
  const h = storedHeaders(stored);
  if ("unreadable" in h) {
    const letter = deadLetterOf(stored.seq, stored.subject, stored.time, new Map(), stored.data);
    return { ...letter, reason: `(the dead letter's headers cannot be read: ${h.unreadable})` };
  }
  return deadLetterOf(stored.seq, stored.subject, stored.time, new Map(h.keys().map((name) => [name, h.values(name)])), stored.data);
}

/**
 * The Nats-Msg-Id of a replay: new to JetStream (the original's id, its
 * ce-id, would be dropped as a duplicate within the stream's duplicate
 * window) yet the same for a second attempt at replaying the same dead
 * letter, so a replay cut short and run again is stored once. The ce-id
 * stays the original's: consumers that processed the event already have
 * it in their inbox and drop it.
 */
export function replayMsgId(letter: DeadLetter): string {
  return `${letter.id}.replay.${letter.seq}`;
}

/** Why a dead letter cannot be replayed (no original subject, or no ce-id to deduplicate it by); undefined when it can. */
export function whyNotReplayable(letter: DeadLetter): string | undefined {
  if (!letter.subject) return `dead letter ${letter.seq} does not say which subject it came from (no ${deadLetterHeaders.subject} header)`;
  if (!letter.id) return `dead letter ${letter.seq} has no ce-id, so a replay could not be deduplicated`;
  return undefined;
}

/** The event a dead letter stands for, as its source stream holds it: what a replay publishes. */
export interface SourceEvent {
  /** When its source stream stored it. */
  readonly storedAt: Date;
  readonly data: Uint8Array;
  /** Its headers as stored, every value (the server's Nats-* ones left out). */
  readonly headers: MsgHdrs;
}

/** A stored event's headers, to publish it again: every value of each, the server's own (Nats-*) left out. */
export function republishedHeaders(stored: StoredMsg): MsgHdrs {
  const h = natsHeaders();
  if (stored.header) for (const name of stored.header.keys()) if (!/^nats-/i.test(name)) for (const value of stored.header.values(name)) h.append(name, value);
  return h;
}

/**
 * The event of `letter` read from its source stream, or why there is none
 * to replay. A dead letter is only a service's word: the user of any
 * service may file one under its own consumers' dead letter subjects with
 * whatever headers and payload it likes, so a replay, which goes out with
 * the operator's right to publish every event, publishes only what the
 * source stream holds at the dead letter's sequence, once that is the
 * event the dead letter names (its subject, its ce-id, and its payload
 * when kept). The stream is the one the dead letter's own subject names
 * (concord.dlq.<stream>.<durable>). An event the stream no longer holds
 * (its limits removed it) cannot be vouched for, and is not replayed.
 */
export async function sourceEventOf(nc: NatsConnection, letter: DeadLetter): Promise<SourceEvent | { readonly refusal: string }> {
  const refusal = whyNotReplayable(letter);
  if (refusal) return { refusal };
  const why = (what: string) => ({ refusal: `dead letter ${letter.seq} ${what}; it is not replayed` });
  if (letter.dlqSubject !== deadLetterSubject(deadLetterStreamSpec, letter.stream, letter.consumer)) {
    return why(`was filed on ${letter.dlqSubject} but names stream ${JSON.stringify(letter.stream)} and consumer ${JSON.stringify(letter.consumer)}`);
  }
  if (!(Number.isSafeInteger(letter.streamSequence) && letter.streamSequence > 0)) return why(`names no sequence in stream ${letter.stream}`);
  const jsm = await jetStreamManagerOf(nc);
  let stored;
  try {
    stored = await storedMessage(jsm, letter.stream, letter.streamSequence);
  } catch (err) {
    // A stream that does not exist vouches for nothing; any other failure to read it (a timeout, say) is no
    // answer about the event, and stops the command rather than being reported as the dead letter's fault.
    if (((err as Error).cause as NatsError | undefined)?.api_error?.err_code !== noSuchStream) throw err;
    return why(`names stream ${letter.stream}, which does not exist, so nothing vouches for it`);
  }
  if (!stored) return why(`names the event at sequence ${letter.streamSequence} of stream ${letter.stream}, which no longer holds it, so nothing vouches for it`);
  const headers = storedHeaders(stored);
  if ("unreadable" in headers) return why(`names the event at sequence ${letter.streamSequence} of stream ${letter.stream}, whose headers cannot be read (${headers.unreadable})`);
  const kept = letter.payloadOmittedBytes === undefined;
  if (stored.subject !== letter.subject || headers.get("ce-id") !== letter.id || (kept && !Buffer.from(stored.data).equals(Buffer.from(letter.data)))) {
    return why(`does not match the event at sequence ${letter.streamSequence} of stream ${letter.stream} (its subject, ce-id or payload differ)`);
  }
  return { storedAt: stored.time, data: stored.data, headers: republishedHeaders(stored) };
}

/**
 * Publishes a dead letter's event again to its original subject, as its
 * source stream holds it (see sourceEventOf), then deletes it from the dead
 * letter stream (one deleted meanwhile by another replay or a purge is no
 * error: it is gone, and a second replay of it is stored once). Resolves
 * with `duplicate` when JetStream stored nothing, holding this replay
 * already (another replay of the dead letter published it within the
 * duplicate window: one run at the same time, or one cut short). Rejects
 * (the dead letter kept) when the source stream does not vouch for it or
 * JetStream does not take the event. `source`, when given, is what
 * sourceEventOf found for it already.
 */
export async function replayDeadLetter(nc: NatsConnection, letter: DeadLetter, source?: SourceEvent): Promise<{ readonly duplicate: boolean }> {
  const found = source ?? (await sourceEventOf(nc, letter));
  if ("refusal" in found) throw new Error(found.refusal);
  const { duplicate } = await nc.jetstream().publish(letter.subject, found.data, { headers: found.headers, msgID: replayMsgId(letter) });
  const jsm = await jetStreamManagerOf(nc);
  await jsm.streams.deleteMessage(deadLetterStreamSpec.name, letter.seq, false).catch((err: unknown) => {
    if (!isGoneAlready(err)) throw err;
  });
  return { duplicate };
}

/**
 * Whether a delete failed because the stream holds that sequence no more
 * (or never did): 10057 is any failed delete, its description saying so
 * for a message at either end of the stream ("no message found") and for
 * one past its last ("stream store EOF"); 10043 is one deleted from among
 * others ("sequence 2 not found").
 */
function isGoneAlready(err: unknown): boolean {
  const api = (err as NatsError).api_error;
  return api?.err_code === 10043 || (api?.err_code === 10057 && (api.description === "no message found" || api.description === "stream store EOF"));
}

/**
 * Deletes the dead letters of these sequences, and nothing else (a poison
 * event, say, among dead letters still to replay); resolves with those it
 * deleted and those the stream did not hold (replayed or purged since, or
 * never filed). Rejects when JetStream refuses a delete for another reason.
 */
export async function deleteDeadLetters(nc: NatsConnection, seqs: readonly number[]): Promise<{ readonly deleted: number[]; readonly missing: number[] }> {
  const jsm = await jetStreamManagerOf(nc);
  const deleted: number[] = [];
  const missing: number[] = [];
  for (const seq of new Set(seqs)) {
    try {
      await jsm.streams.deleteMessage(deadLetterStreamSpec.name, seq, false);
      deleted.push(seq);
    } catch (err) {
      if (!isGoneAlready(err)) throw err;
      missing.push(seq);
    }
  }
  return { deleted, missing };
}

/** Deletes every dead letter; resolves with how many there were. */
export async function purgeDeadLetters(nc: NatsConnection): Promise<number> {
  const jsm = await jetStreamManagerOf(nc);
  const { purged } = await jsm.streams.purge(deadLetterStreamSpec.name);
  return purged;
}
