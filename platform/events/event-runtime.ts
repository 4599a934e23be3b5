import { createMessageChecker } from "../contracts/index.js";
import type { Logger } from "../log/index.js";
import type { Database } from "../sql/index.js";
import type { ConsumerBinding } from "./event-handler.js";
import { connectEventBus, type EventBus } from "./event-bus.js";
import { createOutbox, type Outbox } from "./outbox.js";
import { createOutboxRelay, type OutboxRelay } from "./outbox-relay.js";
import { startConsumers, type RunningConsumers } from "./consumer.js";
import { defaultMaxPayloadBytes } from "./event-rules.js";
import { ensureStreams } from "./provision.js";
import type { StreamSpec } from "./types.js";

export interface EventRuntimeOptions {
  /** The service's database; it must carry `eventMigrations`. */
  readonly db: Database;
  /** NATS server URL. */
  readonly natsUrl: string;
  /** Service name: `ce-source` of its events and its NATS connection name. */
  readonly service: string;
  /** Streams the service publishes to or consumes from, provisioned at start. */
  readonly streams: readonly StreamSpec[];
  /** The generated descriptor set: the events' contract rules, checked when they are emitted and consumed. */
  readonly descriptorSet: Uint8Array;
  readonly logger: Logger;
  /** How long a stop waits for committed events to reach JetStream. Default 5 s. */
  readonly flushTimeoutMs?: number;
}

/** A service's running event machinery. */
export interface EventRuntime {
  /** Where the service's changes put their events, inside their transaction. */
  readonly outbox: Outbox;
  readonly relay: OutboxRelay;
  readonly bus: EventBus;
  /** Starts the service's subscriptions (see bindConsumers); call once, when the service is otherwise ready. */
  startConsuming(consumers: readonly ConsumerBinding<any>[]): Promise<void>;
  /** Stops pulling and finishes in-flight handlers, publishes what is committed, drains the connection. */
  stop(): Promise<void>;
}

/**
 * Connects a service to JetStream the way every Concord service does:
 * streams provisioned from the generated specs (a conflicting existing
 * stream stops start-up), an outbox with its relay, then durable consumers.
 * Events are checked against their contracts both ways: an event that
 * breaks them, or is larger than the server's max_payload, is never stored
 * in the outbox, and a consumed one that breaks them is dead-lettered.
 */
export async function createEventRuntime(options: EventRuntimeOptions): Promise<EventRuntime> {
  const { db, service, logger } = options;
  const flushTimeoutMs = options.flushTimeoutMs ?? 5_000;
  const bus = await connectEventBus({ url: options.natsUrl, name: service, logger });
  let relay: OutboxRelay | undefined;
  try {
    await ensureStreams(bus.jsm, options.streams);
    const checker = createMessageChecker(options.descriptorSet);
    const outbox = createOutbox({ db, source: service, checker, maxPayloadBytes: () => bus.nc.info?.max_payload ?? defaultMaxPayloadBytes });
    relay = createOutboxRelay({ db, nc: bus.nc, logger });
    const started = relay;
    let consumers: RunningConsumers | undefined;
    let stopped: Promise<void> | undefined;
    return {
      outbox,
      relay: started,
      bus,
      async startConsuming(bindings) {
        if (consumers) throw new Error("startConsuming was already called");
        consumers = await startConsumers({ nc: bus.nc, db, service, consumers: bindings, logger, outbox, checker });
      },
      stop() {
        stopped ??= (async () => {
          await consumers?.stop();
          // Bounded: with NATS down, committed events stay in the outbox for the next start.
          const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not flushed within ${flushTimeoutMs} ms`)), flushTimeoutMs).unref());
          await Promise.race([started.flush(), timeout]).catch((err) => logger.warn({ err }, "events left in the outbox at shutdown; they go out at the next start"));
          await started.stop();
          await bus.close();
        })();
        return stopped;
      },
    };
  } catch (err) {
    await relay?.stop();
    await bus.close();
    throw err;
  }
}
