import { databaseUrl, duration, hostPort, oneOf, text } from "../../platform/config/index.js";

/** The order service's environment. */
export const orderSettings = {
  ORDERS_LISTEN: { description: "host:port to serve gRPC on", default: "127.0.0.1:50052", parse: hostPort },
  ORDERS_DATABASE_URL: { description: "SQLite database file (path, file: or sqlite: URL)", default: ".data/orders.db", parse: databaseUrl },
  PRODUCTS_ADDRESS: { description: "host:port of the product service", default: "127.0.0.1:50051", parse: hostPort },
  PRODUCTS_TIMEOUT: { description: "deadline of each call to the product service", default: "2s", parse: duration },
  NATS_URL: { description: "NATS server with JetStream (several comma-separated for a cluster)", default: "nats://127.0.0.1:4222", parse: text },
  SHUTDOWN_TIMEOUT: { description: "how long a stop waits for in-flight calls", default: "10s", parse: duration },
  LOG_LEVEL: { description: "log level", default: "info", parse: oneOf("fatal", "error", "warn", "info", "debug", "trace", "silent") },
};
