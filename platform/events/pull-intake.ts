import type { Consumer, ConsumerMessages, JetStreamClient, JsMsg, NatsConnection } from "nats";
import type { Logger } from "../log/index.js";
import { allowPullMaxBytes, onLeadershipChange, receivedBytes, withPullMaxBytes } from "./nats-internals.js";
import { PullFailureLines } from "./pull-failure-lines.js";
import { defaultMaxPayloadBytes } from "./event-rules.js";

/** The default of startConsumers's `maxHeldBytes`: what one consumer holds at most of events, in bytes. */
export const defaultMaxHeldBytes = 8 * 1024 * 1024;

/**
 * The largest message `nc`'s server delivers, as a pull request's max_bytes counts it: its max_payload, which
 * bounds headers and data, and 8 KiB for the subject and the ack reply, each far below 4 KiB.
 */
export const maxMessageBytesOf = (nc: NatsConnection): number => (nc.info?.max_payload ?? defaultMaxPayloadBytes) + 8 * 1024;

export interface PullIntakeOptions {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly stream: string;
  readonly durable: string;
  /** Most messages waiting to be taken plus requested from the server; the batch being handled comes on top. */
  readonly limit: number;
  /**
   * Most bytes of messages held (received and not settled, the batch being handled among them) plus what the pull
   * requests under way may still bring, as nats-server counts them (subject, reply, headers and data). A pull asks
   * for no more bytes than are free, and waits while fewer than `maxMessageBytes` are, unless nothing is held: one
   * message always comes, however large. Taken as twice `maxMessageBytes` when that is more, so that small messages
   * are still pulled while others are held.
   */
  readonly maxBytes: number;
  /** The largest message the server takes (its max_payload), with its subject and reply. */
  readonly maxMessageBytes: number;
  /** The consumer's ack_wait: a message held this long without an ack or a progress ack is redelivered. */
  readonly ackWaitMs: number;
  /** Pause before pulling again after pulling failed. */
  readonly reopenDelayMs: number;
  /** Where failed pulls are told, a warning per consumer every 10 s at most (see PullFailureLines). */
  readonly logger: Logger;
}

/**
 * The messages of one durable pull consumer on their way to the handler.
 * Pulls ahead a bounded number and bytes, and knows every message it has received
 * until it is settled, so that each one, waiting or being handled, gets a
 * progress ack before its ack_wait runs out: a slow handler is not taken for
 * a dead process. Only a process that is gone, or blocked for more than
 * about a third of the ack wait, can have its messages redelivered.
 */
export interface PullIntake {
  /** The messages held (received and not settled) and their bytes, as `maxBytes` counts them. */
  held(): { readonly messages: number; readonly bytes: number };
  /** Waits for at least one message, then takes every one that has arrived with it, up to `max`; undefined once closed. */
  take(max: number): Promise<JsMsg[] | undefined>;
  /** Acks or naks a taken message and forgets it. */
  settle(msg: JsMsg, settlement: { readonly kind: "ack" } | { readonly kind: "retry"; readonly delayMs: number }): void;
  /** Stops keeping a taken message alive without settling it: the server redelivers it after ack_wait. */
  forget(msg: JsMsg): void;
  /** Sends a progress ack for each message held that has had no sign of life for a while; call between stretches of synchronous work. */
  keepAlive(): void;
  /** Stops pulling, naks what was pulled but not taken, and resolves when pulling has ended. Taken messages can still be settled. */
  close(): Promise<void>;
}

/**
 * A pull request stays open this long when nothing arrives; the server sends
 * idle heartbeats at half of it, and nats.js ends the request after two
 * missed ones. It bounds how long a request left at a consumer leader that
 * died (or hangs) waits before a new one goes to the new leader; a leader
 * that steps down tells its requests at once (409 Leadership Change).
 */
const pullExpiresMs = 5_000;

/**
 * Keeps out of a consumer's pull inbox what its consumer did not deliver. A
 * push consumer of another user's (the observer's, which may make push
 * consumers under its own names) may deliver to any subject some client
 * listens on, a service's pull inbox among them (`/connz?subs=1` of a
 * server's monitoring endpoint names them): nats.js took such messages as
 * the pull's own, so the service handled events its consumer never
 * delivered, dead-lettering those of another type, and acked them to a
 * consumer its user may not ack for. A message is the consumer's own when
 * its ack subject names the consumer's stream and durable (`$JS.ACK.<stream>.<durable>.`,
 * the only acks the service's user may send): nats.js parses that subject for
 * each message anyway (msg.info), and here two strings are compared.
 * Others are dropped, neither handled nor acked, with a warning at once and
 * then at most one every 10 s, counting them.
 */
