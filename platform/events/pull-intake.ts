import type { Consumer, ConsumerMessages, JetStreamClient, JsMsg, NatsConnection } from "nats";
import type { Logger } from "../log/index.js";

export interface PullIntakeOptions {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly stream: string;
  readonly durable: string;
  /** Most messages waiting to be taken plus requested from the server; the batch being handled comes on top. */
  readonly limit: number;
  /** The consumer's ack_wait: a message held this long without an ack or a progress ack is redelivered. */
  readonly ackWaitMs: number;
  /** Pause before pulling again after pulling failed. */
  readonly reopenDelayMs: number;
  readonly logger: Logger;
}

/**
 * The messages of one durable pull consumer on their way to the handler.
 * Pulls ahead a bounded number, and knows every message it has received
 * until it is settled, so that each one, waiting or being handled, gets a
 * progress ack before its ack_wait runs out: a slow handler is not taken for
 * a dead process. Only a process that is gone (or blocked for longer than
 * about half the ack wait) has its messages redelivered.
 */
export interface PullIntake {
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

/** A pull request stays open this long when nothing arrives; nats.js sends idle heartbeats at half of it. */
const pullExpiresMs = 30_000;

/**
 * Starts pulling for one consumer: one pull request at a time (so messages
 * arrive in stream order), sized to the room left under `limit`, renewed once
 * it is filled or expires and at least a quarter of the limit is free.
 */
export function createPullIntake(options: PullIntakeOptions): PullIntake {
  const { nc, js, stream, durable, limit, reopenDelayMs, logger } = options;
  // A message gets a progress ack once it has gone a sixth of ack_wait without one; checked as often.
  const keepAliveMs = Math.max(1, Math.floor(options.ackWaitMs / 6));
  const refillAt = Math.max(1, Math.floor(limit / 4));
  const waiting: JsMsg[] = [];
  /** Every message received and not yet settled, with when the server last had a sign of life for it. */
  const held = new Map<JsMsg, number>();
  let closed = false;
  let current: ConsumerMessages | undefined;
  let arrived: (() => void) | undefined;
  let nudged: (() => void) | undefined;
  const notifyArrival = () => {
    arrived?.();
    arrived = undefined;
  };
  /** Wakes the pulling loop: there is room again, or it is closing. */
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

  const pulling = (async () => {
    let consumer: Consumer | undefined;
    while (!closed && !nc.isClosed()) {
      const room = limit - waiting.length;
      if (room < refillAt) {
        await untilNudged();
        continue;
      }
      try {
        consumer ??= await js.consumers.get(stream, durable);
        if (closed) break;
        current = await consumer.fetch({ max_messages: room, expires: pullExpiresMs });
        if (closed) current.stop();
        for await (const msg of current) {
          held.set(msg, performance.now());
          waiting.push(msg);
          notifyArrival();
        }
      } catch (err) {
        consumer = undefined;
        if (!closed && !nc.isClosed()) {
          logger.warn({ err, retryInMs: reopenDelayMs }, "pulling messages failed; pulling again");
          await untilNudged(reopenDelayMs);
        }
      } finally {
        current = undefined;
      }
    }
    if (!closed) logger.warn("the NATS connection is closed; the consumer stops");
    closed = true;
    notifyArrival();
  })();

  let closing: Promise<void> | undefined;
  return {
    async take(max) {
      if (waiting.length === 0) {
        while (waiting.length === 0 && !closed) await new Promise<void>((resolve) => (arrived = resolve));
        // What arrived together is handed over within microtasks: one macrotask later it is all here.
        await new Promise((resolve) => setImmediate(resolve));
      }
      if (closed) return undefined;
      const batch = waiting.splice(0, max);
      if (limit - waiting.length >= refillAt) nudge();
      return batch;
    },
    settle(msg, settlement) {
      held.delete(msg);
      if (settlement.kind === "ack") msg.ack();
      else msg.nak(settlement.delayMs);
    },
    forget(msg) {
      held.delete(msg);
    },
    keepAlive,
    close() {
      closing ??= (async () => {
        closed = true;
        current?.stop();
        notifyArrival();
        nudge();
        await pulling;
        // Pulled but not started: hand it back so another instance need not wait out ack_wait.
        for (const msg of waiting.splice(0)) {
          held.delete(msg);
          msg.nak();
        }
        if (held.size === 0) clearInterval(timer);
      })();
      return closing;
    },
  };
}
