import { databaseUrl, duration, durationAtLeast, durationAtLeastOrOff, hostPort, optionalHostPort, oneOf, optionalFile, serviceAddress, text } from "../../platform/config/index.js";
import { grpcSecuritySettings } from "../../platform/runtime/index.js";

/** The order service's environment. */
export const orderSettings = {
  ORDERS_LISTEN: { description: "host:port to serve gRPC on", default: "127.0.0.1:50052", parse: hostPort },
  ORDERS_METRICS_LISTEN: {
    description: "host:port to serve Prometheus metrics on (GET /metrics); empty: none are kept",
    default: "",
    parse: optionalHostPort,
  },
  ORDERS_DATABASE_URL: {
    description: "the service's database: a SQLite file (path, file: or sqlite: URL) or a postgres:// URL",
    fallback: "DATABASE_URL",
    default: ".data/orders.db",
    parse: databaseUrl,
  },
  PRODUCTS_ADDRESS: {
    description: "the product service: host:port, the instances' host:port separated by commas, or dns:///host:port (calls are spread over them)",
    default: "127.0.0.1:50051",
    parse: serviceAddress,
  },
  PRODUCTS_TIMEOUT: { description: "deadline of each call to the product service", default: "2s", parse: duration },
  ORDERS_PENDING_TIMEOUT: {
    description: "how long an order may wait PENDING for the product service's answer about its stock before the service cancels it (OrderCancelled); 0 or off: never",
    default: "15m",
    // The product service's consumers retry an OrderPlaced for over a minute (1 s, 5 s, 30 s, 30 s apart) before they give up on it.
    parse: durationAtLeastOrOff("2m", "a shorter one cancels orders whose answer is merely slow, an OrderPlaced the product service is still retrying"),
  },
  NATS_URL: { description: "NATS server with JetStream (several comma-separated for a cluster)", default: "nats://127.0.0.1:4222", parse: text },
  NATS_NKEY_SEED: {
    description: `file holding the service's NATS user nkey seed (npm start makes DATA_DIR/nats-credentials/orders.nk); empty: connect without credentials`,
    default: "",
    parse: optionalFile,
  },
  INBOX_RETENTION: {
    description: "how long the inbox remembers a processed event, to ignore it if it comes again (at least 1h)",
    default: "7d",
    parse: durationAtLeast("1h", "an event can come again long after it was processed"),
  },
  REQUEST_ID_RETENTION: {
    description: "how long a request_id is remembered, so that a repeated create returns its first result (at least 1h)",
    default: "24h",
    parse: durationAtLeast("1h", "clients retry for a while after a failure"),
  },
  ...grpcSecuritySettings("orders"),
  SHUTDOWN_TIMEOUT: { description: "how long a stop waits for in-flight calls", default: "10s", parse: duration },
  LOG_LEVEL: { description: "log level", default: "info", parse: oneOf("fatal", "error", "warn", "info", "debug", "trace", "silent") },
};
