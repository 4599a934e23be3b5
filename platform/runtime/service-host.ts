import { collectDefaultMetrics, Registry } from "prom-client";
import type { ConsumerBinding, DeliveryMiddleware, EventRuntime, Outbox } from "../events/index.js";
import { checkSeedFile, consumerLagMetrics, consumerMetrics, createEventRuntime, eventMigrations, natsConnectionMetrics, outboxMetrics, outboxRelayMetrics, SeedFileError, type StreamSpec } from "../events/index.js";
import { createGrpcServer, grpcCallMetrics, grpcRefusalMetrics, grpcServingMetrics, type GrpcServer, unreadAnswerMetrics } from "../grpc/index.js";
import { databaseFreeSpaceMetrics, databaseWritesFailingMetrics, dropGaugeTotals, netEventLoopDelay } from "../metrics/index.js";
import { createRequestIds, requestIdMigrations, requestIdRetention, type RequestIds } from "../idempotency/index.js";
import { Code, StatusError, unresolvedHost, unresolvedHostWait } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { type Database, isPostgresUrl, type Migration, openDatabase, type Retention } from "../sql/index.js";
import { redact } from "../sql/postgres.js";
import { type GrpcSecurity, serverSecurity } from "./grpc-security.js";
import type { HostVariables } from "./service-settings.js";
import { addressTaken, addressUnusable } from "./listen-address.js";
import { startMetricsServer } from "./metrics-server.js";
import type { RunningService } from "./run-service.js";

export interface ServiceHostOptions {
  /** Service name: logs, `ce-source`, NATS connection name. */
  readonly name: string;
  /** Which process of the service this is (its log lines' `instance`; see instanceOf): its NATS connection is named `<name> (<instance>)`. Default: `<name>` alone. */
  readonly instance?: string;
  /** host:port to serve gRPC on; port 0 picks a free port. */
  readonly listen: string;
  /** The service's own database: a SQLite file, or a postgres:// URL. */
  readonly database: string;
  /** The variables its addresses and database were read from, which refusals name as what to change; none: "the database URL", "give this one another address". */
  readonly variables?: HostVariables;
  /** The service's migrations; the outbox, inbox and request id tables are added. */
  readonly migrations: readonly Migration[];
  readonly natsUrl: string;
  /**
   * Streams the service publishes to or consumes from, provisioned at start.
   * None (a service of gRPC alone, whose contract declares no stream and no
   * subscription): it never connects to NATS, reports SERVING once it serves,
   * refuses consumers at start and events at `outbox.add`.
   */
  readonly streams: readonly StreamSpec[];
  /** The generated descriptor set (validation, reflection, access rules). */
  readonly descriptorSet: Uint8Array;
  /** TLS and bearer tokens for what it serves; `insecureGrpc` turns both off, explicitly. */
  readonly security: GrpcSecurity;
  readonly logger: Logger;
  readonly shutdownTimeoutMs?: number;
  /** How long the inbox remembers processed events (see inboxRetention). Default 7 days. */
  readonly inboxRetentionMs?: number;
  /** How long request ids are remembered (see platform/idempotency). Default 24 hours. */
  readonly requestIdRetentionMs?: number;
  /** Steps of the service's own around every consumer's pipeline (metrics, tracing), outermost first. */
  readonly consumerMiddleware?: readonly DeliveryMiddleware[];
  /**
   * host:port to serve Prometheus metrics on (`GET /metrics`; port 0 picks a
   * free port): calls by method and code, calls and connections refused
   * before any handler, consumers' outcomes, latency and lag, the outbox's
   * depth. None: no metrics are kept.
   */
  readonly metricsListen?: string;
  /** Ends start-up while it waits for a Postgres server that cannot be reached yet. */
  readonly signal?: AbortSignal;
  /** File with the service's NATS user nkey seed (see createEventRuntime); none: no credentials. */
  readonly natsSeedFile?: string;
  /** Each stream's owner, the `ce-source` its events must carry (gen/ts/concord_nats.ts `streamSources`). */
  readonly streamSources?: Readonly<Record<string, string>>;
}

/**
 * How often Node's event loop delay is sampled for `nodejs_eventloop_lag_*`
 * (prom-client samples every 10 ms unless told). Each sample is a timer
 * that wakes the process: at 10 ms an idle product service woke about 100
 * times a second and used 8.3 ms of CPU a second, at 100 ms 5.5 ms
 * (`/proc/<pid>/stat` over 20 s, two to four runs each). Ten samples a
 * second still give a scrape every 15 s 150 of them.
 */
