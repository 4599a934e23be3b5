import { grpcSecurityOf, runService } from "../../platform/runtime/index.js";
import { startOrders } from "./app.js";
import { orderSettings } from "./config.js";

await runService({
  name: "orders",
  summary: "the order service: places and tracks orders (gRPC shop.orders.v1.OrderService)",
  settings: orderSettings,
  start: (config, logger, signal) =>
    startOrders({
      listen: config.ORDERS_LISTEN,
      database: config.ORDERS_DATABASE_URL.location,
      productsAddress: config.PRODUCTS_ADDRESS,
      productsTimeoutMs: config.PRODUCTS_TIMEOUT,
      pendingTimeoutMs: config.ORDERS_PENDING_TIMEOUT,
      natsUrl: config.NATS_URL,
      security: grpcSecurityOf(config),
      ...(config.NATS_NKEY_SEED !== undefined && { natsSeedFile: config.NATS_NKEY_SEED }),
      shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT,
      inboxRetentionMs: config.INBOX_RETENTION,
      requestIdRetentionMs: config.REQUEST_ID_RETENTION,
      ...(config.ORDERS_METRICS_LISTEN !== undefined && { metricsListen: config.ORDERS_METRICS_LISTEN }),
      logger,
      signal,
    }),
});
