import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { createGrpcServer } from "../../platform/grpc/index.js";
import type { Logger } from "../../platform/log/index.js";
import type { RunningService } from "../../platform/runtime/index.js";
import { openDatabase } from "../../platform/sql/index.js";
import { createProductService } from "./grpc/product-service.js";
import { productMigrations } from "./store/migrations.js";
import { createProductStore } from "./store/product-store.js";

export interface ProductsOptions {
  /** host:port to serve on; port 0 picks a free port. */
  readonly listen: string;
  /** SQLite file of the product service. */
  readonly databasePath: string;
  readonly logger: Logger;
  readonly shutdownTimeoutMs?: number;
}

/** Starts the product service: database (with migrations), then gRPC. */
export async function startProducts(options: ProductsOptions): Promise<RunningService> {
  const { logger } = options;
  const db = openDatabase({ path: options.databasePath, migrations: productMigrations });
  const server = createGrpcServer({
    descriptorSet,
    logger,
    shutdownTimeoutMs: options.shutdownTimeoutMs,
    readinessCheck: () => db.ping(),
  });
  server.addService(ProductServiceService, createProductService({ db, store: createProductStore(db) }));
  try {
    const { port } = await server.start(options.listen);
    return {
      address: options.listen.replace(/:\d+$/, `:${port}`),
      async stop() {
        await server.shutdown();
        db.close();
      },
    };
  } catch (err) {
    db.close();
    throw err;
  }
}