const eventLoopSampleMs = 100;

/** How often the wait for a database that cannot be reached is logged. */
const waitLogEveryMs = 10_000;

/**
 * What the refusal of a database that is another service's tells the
 * operator: to set the service's own variable, and, where the service read
 * a fallback shared by every service (DATABASE_URL), that this is why.
 */
function ownerAdvice(own: string, read: string): string {
  if (read === own) return `set ${own} to a database of its own`;
  return `set ${own}: ${read}, which it read, names one database for every service whose own variable is not set`;
}

/** What a service wires its own parts onto before it starts serving. */
export interface ServiceHost {
  readonly db: Database;
  /** Request ids of calls a client may repeat safely (create methods with a request_id). */
  readonly requestIds: RequestIds;
  /** The outbox is there at once; the connection and relay once `start` has reached NATS. */
  readonly events: EventRuntime;
  readonly server: GrpcServer;
  /** Where the service's metrics are kept, for counters of its own; none while `metricsListen` is not set. */
  readonly registry?: Registry;
  /**
   * Serves gRPC at once on the address held since createServiceHost,
   * reporting NOT_SERVING (calls answer UNAVAILABLE) until NATS has been
   * reached, the streams provisioned and the relay and subscriptions
   * started; then SERVING. Resolves once it serves its services; `ready`
   * says when it reports SERVING. The returned stop works in every phase and
   * reverses it: gRPC drains, consumers finish, the outbox flushes, NATS
   * drains, `onStop` runs (clients of other services), the database closes.
   * `tasks` (work of the service's own on a timer) stop once gRPC has
   * drained, before the events, so none runs on a closed database. Refused
   * (FAILED_PRECONDITION), with everything stopped, when no consumer of
   * `consumers` reads a stream of `streams` that another service owns
   * (`streamSources`), which only a subscription of its contract gives it
   * (streamsOfService): its handlers left unbound, or streams given that
   * are not its own to read; and, given no stream at all, when it binds any
   * consumer. A `server` with no service added is warned
   * of: a service of events alone has none to add.
   */
  start(options: {
    readonly consumers: readonly ConsumerBinding<any>[];
    readonly tasks?: readonly { stop(): Promise<void> }[];
    readonly onStop?: () => void;
  }): Promise<RunningService & { readonly events: EventRuntime }>;
}

/**
 * The life cycle every Concord service shares: its addresses, held from
 * the start (one another process holds is refused with FAILED_PRECONDITION
 * before anything is written; gRPC answers UNAVAILABLE, health NOT_SERVING,
 * until the service serves), its database (with
 * migrations; a Postgres server that cannot be reached yet, or whose host does not resolve yet, is waited for), a gRPC server with health and reflection, then JetStream
 * (streams provisioned, outbox relay) and its consumers, waited for while
 * NATS cannot be reached (none of it for a service given no stream, which
 * serves gRPC alone); stopped in reverse.
 */
