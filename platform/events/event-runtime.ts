import { createMessageChecker } from "../contracts/index.js";
import type { Logger } from "../log/index.js";
import type { Database, Retention } from "../sql/index.js";
import type { DeliveryMiddleware } from "./delivery.js";
import type { ConsumerBinding } from "./event-handler.js";
import { connectEventBus, isNatsUnreachable, SeedFileError, type EventBus } from "./event-bus.js";
import { defaultMaxPayloadBytes } from "./event-rules.js";
import { defaultInboxRetentionMs, inboxRetention } from "./inbox.js";
import { createOutbox, type Outbox } from "./outbox.js";
import { createOutboxRelay, OutboxRelayGaveUp, OutboxUnread, type OutboxRelay } from "./outbox-relay.js";
import { startConsumers, type RunningConsumers } from "./consumer.js";
import { ConsumerConflictError, ensureStreams, JetStreamLimitError, permissionDenied, StreamConflictError, StreamMissingError, StreamShortOfSpecError, StreamSubjectsHeldError, validateStreamSpec } from "./provision.js";
import { causeChain, Code, StatusError, unresolvedHost, unresolvedHostWait } from "../errors/index.js";
import type { StreamSpec } from "./types.js";
import { checkOptions, positiveInteger } from "../options/index.js";

export interface EventRuntimeOptions {
  /** The service's database; it must carry `eventMigrations`. */
  readonly db: Database;
  /** NATS server URL. */
  readonly natsUrl: string;
  /** How a wait for a host of `natsUrl` that does not resolve names the URL, the setting it came from (`NATS_URL`); default "the NATS URL". */
  readonly urlName?: string;
  /** How a refusal of the connection's credentials names the setting of the seed file (`NATS_NKEY_SEED`); default "the service's nkey seed file setting". */
  readonly seedName?: string;
  /** Service name: `ce-source` of its events and its NATS connection name. */
  readonly service: string;
  /** Which process of the service this is (its log lines' `instance`), named in its NATS connection's name (see connectEventBus). Default: none. */
  readonly instance?: string;
  /** Streams the service publishes to or consumes from, provisioned at start. */
  readonly streams: readonly StreamSpec[];
  /** The generated descriptor set: the events' contract rules, checked when they are emitted and consumed. */
  readonly descriptorSet: Uint8Array;
  readonly logger: Logger;
  /** How long a stop waits for committed events to reach JetStream. Default 5 s. */
  readonly flushTimeoutMs?: number;
  /** First and longest pause between attempts to reach NATS at start; doubling in between. Defaults 200 ms and 1 s. */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  /** How often the reason is logged again while NATS stays out of reach at start. Default 30 s. */
  readonly waitLogIntervalMs?: number;
  /** How long the inbox remembers a processed event (see inboxRetention). Default 7 days. */
  readonly inboxRetentionMs?: number;
  /** The service's own consumer pipeline steps (metrics, tracing), outermost first, around the default chain (pipeline.ts). */
  readonly middleware?: readonly DeliveryMiddleware[];
  /** File with the service's NATS user nkey seed; none: connect without credentials. */
  readonly nkeySeedFile?: string;
  /**
   * The `ce-source` of each stream's events, its owner (gen/ts/concord_nats.ts
   * `streamSources`): consumed events from anyone else are dead-lettered, and
   * streams the service does not own are created when missing but never changed.
   */
  readonly streamSources?: Readonly<Record<string, string>>;
  /** `db` was made at this start (see ensureConsumers): its consumers that acknowledged events already are warned of. */
  readonly newDatabase?: boolean;
}

