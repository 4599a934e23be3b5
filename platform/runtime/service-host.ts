import type { ConsumerBinding, EventRuntime } from "../events/index.js";
import { createEventRuntime, eventMigrations, type StreamSpec } from "../events/index.js";
import { createGrpcServer, type GrpcServer } from "../grpc/index.js";
import { createRequestIds, requestIdMigrations, type RequestIds } from "../idempotency/index.js";
import type { Logger } from "../log/index.js";
import { type Database, type Migration, openDatabase } from "../sql/index.js";
import type { RunningService } from "./run-service.js";

export interface ServiceHostOptions {
  /** Service name: logs, `ce-source`, NATS connection name. */
  readonly name: string;
  /** host:port to serve gRPC on; port 0 picks a free port. */
  readonly listen: string;
  /** The service's own SQLite file. */
  readonly databasePath: string;
  /** The service's migrations; the outbox, inbox and request id tables are added. */
  readonly migrations: readonly Migration[];
  readonly natsUrl: string;
  /** Streams the service publishes to or consumes from, provisioned at start. */
  readonly streams: readonly StreamSpec[];
  /** The generated descriptor set (validation, reflection). */
  readonly descriptorSet: Uint8Array;
  readonly logger: Logger;
  readonly shutdownTimeoutMs?: number;
}

/** What a service wires its own parts onto before it starts serving. */
export interface ServiceHost {
  readonly db: Database;
  /** Request ids of calls a client may repeat safely (create methods with a request_id). */
  readonly requestIds: RequestIds;
  readonly events: EventRuntime;
  readonly server: GrpcServer;
  /**
   * Serves gRPC, then starts the subscriptions. The returned stop reverses
   * it: gRPC drains, consumers finish, the outbox flushes, NATS drains,
   * `onStop` runs (clients of other services), the database closes.
   */
  start(options: { readonly consumers: readonly ConsumerBinding<any>[]; readonly onStop?: () => void }): Promise<RunningService & { readonly events: EventRuntime }>;
}

/**
 * The life cycle every Concord service shares: its database (with
 * migrations), JetStream (streams provisioned, outbox relay), a gRPC server
 * with health and reflection, then its consumers; stopped in reverse.
 */
export async function createServiceHost(options: ServiceHostOptions): Promise<ServiceHost> {
  const { logger } = options;
  const db = openDatabase({ path: options.databasePath, migrations: [...options.migrations, ...eventMigrations, ...requestIdMigrations] });
  let events: EventRuntime;
  try {
    events = await createEventRuntime({ db, natsUrl: options.natsUrl, service: options.name, streams: options.streams, descriptorSet: options.descriptorSet, logger });
  } catch (err) {
    db.close();
    throw err;
  }
  const server = createGrpcServer({ descriptorSet: options.descriptorSet, logger, shutdownTimeoutMs: options.shutdownTimeoutMs, readinessCheck: () => db.ping() });
  const abort = async () => {
    await server.shutdown();
    await events.stop();
    db.close();
  };
  return {
    db,
    requestIds: createRequestIds(db),
    events,
    server,
    async start({ consumers, onStop }) {
      try {
        const { port } = await server.start(options.listen);
        await events.startConsuming(consumers);
        return {
          address: options.listen.replace(/:\d+$/, `:${port}`),
          events,
          async stop() {
            await server.shutdown();
            await events.stop();
            onStop?.();
            db.close();
          },
        };
      } catch (err) {
        await abort();
        onStop?.();
        throw err;
      }
    },
  };
}
