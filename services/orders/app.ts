import { Counter } from "prom-client";
import { natsAuthorization, streamSources } from "../../gen/ts/concord_nats.js";
import { allStreams } from "../../gen/ts/concord_streams.js";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { OrderServiceService } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { OrderServiceConsumers } from "../../gen/ts/shop/orders/v1/order_service_jetstream.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { ProductServiceMethods } from "../../gen/ts/shop/products/v1/product_service_rpc.js";
import { bindConsumers, type EventRuntime, streamsOfService } from "../../platform/events/index.js";
import { createClient } from "../../platform/grpc/index.js";
import { sampledGauges } from "../../platform/metrics/index.js";
import type { Logger } from "../../platform/log/index.js";
import { createServiceHost, type GrpcSecurity, type HostVariables, type RunningService, serviceCallSecurity } from "../../platform/runtime/index.js";
import { createCatalogFeed } from "./events/catalog-feed.js";
import { createOrderSaga, type StockAnswer } from "./events/order-saga.js";
import { startSagaTimeout } from "./events/saga-timeout.js";
import { createOrderService } from "./grpc/order-service.js";
import { createCatalogStore } from "./store/catalog-store.js";
import { orderMigrations } from "./store/migrations.js";
import { createOrderStore } from "./store/order-store.js";

export interface OrdersOptions {
  /** host:port to serve on; port 0 picks a free port. */
  readonly listen: string;
  /** The service's database: a SQLite file, or a postgres:// URL. */
  readonly database: string;
  /** Which process of the service this is (its log lines' `instance`), named in its NATS connection's name (see ServiceHostOptions). */
  readonly instance?: string;
  /** The variables its addresses and database were read from, which refusals name (see ServiceHostOptions). */
  readonly variables?: HostVariables;
  /** host:port of the product service. */
  readonly productsAddress: string;
  /** NATS server with JetStream. */
  readonly natsUrl: string;
  /** TLS and bearer tokens, for what it serves and for its calls to the product service; `insecureGrpc` for neither, explicitly. */
  readonly security: GrpcSecurity;
  /** File with the service's NATS user nkey seed; none: connect without credentials. */
  readonly natsSeedFile?: string;
  /** Deadline of each lookup of a product the local catalogue does not know yet. Default 2 s. */
  readonly productsTimeoutMs?: number;
  readonly logger: Logger;
  readonly shutdownTimeoutMs?: number;
  /** How long the inbox remembers processed events. Default 7 days. */
  readonly inboxRetentionMs?: number;
  /** How long a request_id is remembered. Default 24 hours. */
  readonly requestIdRetentionMs?: number;
  /**
   * How long an order may stay PENDING after it entered PENDING (placed, or
   * its lines changed) before the service cancels it itself; 0: never.
   * Default 15 minutes.
   */
  readonly pendingTimeoutMs?: number;
  /** host:port to serve Prometheus metrics on (GET /metrics); none: no metrics. */
  readonly metricsListen?: string;
  /** Ends start-up while it waits for its database (a Postgres server not up yet). */
  readonly signal?: AbortSignal;
}

/** A running order service, with its event runtime exposed for tests and benchmarks. */
export interface RunningOrders extends RunningService {
  readonly events: EventRuntime;
}

/**
 * Starts the order service: orders over gRPC, priced from its own copy of the
 * catalogue (fed by the product events, with the product service asked only
 * for products it does not know yet), and the order side of the saga,
 * whose timeout cancels an order the product service never answered for.
 */
export async function startOrders(options: OrdersOptions): Promise<RunningOrders> {
  const { productsAddress, productsTimeoutMs = 2_000, pendingTimeoutMs = defaultPendingTimeoutMs, ...hostOptions } = options;
  const host = await createServiceHost({ name: "orders", migrations: orderMigrations, streams: streamsOfService("orders", natsAuthorization, allStreams), streamSources, descriptorSet, ...hostOptions });
  const { db, events, server, requestIds, registry } = host;
  const store = createOrderStore();
  const catalog = createCatalogStore();
  const products = createClient(ProductServiceService, {
    address: productsAddress,
    defaultTimeoutMs: productsTimeoutMs,
    methods: ProductServiceMethods,
    ...serviceCallSecurity(options.security, "orders"),
  });
  server.addService(OrderServiceService, createOrderService({ db, store, catalog, products, outbox: events.outbox, requestIds }));
  const unknownOrderAnswers =
    registry &&
    new Counter({
      name: "concord_orders_unknown_order_answers_total",
      help: "Answers about stock that came for orders the order service does not have (a StockReserved is answered with OrderUnknown, so that its stock is released)",
      labelNames: ["answer"],
      registers: [registry],
    });
  // Both answers from 0, as the consumers' counters: increase() sees the first of each.
  for (const answer of ["StockReserved", "StockReservationFailed"] satisfies StockAnswer[]) unknownOrderAnswers?.inc({ answer }, 0);
  const saga = createOrderSaga({ store, logger: options.logger, ...(unknownOrderAnswers && { onUnknownOrder: (answer) => unknownOrderAnswers.inc({ answer }) }) });
  const handlers = { ...saga.handlers, ...createCatalogFeed(catalog) };
  const timedOut =
    registry &&
    new Counter({ name: "concord_orders_timed_out_total", help: "PENDING orders the order service cancelled because no answer about their stock came in time", registers: [registry] });
  // Orders the saga has not settled, an alert's measure before the timeout cancels them (or where there is none).
  if (registry) {
    const pending = () => store.pendingSummary(db);
    sampledGauges(registry, pending, [
      { name: "concord_orders_pending", help: "Orders PENDING, waiting for the product service's answer about their stock", value: (s) => s.count },
      {
        name: "concord_orders_pending_oldest_age_seconds",
        help: "How long the oldest PENDING order has waited since it entered PENDING (0 when none is)",
        value: (s) => (s.oldestPendingSince === undefined ? 0 : Math.max(0, (Date.now() - s.oldestPendingSince) / 1000)),
      },
    ]);
  }
  const tasks =
    pendingTimeoutMs > 0
      ? [startSagaTimeout({ db, store, outbox: events.outbox, timeoutMs: pendingTimeoutMs, logger: options.logger, ...(timedOut && { onTimedOut: () => timedOut.inc() }) })]
      : [];
  const onStop = () => {
    saga.flushWarnings();
    products.close();
  };
  return host.start({ consumers: bindConsumers(OrderServiceConsumers, handlers), tasks, onStop });
}

/** How long an order may stay PENDING by default (ORDERS_PENDING_TIMEOUT). */
export const defaultPendingTimeoutMs = 15 * 60_000;
