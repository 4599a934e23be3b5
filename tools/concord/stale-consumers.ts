/**
 * `npx concord consumer stale [--delete]`: the durable consumers on the
 * contracts' streams that no contract declares, left on the server by a
 * subscription the contracts dropped or renamed (README "Breaking
 * changes"). Each still holds its place in its stream and counts against
 * the stream's consumers; none is any service's any more. The operator may
 * delete them, and only them: its NATS user is denied the deletion of every
 * durable the contracts declare.
 */
import type { ConsumerInfo, JetStreamManager } from "nats";
import { natsAuthorization } from "../../gen/ts/concord_nats.js";
import { allStreams } from "../../gen/ts/concord_streams.js";

/** A consumer that was in use this recently (a message delivered or acknowledged) is not deleted. */
export const inUseWithinMs = 15 * 60_000;

/**
 * How long `--delete` watches the consumers before it deletes: one a client
 * reads through meanwhile (a pull request waiting, its position moved) is
 * kept. nats-server keeps the times inUseWithinMs reads in memory only, so
 * after its restart they say nothing of a consumer that has not delivered
 * since; a running client's pull requests and deliveries show all the same.
 */
export const watchMs = 10_000;

/** A durable consumer no contract declares, as the server has it. */
export interface StaleConsumer {
  readonly stream: string;
  readonly durable: string;
  /** Messages of its stream on its filter it has not been delivered. */
  readonly pending: number;
  /** Delivered and not yet acknowledged. */
  readonly unacknowledged: number;
  /** Pull requests waiting on it now: a client reads through it. */
  readonly waitingPulls: number;
  /** The stream sequence of the last message it delivered. */
  readonly lastDelivered: number;
  /** The stream sequence up to which every message it delivered is acknowledged. */
  readonly ackFloor: number;
  /** When it last delivered or had a message acknowledged (ISO 8601); none when it never did, or nats-server has not seen it since it started. */
  readonly lastActive?: string;
}

/** The declared durables, `stream/durable`, and the observer's consumer names (its own, made and deleted as it reads). */
const declared = new Set(natsAuthorization.services.flatMap((user) => user.consumers.map((c) => `${c.stream}/${c.durable}`)));
const observerNames: ReadonlySet<string> = new Set(natsAuthorization.observer.consumerNames);

/** The durable consumers on the contracts' streams that no contract declares, by stream and name. */
export async function staleConsumers(jsm: JetStreamManager): Promise<StaleConsumer[]> {
  const stale: StaleConsumer[] = [];
  for (const { name: stream } of allStreams) {
    const infos: ConsumerInfo[] = [];
    try {
      for await (const info of jsm.consumers.list(stream)) infos.push(info);
    } catch {
      // A stream not made yet has no consumers.
      continue;
    }
    for (const info of infos) {
      const durable = info.config.durable_name;
      if (durable === undefined || declared.has(`${stream}/${durable}`) || observerNames.has(durable)) continue;
      const lastActive = latest(info.delivered.last_active, info.ack_floor.last_active);
      stale.push({
        stream,
        durable,
        pending: info.num_pending,
        unacknowledged: info.num_ack_pending,
        waitingPulls: info.num_waiting,
        lastDelivered: info.delivered.stream_seq,
        ackFloor: info.ack_floor.stream_seq,
        ...(lastActive !== undefined && { lastActive }),
      });
    }
  }
  return stale.sort((a, b) => (a.stream === b.stream ? compare(a.durable, b.durable) : compare(a.stream, b.stream)));
}

/** Why `consumer` is not to be deleted now, or undefined when nothing reads through it. */
export function inUse(consumer: StaleConsumer, now = Date.now()): string | undefined {
  if (consumer.waitingPulls > 0) return `${consumer.waitingPulls} pull request(s) wait on it: a client reads through it`;
  if (consumer.lastActive !== undefined && now - Date.parse(consumer.lastActive) < inUseWithinMs) {
    return `it delivered or had a message acknowledged at ${consumer.lastActive}, within the last ${inUseWithinMs / 60_000} minutes`;
  }
  return undefined;
}

/**
 * Why `consumer` is not to be deleted, read again as `later` after watchMs: in use at either read, or read through
 * between them. Undefined when neither; "gone" when `later` is missing (another deleted it meanwhile).
 */
export function inUseWhileWatched(consumer: StaleConsumer, later: StaleConsumer | undefined, now = Date.now()): string | undefined {
  if (later === undefined) return "gone";
  const busy = inUse(consumer, now) ?? inUse(later, now);
  if (busy !== undefined) return busy;
  if (later.lastDelivered !== consumer.lastDelivered || later.ackFloor !== consumer.ackFloor) return `a client read through it in the ${watchMs / 1_000} s it was watched`;
  return undefined;
}

/** Deletes each of `consumers` (the operator's connection); resolves to those the server no longer had, deleted meanwhile. */
export async function deleteStaleConsumers(jsm: JetStreamManager, consumers: readonly StaleConsumer[]): Promise<StaleConsumer[]> {
  const gone: StaleConsumer[] = [];
  for (const consumer of consumers) {
    const deleted = await jsm.consumers.delete(consumer.stream, consumer.durable).catch((err: unknown) => {
      if ((err as { api_error?: { err_code?: number } }).api_error?.err_code === consumerNotFound) return false;
      throw new Error(`deleting consumer ${consumer.durable} of stream ${consumer.stream} failed: ${(err as Error).message}`, { cause: err });
    });
    if (!deleted) gone.push(consumer);
  }
  return gone;
}

/** JetStream's error code for a consumer that does not exist. */
const consumerNotFound = 10014;

/** The later of two `last_active` values: the server sends an ISO 8601 time, and leaves it out when there was none (nats.js types it as a number). */
function latest(...times: unknown[]): string | undefined {
  const known = times.filter((t): t is string => typeof t === "string" && !Number.isNaN(Date.parse(t)));
  return known.sort((a, b) => Date.parse(b) - Date.parse(a))[0];
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