/** A service's event machinery: the outbox at once, the rest once NATS has been reached. */
export interface EventRuntime {
  /** Where the service's changes put their events, inside their transaction. */
  readonly outbox: Outbox;
  /** The NATS connection; throws until `start` has reached NATS. */
  readonly bus: EventBus;
  /** The outbox relay; throws until `start` has reached NATS. */
  readonly relay: OutboxRelay;
  /**
   * Connects to NATS, trying again while its host does not resolve, it
   * cannot be reached or JetStream does not answer (`onWaiting` hears why,
   * logged once and then every `waitLogIntervalMs`), provisions the
   * streams, starts the relay and the service's consumers (see
   * bindConsumers). Resolves once all of that runs. Rejects on what trying
   * again cannot fix, with FAILED_PRECONDITION where the operator can (see
   * asRefusal), or when stopped first. Call once.
   */
  start(consumers: readonly ConsumerBinding<any>[], hooks?: { readonly onWaiting?: (reason: string) => void }): Promise<void>;
  /**
   * Says the service is stopping, before its gRPC calls drain: its relay, if it takes the outbox over from
   * another process stopping too, relays only until `stop` and does not say it took it over (see OutboxRelay.standDown).
   */
  standDown(): void;
  /** Stops whatever runs, in any phase: waiting for NATS ends, consumers finish in-flight handlers, committed events are published, the connection drains. */
  stop(): Promise<void>;
}

/**
 * The event machinery every Concord service runs: streams provisioned from
 * the generated specs (a conflicting existing stream stops start-up), an
 * outbox with its relay, then durable consumers. Nothing touches NATS until
 * `start`, which also starts deleting inbox rows older than
 * `inboxRetentionMs`. Events are checked against their contracts both ways:
 * an event that breaks them, or is larger than the server's max_payload, is
 * never stored in the outbox, and a consumed one that breaks them is
 * dead-lettered.
 */
