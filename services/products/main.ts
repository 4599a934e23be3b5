import { grpcSecurityOf, runService } from "../../platform/runtime/index.js";
import { startProducts } from "./app.js";
import { productSettings } from "./config.js";

await runService({
  name: "products",
  summary: "the product service: catalogue and stock (gRPC shop.products.v1.ProductService)",
  settings: productSettings,
  start: (config, logger, signal) =>
    startProducts({
      listen: config.PRODUCTS_LISTEN,
      database: config.PRODUCTS_DATABASE_URL.location,
      natsUrl: config.NATS_URL,
      security: grpcSecurityOf(config),
      ...(config.NATS_NKEY_SEED !== undefined && { natsSeedFile: config.NATS_NKEY_SEED }),
      shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT,
      inboxRetentionMs: config.INBOX_RETENTION,
      requestIdRetentionMs: config.REQUEST_ID_RETENTION,
      ...(config.PRODUCTS_METRICS_LISTEN !== undefined && { metricsListen: config.PRODUCTS_METRICS_LISTEN }),
      logger,
      signal,
    }),
});
