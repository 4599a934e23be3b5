import { allStreams } from "../../gen/ts/concord_streams.js";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { OrderServiceService } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { OrderServiceConsumers } from "../../gen/ts/shop/orders/v1/order_service_jetstream.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { bindConsumers, createEventRuntime, eventMigrations, type EventRuntime } from "../../platform/events/index.js";
import { createClient, createGrpcServer } from "../../platform/grpc/index.js";
import type { Logger } from "../../platform/log/index.js";
import type { RunningService } from "../../platform/runtime/index.js";
import { openDatabase } from "../../platform/sql/index.js";
import { orderChangeEvents } from "./events/order-changes.js";
import { createOrderSaga } from "./events/order-saga.js";
import { createOrderService } from "./grpc/order-service.js";
import { orderMigrations } from "./store/migrations.js";
import { createOrderStore } from "./store/order-store.js";

export interface OrdersOptions {
  /** host:port to serve on; port 0 picks a free port. */
  readonly listen: string;
  /** SQLite file of the order service. */
  readonly databasePath: string;
  /** host:port of the product service. */
  readonly productsAddress: string;
  /** NATS server with JetStream. */
  readonly natsUrl: string;
  /** Deadline of each product lookup. Default 2 s. */
  readonly productsTimeoutMs?: number;
  readonly logger: Logger;
  readonly shutdownTimeoutMs?: number;
}

/** A running order service, with its parts exposed for tests and benchmarks. */
export interface RunningOrders extends RunningService {
  readonly events: EventRuntime;
}

/**
 * Starts the order service: database (with migrations), JetStream (streams
 * provisioned, outbox relay), product client, gRPC, then its consumers.
 * Stops in reverse.
 */
export async function startOrders(options: OrdersOptions): Promise<RunningOrders> {
  const { logger } = options;
  const db = openDatabase({ path: options.databasePath, migrations: [...orderMigrations, ...eventMigrations] });
  const store = createOrderStore(db);
  const products = createClient(ProductServiceService, { address: options.productsAddress, defaultTimeoutMs: options.productsTimeoutMs ?? 2_000 });
  let events: EventRuntime | undefined;
  try {
    events = await createEventRuntime({
      db,
      natsUrl: options.natsUrl,
      service: "orders",
      streams: allStreams,
      consumers: bindConsumers(OrderServiceConsumers, createOrderSaga(store)),
      logger,
    });
    const server = createGrpcServer({ descriptorSet, logger, shutdownTimeoutMs: options.shutdownTimeoutMs, readinessCheck: () => db.ping() });
    server.addService(OrderServiceService, createOrderService({ db, store, products, onChange: orderChangeEvents(events.outbox) }));
    const { port } = await server.start(options.listen);
    await events.startConsuming();
    const running = events;
    return {
      address: options.listen.replace(/:\d+$/, `:${port}`),
      events: running,
      async stop() {
        await server.shutdown();
        await running.stop();
        products.close();
        db.close();
      },
    };
  } catch (err) {
    await events?.stop();
    products.close();
    db.close();
    throw err;
  }
}