export function createEventRuntime(options: EventRuntimeOptions): EventRuntime {
  checkOptions("createEventRuntime", options, ["db", "natsUrl", "urlName", "seedName", "service", "instance", "streams", "descriptorSet", "logger", "flushTimeoutMs", "retryMinMs", "retryMaxMs", "waitLogIntervalMs", "inboxRetentionMs", "middleware", "nkeySeedFile", "streamSources", "newDatabase"]);
  const { db, natsUrl, service, streams, streamSources } = options;
  const flushTimeoutMs = options.flushTimeoutMs ?? 5_000;
  const retryMinMs = options.retryMinMs ?? 200;
  const retryMaxMs = options.retryMaxMs ?? 1_000;
  const waitLogIntervalMs = options.waitLogIntervalMs ?? 30_000;
  const urlName = options.urlName ?? "the NATS URL";
  const seedName = options.seedName ?? "the service's nkey seed file setting";
  const inboxRetentionMs = options.inboxRetentionMs ?? defaultInboxRetentionMs;
  for (const [name, v] of Object.entries({ flushTimeoutMs, retryMinMs, retryMaxMs, waitLogIntervalMs, inboxRetentionMs })) positiveInteger("createEventRuntime", name, v, v);
  for (const spec of streams) validateStreamSpec(spec);
  const logger = options.logger.child({ component: "event-runtime" });
  const checker = createMessageChecker(options.descriptorSet);
  let bus: EventBus | undefined;
  const outbox = createOutbox({ db, source: service, checker, maxPayloadBytes: () => bus?.nc.info?.max_payload ?? defaultMaxPayloadBytes });

  let relay: OutboxRelay | undefined;
  /** Set by standDown: a relay made after it is stood down at once. */
  let standingDown = false;
  let consumers: RunningConsumers | undefined;
  let retention: Retention | undefined;
  let startingUp: Promise<void> | undefined;
  let stopping = false;
  let interrupt: (() => void) | undefined;
  const stoppedError = () => new Error(`stopped before NATS at ${natsUrl} was reached`);
  const checkNotStopping = () => {
    if (stopping) throw stoppedError();
  };
  /** `work`'s result, or undefined as soon as a stop is asked for. */
  const unlessStopped = <T>(work: Promise<T>): Promise<T | undefined> =>
    new Promise<T | undefined>((resolve, reject) => {
      if (stopping) return resolve(undefined);
      const mine = () => resolve(undefined);
      interrupt = mine;
      work.then(resolve, reject).finally(() => {
        if (interrupt === mine) interrupt = undefined;
      });
    });

  /** One attempt to connect; abandoned when a stop comes first, and then closed once it lands. */
  const connect = async (): Promise<EventBus> => {
    const attempt = connectEventBus({
      url: natsUrl,
      name: service,
      ...(options.instance !== undefined && { instance: options.instance }),
      logger: options.logger,
      ...(options.nkeySeedFile !== undefined && { nkeySeedFile: options.nkeySeedFile }),
    });
    const connected = await unlessStopped(attempt);
    if (connected) return connected;
    void attempt.then((late) => late.close(), () => undefined);
    throw stoppedError();
  };
  const pause = async (ms: number): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    await unlessStopped(new Promise((resolve) => (timer = setTimeout(resolve, ms))));
    clearTimeout(timer);
  };

  const startUp = async (bindings: readonly ConsumerBinding<any>[], onWaiting?: (reason: string) => void): Promise<void> => {
    let delay = retryMinMs;
    let waitingSince: number | undefined;
    let lastLogged = 0;
    let lastReason = "";
    for (;;) {
      checkNotStopping();
      try {
        bus ??= await connect();
        checkNotStopping();
        const { atomicBatch } = await ensureStreams(bus.jsm, streams, { logger, ...(streamSources && { foreign: streams.map((s) => s.name).filter((name) => streamSources[name] !== service) }) });
        checkNotStopping();
        relay ??= createOutboxRelay({ db, nc: bus.nc, logger: options.logger, batchStreams: atomicBatch });
        if (standingDown) relay.standDown();
        consumers = await startConsumers({ nc: bus.nc, db, service, consumers: bindings, logger: options.logger, outbox, checker, ...(options.middleware && { middleware: options.middleware }), ...(streamSources && { streamSources }), ...(options.newDatabase && { newDatabase: true }) });
        if (waitingSince !== undefined) logger.info({ natsUrl, waitedMs: Math.round(performance.now() - waitingSince) }, "reached NATS; events flow");
        return;
      } catch (err) {
        checkNotStopping();
        if (!isNatsUnreachable(err)) throw asRefusal(err, { natsUrl, service, seedName, seeded: Boolean(options.nkeySeedFile) });
        const reason = (err as Error).message;
        const host = unresolvedHost(err);
        // A name that does not resolve is one wait whatever getaddrinfo says each time (ENOTFOUND, EAI_AGAIN).
        const why = host ?? reason;
        const now = performance.now();
        waitingSince ??= now;
        if (why !== lastReason || now - lastLogged >= waitLogIntervalMs) {
          const waitedMs = Math.round(now - waitingSince);
          if (host !== undefined && why !== lastReason) {
            logger.warn({ natsUrl, host, reason, waitedMs, retryEveryMs: retryMaxMs }, unresolvedHostWait("NATS", host, urlName));
          } else {
            const message = waitedMs === 0 ? "NATS cannot be reached; not serving until it can, trying again" : "still waiting for NATS";
            logger.warn({ natsUrl, reason, waitedMs, retryEveryMs: retryMaxMs }, message);
          }
          lastLogged = now;
          lastReason = why;
        }
        onWaiting?.(reason);
        await pause(delay);
        delay = Math.min(delay * 2, retryMaxMs);
      }
    }
  };

  let stopped: Promise<void> | undefined;
  return {
    outbox,
    get bus() {
      if (!bus) throw new Error(`${service} has not reached NATS yet`);
      return bus;
    },
    get relay() {
      if (!relay) throw new Error(`${service} has not reached NATS yet`);
      return relay;
    },
    start(bindings, hooks) {
      if (startingUp) return Promise.reject(new Error("start was already called"));
      retention = inboxRetention({ db, retentionMs: inboxRetentionMs, logger: options.logger });
      startingUp = startUp(bindings, hooks?.onWaiting);
      return startingUp;
    },
    standDown() {
      standingDown = true;
      relay?.standDown();
    },
    stop() {
      stopped ??= (async () => {
        stopping = true;
        interrupt?.();
        relay?.standDown();
        // Whatever start-up is doing ends at its next step; then everything it started is stopped.
        await startingUp?.catch(() => undefined);
        await retention?.stop();
        await consumers?.stop();
        const running = relay;
        if (running) {
          // Bounded: with NATS down, committed events stay in the outbox for the next start.
          let timer: NodeJS.Timeout | undefined;
          const timedOut = new Error(`not flushed within ${flushTimeoutMs} ms`);
          const timeout = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(timedOut), flushTimeoutMs);
          });
          let read = false;
          await Promise.race([running.flush(() => (read = true)), timeout])
            .catch((err) => {
              const { fields, msg } = outboxAtShutdownLine(err, read, timedOut, flushTimeoutMs);
              logger.warn(fields, msg);
            })
            .finally(() => clearTimeout(timer));
          await running.stop();
        }
        await bus?.close();
      })();
      return stopped;
    },
  };
}

