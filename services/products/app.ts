import { natsAuthorization, streamSources } from "../../gen/ts/concord_nats.js";
import { allStreams } from "../../gen/ts/concord_streams.js";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { ProductServiceConsumers } from "../../gen/ts/shop/products/v1/product_service_jetstream.js";
import { bindConsumers, type ConsumerBinding, type EventRuntime, streamsOfService } from "../../platform/events/index.js";
import type { Logger } from "../../platform/log/index.js";
import { createServiceHost, type GrpcSecurity, type HostVariables, type RunningService } from "../../platform/runtime/index.js";
import { createStockReservations, lockStockAhead } from "./events/stock-reservations.js";
import { createProductService } from "./grpc/product-service.js";
import { productMigrations } from "./store/migrations.js";
import { createProductStore } from "./store/product-store.js";
import { createReservationStore } from "./store/reservation-store.js";

export interface ProductsOptions {
  /** host:port to serve on; port 0 picks a free port. */
  readonly listen: string;
  /** The service's database: a SQLite file, or a postgres:// URL. */
  readonly database: string;
  /** Which process of the service this is (its log lines' `instance`), named in its NATS connection's name (see ServiceHostOptions). */
  readonly instance?: string;
  /** The variables its addresses and database were read from, which refusals name (see ServiceHostOptions). */
  readonly variables?: HostVariables;
  /** NATS server with JetStream. */
  readonly natsUrl: string;
  /** TLS and bearer tokens; `insecureGrpc` for neither, explicitly. */
  readonly security: GrpcSecurity;
  /** File with the service's NATS user nkey seed; none: connect without credentials. */
  readonly natsSeedFile?: string;
  readonly logger: Logger;
  readonly shutdownTimeoutMs?: number;
  /** How long the inbox remembers processed events. Default 7 days. */
  readonly inboxRetentionMs?: number;
  /** How long a request_id is remembered. Default 24 hours. */
  readonly requestIdRetentionMs?: number;
  /** host:port to serve Prometheus metrics on (GET /metrics); none: no metrics. */
  readonly metricsListen?: string;
  /** Ends start-up while it waits for its database (a Postgres server not up yet). */
  readonly signal?: AbortSignal;
}

/** A running product service, with its event runtime exposed for tests and benchmarks. */
export interface RunningProducts extends RunningService {
  readonly events: EventRuntime;
}

/** Starts the product service: the catalogue over gRPC, and the stock side of the order saga. */
export async function startProducts(options: ProductsOptions): Promise<RunningProducts> {
  const host = await createServiceHost({ name: "products", migrations: productMigrations, streams: streamsOfService("products", natsAuthorization, allStreams), streamSources, descriptorSet, ...options });
  const { db, events, server, requestIds } = host;
  server.addService(ProductServiceService, createProductService({ db, store: createProductStore(), outbox: events.outbox, requestIds }));
  return host.start({ consumers: productConsumers() });
}

/**
 * The product service's consumers: the stock side of the order saga, each
 * batch of order events locking its products first (see lockStockAhead).
 */
export function productConsumers(): ConsumerBinding<any>[] {
  const reservations = createReservationStore();
  return bindConsumers(ProductServiceConsumers, createStockReservations(reservations), lockStockAhead(reservations));
}
