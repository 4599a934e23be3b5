import { hostSettingsOf, instanceOf, runService } from "../../platform/runtime/index.js";
import { startOrders } from "./app.js";
import { orderSettings } from "./config.js";

await runService({
  name: "orders",
  summary: "the order service: places and tracks orders (gRPC shop.orders.v1.OrderService)",
  settings: orderSettings,
  instance: (config) => instanceOf("ORDERS", config),
  start: (config, logger, signal) =>
    startOrders({
      ...hostSettingsOf("ORDERS", config),
      productsAddress: config.PRODUCTS_ADDRESS,
      productsTimeoutMs: config.PRODUCTS_TIMEOUT,
      pendingTimeoutMs: config.ORDERS_PENDING_TIMEOUT,
      logger,
      signal,
    }),
});