/**
 * The warning of a stop whose last flush of the outbox failed with `err`
 * (`timedOut` when it did not end in time), `read` once the outbox was read
 * and held events: only then are events known to be left. A database that
 * hung or was away at the stop let nothing be read, and the line said
 * "events left in the outbox" all the same. A timeout, or an outbox that
 * cannot be read, is said in one line: a stack would only say where the
 * timer was set, or point into the driver. So is a relay that gave up at a
 * failure once the stop began (OutboxRelayGaveUp), which it no longer retries.
 */
export function outboxAtShutdownLine(err: unknown, read: boolean, timedOut: Error, timeoutMs: number): { fields: Record<string, unknown>; msg: string } {
  const unread = (why: string) => ({
    fields: { reason: why },
    msg: `the outbox could not be read at shutdown (${why}); events committed and not yet published, if any, go out at the next start`,
  });
  if (err instanceof OutboxUnread) return unread(err.cause instanceof Error ? err.cause.message : String(err.cause));
  // The relay stopped at a failure met once the stop began, rather than retry it: the one line of what it leaves.
  if (err instanceof OutboxRelayGaveUp) {
    return {
      fields: { reason: err.reason },
      msg: `the outbox relay stopped at a failure as the service stops, and did not retry it (${err.reason}); events committed and not yet published, if any, stay in the outbox and go out at the next start`,
    };
  }
  if (err !== timedOut) return { fields: { err }, msg: "events left in the outbox at shutdown; they go out at the next start" };
  if (!read) return unread(`no answer within ${timeoutMs} ms`);
  return { fields: { reason: timedOut.message }, msg: `events left in the outbox at shutdown (${timedOut.message}); nothing is lost: they go out at the next start` };
}

/** Whether `err`, or an error it was caused by, is the server's refusal of the connection's credentials. */
function credentialsRefused(err: unknown): boolean {
  for (const e of causeChain(err)) {
    const code = String((e as { code?: unknown }).code);
    if (code === "AUTHORIZATION_VIOLATION" || code === "AUTHENTICATION_EXPIRED") return true;
  }
  return false;
}

/**
 * A start-up failure that trying again cannot fix and the operator can, as
 * FAILED_PRECONDITION (which the service's entry point logs as one line,
 * exiting 2): a stream or durable consumer at odds with its spec, a stream
 * this user may not create, a stream or consumer JetStream's limits leave
 * no room for, anything else this user may not do, a seed file that cannot
 * be read, credentials the server refuses. Any other error is returned as it is.
 */
function asRefusal(err: unknown, connection: { readonly natsUrl: string; readonly service: string; readonly seedName: string; readonly seeded: boolean }): unknown {
  if (!(err instanceof Error)) return err;
  const { natsUrl, seedName } = connection;
  const refuse = (message: string) => new StatusError(Code.FAILED_PRECONDITION, message, { cause: err });
  const refusals = [StreamConflictError, ConsumerConflictError, StreamMissingError, StreamShortOfSpecError, StreamSubjectsHeldError, JetStreamLimitError, SeedFileError];
  if (refusals.some((refusal) => err instanceof refusal)) return refuse(err.message);
  if (credentialsRefused(err)) {
    if (connection.seeded) return refuse(`NATS at ${natsUrl} refused this service's credentials (${err.message}): the nkey seed file in ${seedName} must be its own NATS user's, one the server's authorization names`);
    // npm start with NATS_URL set (a server of the operator's) passes each service the seed its <SERVICE>_NATS_NKEY_SEED names.
    return refuse(
      `NATS at ${natsUrl} refused this service's connection without credentials (${err.message}): name the nkey seed file of its own NATS user, one the server's authorization names, in ${seedName} ` +
        `(npm start, given NATS_URL, passes it the one ${connection.service.toUpperCase()}_NATS_NKEY_SEED names)`,
    );
  }
  if (permissionDenied(err)) return refuse(`NATS refused this service's user what start-up needs (${err.message}): the server's permissions for it must be those the contracts give (README "Security")`);
  return err;
}