class StrayLines {
  private untold = 0;
  private lastWarningAt = -Infinity;
  constructor(
    private readonly logger: Logger,
    private readonly stream: string,
    private readonly durable: string,
  ) {}
  ours(msg: JsMsg): boolean {
    // nats.js reads the ack subject once, here rather than at the first msg.info after: a subject not of JetStream throws.
    let from: { readonly stream: string; readonly consumer: string } | undefined;
    try {
      from = msg.info;
    } catch {
      from = undefined;
    }
    if (from?.stream === this.stream && from.consumer === this.durable) return true;
    this.untold++;
    const now = performance.now();
    if (now - this.lastWarningAt >= 10_000) {
      this.logger.warn(
        { stream: this.stream, consumer: this.durable, count: this.untold, subject: msg.subject, deliveredBy: from ? `${from.stream} > ${from.consumer}` : "no JetStream consumer" },
        `dropped messages in the pull inbox of consumer ${this.durable} that it did not deliver (another consumer's, sent to that inbox); neither handled nor acked`,
      );
      this.untold = 0;
      this.lastWarningAt = now;
    }
    return false;
  }
}

/**
 * One pull request of `max` messages. nats.js's `fetch` builds, as it is
 * called, the error it would reject with if the request outlived its
 * expiry, and with it a stack trace (whatever the connection's
 * `noAsyncTraces`): about 1% of a busy consumer's CPU, for an error this
 * intake never shows. Errors made during the call carry no stack.
 */
