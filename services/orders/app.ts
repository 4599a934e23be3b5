import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { OrderServiceService } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { createClient, createGrpcServer } from "../../platform/grpc/index.js";
import type { Logger } from "../../platform/log/index.js";
import type { RunningService } from "../../platform/runtime/index.js";
import { openDatabase } from "../../platform/sql/index.js";
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
  /** Deadline of each product lookup. Default 2 s. */
  readonly productsTimeoutMs?: number;
  readonly logger: Logger;
  readonly shutdownTimeoutMs?: number;
}

/** Starts the order service: database (with migrations), product client, then gRPC. */
export async function startOrders(options: OrdersOptions): Promise<RunningService> {
  const { logger } = options;
  const db = openDatabase({ path: options.databasePath, migrations: orderMigrations });
  const products = createClient(ProductServiceService, { address: options.productsAddress, defaultTimeoutMs: options.productsTimeoutMs ?? 2_000 });
  const server = createGrpcServer({
    descriptorSet,
    logger,
    shutdownTimeoutMs: options.shutdownTimeoutMs,
    readinessCheck: () => db.ping(),
  });
  server.addService(OrderServiceService, createOrderService({ db, store: createOrderStore(db), products }));
  try {
    const { port } = await server.start(options.listen);
    return {
      address: options.listen.replace(/:\d+$/, `:${port}`),
      async stop() {
        await server.shutdown();
        products.close();
        db.close();
      },
    };
  } catch (err) {
    products.close();
    db.close();
    throw err;
  }
}
