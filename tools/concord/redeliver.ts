/**
 * Delivering again the events a durable consumer's server gave up on (a
 * max_deliver reached, as earlier versions set it): each event of the
 * consumer's subject in the range is published again, as `dlq replay`
 * publishes a dead letter, with its own headers and payload. The consumer
 * itself is left alone: the operator may not touch a service's consumer.
 */
import { type ConsumerInfo, type JetStreamManager, type NatsConnection, type NatsError } from "nats";
import { allStreams } from "../../gen/ts/concord_streams.js";
import { republishedHeaders, storedHeaders, storedMessage } from "./dead-letters.js";
import { nameProblem } from "../../platform/events/provision.js";

const consumerNotFound = 10014;
const streamNotFound = 10059;

/** The names of the durable consumers on the contracts' streams, sorted; a stream not made yet has none. */
export async function durableConsumers(jsm: JetStreamManager): Promise<string[]> {
  const durables: string[] = [];
  for (const stream of allStreams.map((s) => s.name)) {
    try {
      for await (const info of jsm.consumers.list(stream)) if (info.config.durable_name) durables.push(info.config.durable_name);
    } catch {
      // A stream not made yet has no consumers.
    }
  }
  return durables.sort();
}

/** The durable consumer `durable` on whichever of the contracts' streams holds it; rejects naming the streams, and the durable consumers there are, when none does. */
export async function findConsumer(jsm: JetStreamManager, durable: string): Promise<ConsumerInfo> {
  const streams = allStreams.map((s) => s.name);
  // A name no consumer may have ("../x", "a.b"): nats.js refused it as "invalid durable name", said as reading it failed.
  for (const stream of nameProblem(durable) === undefined ? streams : []) {
    try {
      return await jsm.consumers.info(stream, durable);
    } catch (err) {
      const code = (err as NatsError).api_error?.err_code;
      if (code !== consumerNotFound && code !== streamNotFound) throw new Error(`reading consumer ${durable} on stream ${stream} failed: ${(err as Error).message}`, { cause: err });
    }
  }
  const durables = await durableConsumers(jsm);
  throw new Error(`there is no durable consumer ${durable} on stream ${streams.join(" or ")}; the durable consumers are ${durables.join(", ") || "none (have the services started?)"}`);
}

/** A range of stream sequences, both ends included. */
export interface SequenceRange {
  readonly from: number;
  readonly to: number;
}

/**
 * The stream sequences a consumer's state shows given up on: those after its
 * acknowledgement floor up to its last delivery, when nothing awaits an ack
 * (an event awaiting one is still the consumer's). A string says why the
 * state shows none.
 */
export function abandonedRange(info: ConsumerInfo): SequenceRange | string {
  const floor = info.ack_floor.stream_seq;
  const last = info.delivered.stream_seq;
  if (info.num_ack_pending > 0) {
    return `consumer ${info.name} has ${info.num_ack_pending} event(s) awaiting an ack, so its state does not tell which were given up on; give --from and --to (the sequences its service's warning names)`;
  }
  // Told by the consumer's own sequence, one per delivery: on a cluster a filtered consumer's delivered stream
  // sequence also moves past other subjects' events it never received (as the service's warning tells it).
  if (info.ack_floor.consumer_seq >= info.delivered.consumer_seq || floor >= last) {
    return `consumer ${info.name} holds no events the server stopped delivering (every event it was given is acknowledged)`;
  }
  return { from: floor + 1, to: last };
}

/** What `redeliver` did with one stored event. */
export interface Redelivered {
  readonly seq: number;
  readonly subject: string;
  readonly type: string;
  readonly id: string;
  /** JetStream already held this copy (a run within its duplicate window): stored once. */
  readonly duplicate: boolean;
}

/**
 * The Nats-Msg-Id of an event published again: new to JetStream (the
 * original's id is dropped as a duplicate within the stream's duplicate
 * window), the same for a second run over the same sequence.
 */
export function redeliverMsgId(id: string, seq: number): string {
  return `${id}.redeliver.${seq}`;
}