function fetchUntraced(consumer: Consumer, max: number, maxBytes: number | undefined): Promise<ConsumerMessages> {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    const options = { max_messages: max, expires: pullExpiresMs };
    return consumer.fetch(maxBytes === undefined ? options : withPullMaxBytes(options, maxBytes));
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/**
 * Starts pulling for one consumer: a new pull request whenever a quarter of
 * `limit` is free, for as many messages as are free, so the next messages
 * are on their way while the last ones are handled. Each request also
 * carries the bytes free under `maxBytes` as its max_bytes, so large
 * messages are bounded by their size as small ones are by their count; a
 * request holds its max_bytes until it ends, so while one holds them all a
 * second waits for it. Per message this counts its bytes in and out (held,
 * and what its request may still bring). Messages are handed out in the
 * order the server delivered them, whichever request brought them.
 */
export function createPullIntake(options: PullIntakeOptions): PullIntake {
  const { nc, js, stream, durable, limit, maxMessageBytes, reopenDelayMs, logger } = options;
  const maxBytes = Math.max(options.maxBytes, 2 * maxMessageBytes);
  // Without it (another nats.js), pulls go by count alone.
  const byBytes = allowPullMaxBytes();
  // A message gets a progress ack once it has gone a sixth of ack_wait without one; checked as often.
  const keepAliveMs = Math.max(1, Math.floor(options.ackWaitMs / 6));
  const refillAt = Math.max(1, Math.floor(limit / 4));
  const waiting: JsMsg[] = [];
  /** Every message received and not yet settled, with when the server last had a sign of life for it. */
  const held = new Map<JsMsg, number>();
  /** Messages asked for by the pull requests under way and not received yet. */
  let outstanding = 0;
  /** The bytes of the messages in `held`. */
  let heldBytes = 0;
  /** Bytes the pull requests under way may still bring (each one's max_bytes less what it brought). */
  let reservedBytes = 0;
  /** Set while the pulling loop waits for bytes to be settled: settling then wakes it. */
  let shortOfBytes = false;
  /**
   * A request ended at once with nothing: likely at a message larger than its max_bytes (stored before the server's
   * max_payload was lowered). The next asks for one message without a byte limit, once nothing is held.
   */
  let oversized = false;
  const requests = new Set<ConsumerMessages>();
  const failureLines = new PullFailureLines(logger, stream, durable, reopenDelayMs);
  const strays = new StrayLines(logger, stream, durable);
  let failure: unknown;
  let closed = false;
  let arrived: (() => void) | undefined;
  let nudged: (() => void) | undefined;
  const notifyArrival = () => {
    arrived?.();
    arrived = undefined;
  };
  /** Wakes the pulling loop: there is room again, a request ended, or it is closing. */
  const nudge = () => {
    nudged?.();
    nudged = undefined;
  };
  const untilNudged = (ms?: number) =>
    new Promise<void>((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(resolve, ms);
      nudged = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  const keepAlive = (): void => {
    const now = performance.now();
    for (const [msg, lastSign] of held) {
      if (now - lastSign < keepAliveMs) continue;
      msg.working();
      held.set(msg, now);
    }
    if (closed && held.size === 0) clearInterval(timer);
  };
  const timer = setInterval(keepAlive, keepAliveMs);
  timer.unref();

  /** Places a message by its delivery sequence: two requests' messages can reach here interleaved. */
  const receive = (msg: JsMsg, size: number): void => {
    held.set(msg, performance.now());
    heldBytes += size;
    const seq = msg.info.deliverySequence;
    let i = waiting.length;
    while (i > 0 && waiting[i - 1].info.deliverySequence > seq) i--;
    if (i === waiting.length) waiting.push(msg);
    else waiting.splice(i, 0, msg);
    notifyArrival();
  };

  /** Takes in what one pull request, sent at `sentAt`, brings until it is filled, expires or fails. */
  const drain = async (messages: ConsumerMessages, asked: number, askedBytes: number | undefined, sentAt: number): Promise<void> => {
    let received = 0;
    let bytesIn = 0;
    try {
      for await (const msg of messages) {
        if (received++ < asked) outstanding--;
        if (!strays.ours(msg)) continue;
        const size = receivedBytes(msg);
        receive(msg, size);
        if (askedBytes === undefined) continue;
        reservedBytes -= Math.max(0, Math.min(size, askedBytes - bytesIn));
        bytesIn += size;
        // Filled: the server ends it without a word, and nats.js, asked for bytes, would wait for its expiry.
        if (received >= asked || bytesIn >= askedBytes) messages.stop();
      }
      if (received === 0 && askedBytes !== undefined && !closed && performance.now() - sentAt < pullExpiresMs / 2) oversized = true;
      if (!closed) failureLines.pulled(sentAt);
    } catch (err) {
      failure ??= err;
    } finally {
      outstanding -= Math.max(0, asked - received);
      if (askedBytes !== undefined) reservedBytes -= Math.max(0, askedBytes - bytesIn);
      requests.delete(messages);
      nudge();
    }
  };

  const pulling = (async () => {
    let consumer: Consumer | undefined;
    while (!closed && !nc.isClosed()) {
      if (failure !== undefined) {
        failureLines.failed(failure);
        failure = undefined;
        consumer = undefined;
        await untilNudged(reopenDelayMs);
        continue;
      }
      let room = limit - waiting.length - outstanding;
      if (room < refillAt) {
        await untilNudged();
        continue;
      }
      let bytes: number | undefined;
      if (byBytes) {
        const idle = heldBytes === 0 && reservedBytes === 0;
        const free = maxBytes - heldBytes - reservedBytes;
        if (!idle && (oversized || free < maxMessageBytes)) {
          shortOfBytes = true;
          await untilNudged();
          shortOfBytes = false;
          continue;
        }
        if (oversized) room = 1;
        else bytes = Math.max(free, maxMessageBytes);
        oversized = false;
      }
      try {
        consumer ??= await js.consumers.get(stream, durable);
        if (closed) break;
        const sentAt = performance.now();
        const messages = await fetchUntraced(consumer, room, bytes);
        outstanding += room;
        reservedBytes += bytes ?? 0;
        requests.add(messages);
        // The request is gone with the old leader: end it, and the loop asks the new one.
        await onLeadershipChange(messages, () => messages.stop());
        if (closed) messages.stop();
        void drain(messages, room, bytes, sentAt);
      } catch (err) {
        failure ??= err;
      }
    }
    if (!closed) logger.warn("the NATS connection is closed; the consumer stops");
    closed = true;
    for (const messages of requests) messages.stop();
    notifyArrival();
  })();

  let closing: Promise<void> | undefined;
  /** Forgets a settled or forgotten message; wakes the pulling loop when it waits for bytes. */
  const release = (msg: JsMsg): void => {
    if (!held.delete(msg)) return;
    heldBytes -= receivedBytes(msg);
    if (shortOfBytes) nudge();
  };

  return {
    held: () => ({ messages: held.size, bytes: heldBytes }),
    async take(max) {
      if (waiting.length === 0) {
        while (waiting.length === 0 && !closed) await new Promise<void>((resolve) => (arrived = resolve));
        // What arrived together is handed over within microtasks: one macrotask later it is all here.
        await new Promise((resolve) => setImmediate(resolve));
      }
      if (closed) return undefined;
      const batch = waiting.splice(0, max);
      if (limit - waiting.length - outstanding >= refillAt) nudge();
      return batch;
    },
    settle(msg, settlement) {
      release(msg);
      if (settlement.kind === "ack") msg.ack();
      else msg.nak(settlement.delayMs);
    },
    forget(msg) {
      release(msg);
    },
    keepAlive,
    close() {
      closing ??= (async () => {
        closed = true;
        for (const messages of requests) messages.stop();
        notifyArrival();
        nudge();
        await pulling;
        while (requests.size > 0) await untilNudged(100);
        // Pulled but not started: hand it back so another instance need not wait out ack_wait.
        for (const msg of waiting.splice(0)) {
          release(msg);
          msg.nak();
        }
        if (held.size === 0) clearInterval(timer);
      })();
      return closing;
    },
  };
}