export async function createServiceHost(options: ServiceHostOptions): Promise<ServiceHost> {
  const { logger, name } = options;
  const { variables } = options;
  const registry = options.metricsListen === undefined ? undefined : new Registry();
  // The database is opened below; the server's readiness check runs only once it serves.
  let opened: Database | undefined;
  const server = createGrpcServer({
    descriptorSet: options.descriptorSet,
    logger,
    shutdownTimeoutMs: options.shutdownTimeoutMs,
    readinessCheck: () => opened!.ping(),
    ...serverSecurity(options.security),
    ...(registry && { callObserver: grpcCallMetrics(registry), refusalObserver: grpcRefusalMetrics(registry) }),
  });
  // Both addresses are held before the database is opened and migrated, so that one another process holds refuses
  // the start with nothing written, and none is taken in the meantime: gRPC answers UNAVAILABLE (health NOT_SERVING)
  // and the metrics endpoint 503 until the service has started.
  server.setUnavailable(`${name} is starting: it opens and migrates its database; try again shortly`);
  await server.listen(options.listen).catch(async (err: Error & { code?: string }) => {
    throw err.code === "EADDRINUSE" ? await addressTaken("the gRPC address", options.listen, err, variables?.listen) : (addressUnusable("the gRPC address", options.listen, err, variables?.listen) ?? err);
  });
  const metrics =
    registry && options.metricsListen !== undefined
      ? await startMetricsServer(options.metricsListen, registry, logger, variables?.metricsListen).catch(async (err: unknown) => {
          await server.shutdown();
          throw err;
        })
      : undefined;
  // A seed file that holds no good seed is a setting to correct: refused before the database is made or migrated.
  if (options.natsSeedFile !== undefined && options.streams.length > 0) {
    try {
      checkSeedFile(options.natsSeedFile);
    } catch (err) {
      await server.shutdown();
      await metrics?.close();
      throw err instanceof SeedFileError ? new StatusError(Code.FAILED_PRECONDITION, err.message, { cause: err }) : err;
    }
  }
  const shownDatabase = isPostgresUrl(options.database) ? redact(options.database) : options.database;
  let loggedAt = -Infinity;
  let loggedHost: string | undefined;
  let waitingSince: number | undefined;
  /** Set when the database had none of its migrations: made at this start (or empty). */
  let newDatabase = false;
  const db = await openDatabase({
    path: options.database,
    migrations: [...options.migrations, ...eventMigrations, ...requestIdMigrations],
    // A downgrade is refused: this code would misread what a newer version's migrations changed.
    refuseNewer: true,
    owner: name,
    ...(variables && { urlName: variables.database, ownerAdvice: ownerAdvice(variables.ownDatabase, variables.database) }),
    ...(options.signal && { signal: options.signal }),
    onWaiting(err) {
      const now = performance.now();
      waitingSince ??= now;
      // A host that does not resolve is said at once, and so is the change when it does and its server is not up yet.
      const host = unresolvedHost(err);
      if (host === loggedHost && now - loggedAt < waitLogEveryMs) return;
      loggedAt = now;
      loggedHost = host;
      // Where and why, on one line: the stack of a refused connection says nothing an operator can act on.
      const reason = err instanceof Error && err.cause instanceof Error ? err.cause.message : err instanceof Error ? err.message : String(err);
      if (host === undefined) logger.warn({ database: shownDatabase, reason }, "the database cannot be reached; waiting for it");
      else logger.warn({ database: shownDatabase, host, reason }, unresolvedHostWait("the database", host, variables?.database ?? "the database URL"));
    },
    onMigrationLockRetry({ migration, attempt, retryInMs, statement, cause }) {
      logger.warn(
        { migration, attempt, retryInMs, statement, err: cause },
        "a migration waited for a lock another transaction holds on its table; rolled back so that queries on the table go on, it is tried again",
      );
    },
    onStartupSettingsDropped(settings) {
      logger.info(
        { database: shownDatabase, settings },
        `the pooler in front of PostgreSQL drops the timeouts a connection sends at start-up (PgBouncer's ignore_startup_parameters): each connection sets ${settings.join(" and ")} itself once connected`,
      );
    },
    onNew() {
      newDatabase = true;
    },
    onNewerMigrations(ids) {
      // A rollback, or an instance not yet upgraded: the newer code marked each of these as one older code works with.
      logger.warn(
        { database: shownDatabase, migrations: ids },
        `the database records migration${ids.length === 1 ? "" : "s"} ${ids.join(", ")} of a newer version of the code, which this version does not have; ` +
          `${ids.length === 1 ? "it is" : "each is"} marked as one older code works with (olderCodeWorks), so this version runs on it`,
      );
    },
    onMigrated(applied) {
      // An upgrade's migrations are named, so the operator sees what changed in the data; a new database's are counted.
      if (newDatabase) logger.info({ database: shownDatabase, migrations: applied.length }, `made the database: applied its ${applied.length} migrations`);
      else logger.info({ database: shownDatabase, migrations: applied }, `migrated the database: applied ${applied.join(", ")}`);
    },
    onAfterCommitFailure(err) {
      // A bug in the callback: the write it followed is made, and its caller was answered with its result.
      logger.error({ err }, "a callback run after a transaction committed failed; the transaction's writes are kept and its caller was answered");
    },
    onCheckpointFailure(err) {
      logger.error({ err }, "checkpointing the SQLite database failed; SQLite checkpoints inside commits from now on");
    },
    onDetached(detached) {
      const what = `the SQLite database ${options.database} was ${detached.how} while the service ran: it refuses every write from now on (UNAVAILABLE) and reports NOT_SERVING, as what it wrote would be lost when it stops`;
      if ("savedTo" in detached) {
        const kept = detached.how === "replaced" ? " (or keep the file put in its place, losing what was written since it was made)" : "";
        logger.error(
          { database: options.database, savedTo: detached.savedTo },
          `${what}; its data is saved in ${detached.savedTo}: stop the service, delete ${options.database}-wal and ${options.database}-shm ` +
            `(the lost file's log, whose writes the saved copy holds), ` +
            `move the saved file to ${options.database}${kept}, and start it again`,
        );
      } else {
        const held = detached.heldAt;
        const read = held
          ? `; until it stops, its data can be read at ${held.database} and its log at ${held.log}: copy them, before stopping the service, to ${options.database} and ${options.database}-wal, ` +
            `with no ${options.database}-shm there, and start it again`
          : `: stop the service, delete ${options.database}-wal and ${options.database}-shm, and put its database back (README "Backups and restores") before starting it again`;
        logger.error({ database: options.database, err: detached.saveError, ...(held && { heldAt: held }) }, `${what}; saving its data beside it failed${read}`);
      }
    },
  }).catch(async (err: unknown) => {
    await server.shutdown();
    await metrics?.close();
    throw err;
  });
  opened = db;
  if (waitingSince !== undefined) logger.info({ database: shownDatabase, waitedMs: Math.round(performance.now() - waitingSince) }, "reached the database; it is open and migrated");
  /** No stream to publish to or read: the contract declares none and subscribes to none, so NATS is never reached. */
  const grpcAlone = options.streams.length === 0;
  let events: EventRuntime;
  let counting: ReturnType<typeof consumerMetrics> | undefined;
  try {
    counting = registry ? consumerMetrics(registry) : undefined;
    const middleware = [...(counting ? [counting] : []), ...(options.consumerMiddleware ?? [])];
    events = createEventRuntime({
      db,
      natsUrl: options.natsUrl,
      ...(variables && { urlName: variables.nats, seedName: variables.natsSeed }),
      service: name,
      ...(options.instance !== undefined && { instance: options.instance }),
      streams: options.streams,
      descriptorSet: options.descriptorSet,
      logger,
      ...(options.inboxRetentionMs !== undefined && { inboxRetentionMs: options.inboxRetentionMs }),
      ...(middleware.length > 0 && { middleware }),
      ...(options.natsSeedFile !== undefined && { nkeySeedFile: options.natsSeedFile }),
      ...(options.streamSources && { streamSources: options.streamSources }),
      newDatabase,
    });
    if (grpcAlone) events = withoutEvents(events, name);
    if (registry) {
      collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: eventLoopSampleMs });
      netEventLoopDelay(registry, eventLoopSampleMs);
      dropGaugeTotals(registry);
      // A service of gRPC alone never connects to NATS: no outbox, connection or relay gauges to read as down.
      if (!grpcAlone) {
        outboxMetrics(registry, db);
        natsConnectionMetrics(registry, () => onceReached(() => events.bus));
        outboxRelayMetrics(registry, () => onceReached(() => events.relay)?.relaying() ?? false);
      }
      // A SQLite file's disk, which fills while the service reports SERVING; PostgreSQL's is its server's.
      if (!isPostgresUrl(options.database) && options.database !== ":memory:") databaseFreeSpaceMetrics(registry, options.database);
      // Either database's writes refused for its storage (full, failing), which its health does not show either.
      databaseWritesFailingMetrics(registry, db);
      grpcServingMetrics(registry, server);
      unreadAnswerMetrics(registry, server.unreadAnswers);
    }
  } catch (err) {
    await server.shutdown();
    await db.close();
    await metrics?.close();
    throw err;
  }
  let requestIdsKept: Retention | undefined;
  let tasks: readonly { stop(): Promise<void> }[] = [];
  const stopAll = async (onStop?: () => void) => {
    // Before the calls drain: an outbox relay this process takes over from another stopping instance meanwhile is no successor.
    events.standDown();
    await server.shutdown();
    await Promise.all(tasks.map((t) => t.stop()));
    await requestIdsKept?.stop();
    await events.stop();
    onStop?.();
    await metrics?.close();
    await db.close();
  };
  return {
    db,
    requestIds: createRequestIds(),
    events,
    server,
    ...(registry && { registry }),
    async start({ consumers, tasks: own = [], onStop }) {
      tasks = own;
      // A service of events alone is one: grpc-js refuses to add a service without methods, so it cannot add its own.
      if (server.services.length === 0) {
        logger.warn(
          `${name} adds no gRPC service to its host: it serves health alone. Where its contract's service has methods, ` +
            `add their implementation with host.server.addService(<Service>Service, impl) before host.start (README "Adding a service", step 3)`,
        );
      }
      const unbound = grpcAlone ? consumersWithoutStreams(name, consumers) : unboundConsumers(name, options.streams, options.streamSources, consumers);
      if (unbound) {
        await stopAll(onStop);
        throw new StatusError(Code.FAILED_PRECONDITION, unbound);
      }
      if (!grpcAlone) server.setUnavailable(`${name} is starting and waits for NATS, which carries its events; try again shortly`);
      requestIdsKept = requestIdRetention({ db, logger, ...(options.requestIdRetentionMs !== undefined && { retentionMs: options.requestIdRetentionMs }) });
      let port: number;
      try {
        ({ port } = await server.start());
        if (registry && metrics) {
          consumerLagMetrics({ registry, consumers: consumers.map((c) => c.spec), jsm: () => onceReached(() => events.bus)?.jsm });
          counting?.expect(consumers.map((c) => c.spec.durable));
          metrics.serve();
        }
      } catch (err) {
        await stopAll(onStop);
        throw err;
      }
      const ready = (grpcAlone ? Promise.resolve() : events.start(consumers)).then(
        () => {
          server.setUnavailable(undefined);
          if (grpcAlone) logger.info("serves gRPC alone: its contract declares no stream and no subscription, so it does not connect to NATS; reporting SERVING");
          else logger.info("events flow; reporting SERVING");
        },
        (err: unknown) => {
          server.setUnavailable(`${name} could not start; see its log`);
          throw err;
        },
      );
      // Marked as handled here: whoever started the service awaits `ready` and sees the failure there.
      ready.catch(() => undefined);
      let stopped: Promise<void> | undefined;
      return {
        address: options.listen.replace(/:\d+$/, `:${port}`),
        ...(metrics && { metricsAddress: metrics.address }),
        events,
        ready,
        stop() {
          stopped ??= stopAll(onStop);
          return stopped;
        },
      };
    },
  };
}

