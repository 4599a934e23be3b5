import { allStreams } from "../../gen/ts/concord_streams.js";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { ProductServiceConsumers } from "../../gen/ts/shop/products/v1/product_service_jetstream.js";
import { bindConsumers, createEventRuntime, eventMigrations, type EventRuntime } from "../../platform/events/index.js";
import { createGrpcServer } from "../../platform/grpc/index.js";
import type { Logger } from "../../platform/log/index.js";
import type { RunningService } from "../../platform/runtime/index.js";
import { openDatabase } from "../../platform/sql/index.js";
import { productChangeEvents } from "./events/product-changes.js";
import { createStockReservations } from "./events/stock-reservations.js";
import { createProductService } from "./grpc/product-service.js";
import { productMigrations } from "./store/migrations.js";
import { createProductStore } from "./store/product-store.js";
import { createReservationStore } from "./store/reservation-store.js";

export interface ProductsOptions {
  /** host:port to serve on; port 0 picks a free port. */
  readonly listen: string;
  /** SQLite file of the product service. */
  readonly databasePath: string;
  /** NATS server with JetStream. */
  readonly natsUrl: string;
  readonly logger: Logger;
  readonly shutdownTimeoutMs?: number;
}

/** A running product service, with its parts exposed for tests and benchmarks. */
export interface RunningProducts extends RunningService {
  readonly events: EventRuntime;
}

/**
 * Starts the product service: database (with migrations), JetStream (streams
 * provisioned, outbox relay), gRPC, then its consumers. Stops in reverse.
 */
export async function startProducts(options: ProductsOptions): Promise<RunningProducts> {
  const { logger } = options;
  const db = openDatabase({ path: options.databasePath, migrations: [...productMigrations, ...eventMigrations] });
  let events: EventRuntime | undefined;
  try {
    events = await createEventRuntime({
      db,
      natsUrl: options.natsUrl,
      service: "products",
      streams: allStreams,
      consumers: bindConsumers(ProductServiceConsumers, createStockReservations(createReservationStore(db))),
      logger,
    });
    const server = createGrpcServer({ descriptorSet, logger, shutdownTimeoutMs: options.shutdownTimeoutMs, readinessCheck: () => db.ping() });
    server.addService(ProductServiceService, createProductService({ db, store: createProductStore(db), onChange: productChangeEvents(events.outbox) }));
    const { port } = await server.start(options.listen);
    await events.startConsuming();
    const running = events;
    return {
      address: options.listen.replace(/:\d+$/, `:${port}`),
      events: running,
      async stop() {
        await server.shutdown();
        await running.stop();
        db.close();
      },
    };
  } catch (err) {
    await events?.stop();
    db.close();
    throw err;
  }
}