/** Events in the range older than the inbox's retention, which a consumer may have handled and forgotten. */
export class PastInboxError extends Error {
  constructor(
    readonly count: number,
    readonly oldest: Date,
    retention = "",
  ) {
    super(`${count} event(s) in the range are older than the inboxes' retention (${retention ? `${retention}; ` : ""}the oldest from ${oldest.toISOString()}): one handled already may no longer be known there and would take effect again`);
  }
}

/** How a redelivery ended: how many events it published (or would have, in a dry run), and, when `stop` ended it early, the first stream sequence of the range it did not go through. */
export interface RedeliverOutcome {
  readonly count: number;
  readonly stoppedAt?: number;
}

/**
 * Publishes again every event of `consumer`'s filter subjects that its
 * stream holds in `range`, oldest first, to the subject it was published
 * to, with its own headers (its ce-id among them, every value of each) and
 * payload: every consumer of that subject receives it, and one whose inbox
 * has the id drops it. Rejects with PastInboxError, publishing nothing, when
 * an event was stored before `notBefore` (an inbox forgets the ids it
 * handled after its retention). With `dryRun`, publishes nothing. Calls
 * `each` per event; events without a ce-id, and those gone from the stream
 * between the passes, are left out (`skipped`). Rejects when JetStream does
 * not take one, after those before it.
 *
 * Two passes, holding one event at a time however many the range holds:
 * the first finds the events' sequences and checks their age, the second
 * reads each again by its sequence and publishes it; `betweenPasses` runs
 * between them. Once `stop` is aborted (Ctrl-C), it ends before the next
 * event, the one in hand published, and says where (`stoppedAt`).
 */
export async function redeliver(
  nc: NatsConnection,
  consumer: ConsumerInfo,
  range: SequenceRange,
  options: {
    readonly dryRun: boolean;
    readonly notBefore?: Date;
    /** The retention notBefore comes from, as its refusal names it (`2d, from INBOX_RETENTION`). */
    readonly retention?: string;
    readonly each: (event: Redelivered) => void;
    readonly skipped: (seq: number, why: string) => void;
    readonly betweenPasses?: () => Promise<void>;
    readonly stop?: AbortSignal;
  },
): Promise<RedeliverOutcome> {
  const jsm = await nc.jetstreamManager();
  const js = nc.jetstream();
  const stream = consumer.stream_name;
  const filters = consumer.config.filter_subjects?.length ? consumer.config.filter_subjects : [consumer.config.filter_subject || ">"];
  const seqs: number[] = [];
  let old = 0;
  let oldest: Date | undefined;
  for (const filter of filters) {
    for (let seq = range.from; seq <= range.to; ) {
      if (options.stop?.aborted) return { count: 0, stoppedAt: range.from };
      const stored = await storedMessage(jsm, stream, seq, filter);
      if (!stored || stored.seq > range.to) break;
      seq = stored.seq + 1;
      seqs.push(stored.seq);
      if (options.notBefore && stored.time.getTime() < options.notBefore.getTime()) {
        old++;
        if (!oldest || stored.time < oldest) oldest = stored.time;
      }
    }
  }
  if (oldest) throw new PastInboxError(old, oldest, options.retention);
  seqs.sort((a, b) => a - b);
  await options.betweenPasses?.();
  let count = 0;
  for (const seq of seqs) {
    if (options.stop?.aborted) return { count, stoppedAt: seq };
    const stored = await storedMessage(jsm, stream, seq);
    if (!stored) {
      options.skipped(seq, "it is gone from the stream since the range was read");
      continue;
    }
    const headers = storedHeaders(stored);
    if ("unreadable" in headers) {
      options.skipped(stored.seq, `its headers cannot be read (${headers.unreadable})`);
      continue;
    }
    const id = headers.get("ce-id");
    if (!id) {
      options.skipped(stored.seq, "it has no ce-id, so a consumer could not tell it from a new event");
      continue;
    }
    let duplicate = false;
    if (!options.dryRun) {
      duplicate = (await js.publish(stored.subject, stored.data, { headers: republishedHeaders(stored), msgID: redeliverMsgId(id, stored.seq) })).duplicate;
    }
    count++;
    options.each({ seq: stored.seq, subject: stored.subject, type: headers.get("ce-type"), id, duplicate });
  }
  return { count };
}