/**
 * What the service left out of its host, said with what to do, or undefined: its handlers of the streams of other
 * services it may read (no consumer on one of them).
 */
function unboundConsumers(
  name: string,
  streams: readonly StreamSpec[],
  sources: Readonly<Record<string, string>> | undefined,
  consumers: readonly ConsumerBinding<any>[],
): string | undefined {
  const consumed = streams.filter((s) => sources?.[s.name] !== undefined && sources[s.name] !== name).map((s) => s.name);
  const unread = consumed.filter((stream) => !consumers.some((c) => c.spec.stream === stream));
  if (unread.length === 0) return undefined;
  const them = unread.length === 1 ? "it" : "them";
  return (
    `${name} is given ${unread.length === 1 ? "stream" : "streams"} ${unread.join(", ")} of another service and binds no consumer on ${them}: ` +
    `bind the handlers of its contract's subscriptions with host.start({ consumers: bindConsumers(<Service>Consumers, handlers) }), ` +
    `or, subscribing to nothing there, give createServiceHost streams: streamsOfService(name, natsAuthorization, allStreams) (README "Adding a service", step 3)`
  );
}

/**
 * What a service given no stream (`streams: []`) that binds consumers is told: a
 * consumer reads a stream its contract's subscription gives it, and there is none.
 */
function consumersWithoutStreams(name: string, consumers: readonly ConsumerBinding<any>[]): string | undefined {
  if (consumers.length === 0) return undefined;
  return (
    `${name} binds ${consumers.length === 1 ? "consumer" : "consumers"} ${consumers.map((c) => c.spec.durable).join(", ")} and is given no stream: ` +
    `give createServiceHost streams: streamsOfService(name, natsAuthorization, allStreams), which its contract's subscriptions fill (README "Adding a service", step 3)`
  );
}

/**
 * The runtime of a service of gRPC alone: never started, and its outbox refuses
 * every event (FAILED_PRECONDITION) where it would keep it for a relay that
 * never runs.
 */
function withoutEvents(events: EventRuntime, name: string): EventRuntime {
  const outbox: Outbox = {
    add(_tx, descriptor) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `${name} emits ${descriptor.typeName}, an event of stream ${descriptor.stream}, and is given no stream: declare its stream in its contract ((concord.v1.stream)), run \`npm run gen\` and give createServiceHost ` +
          `streams: streamsOfService(name, natsAuthorization, allStreams) (README "Adding a service", steps 1 and 3)`,
      );
    },
    pending: () => events.outbox.pending(),
    oldestAddedAt: () => events.outbox.oldestAddedAt(),
  };
  return {
    outbox,
    get bus() {
      return events.bus;
    },
    get relay() {
      return events.relay;
    },
    start: () => Promise.reject(new Error(`${name} is given no stream: it does not connect to NATS`)),
    standDown: () => events.standDown(),
    stop: () => events.stop(),
  };
}

/** What `read` gives of the runtime (its `bus`, its `relay`), or undefined while it has not reached NATS (they throw until then). */
function onceReached<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}
