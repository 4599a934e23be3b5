/**
 * `concord status`: each service's health over grpc.health.v1, its
 * consumers' lag from JetStream, and its outbox from its metrics endpoint.
 */
import type { NatsConnection } from "nats";
import { OrderServiceConsumers } from "../../gen/ts/shop/orders/v1/order_service_jetstream.js";
import { ProductServiceConsumers } from "../../gen/ts/shop/products/v1/product_service_jetstream.js";
import { deadLetterStreamSpec, deadLetterSubject } from "../../platform/events/index.js";
import type { ConsumerSpec } from "../../platform/events/index.js";
import { checkHealth } from "../../platform/grpc/index.js";
import { toolClientSecurity, whyUnreachable } from "../client-security.js";
import { reason } from "../event-watch.js";

/** Where a service is and what it consumes. */
export interface ServiceTarget {
  readonly name: string;
  readonly grpc: string;
  readonly metrics: string;
  readonly consumers: readonly ConsumerSpec[];
}

/** The services where `npm start` puts them (the same environment variables), or where the flags say. */
export function serviceTargets(flags: { products?: string; orders?: string; productsMetrics?: string; ordersMetrics?: string }): ServiceTarget[] {
  const env = process.env;
  return [
    {
      name: "products",
      grpc: flags.products ?? (env.PRODUCTS_LISTEN || "127.0.0.1:50051"),
      metrics: flags.productsMetrics ?? (env.PRODUCTS_METRICS_LISTEN || "127.0.0.1:9101"),
      consumers: Object.values(ProductServiceConsumers).map((c) => c.spec),
    },
    {
      name: "orders",
      grpc: flags.orders ?? (env.ORDERS_LISTEN || "127.0.0.1:50052"),
      metrics: flags.ordersMetrics ?? (env.ORDERS_METRICS_LISTEN || "127.0.0.1:9102"),
      consumers: Object.values(OrderServiceConsumers).map((c) => c.spec),
    },
  ];
}

/** The samples of a Prometheus text exposition without labels, by name. */
async function scrapeOutbox(address: string): Promise<{ depth?: number; oldestAgeSeconds?: number; parked?: number }> {
  const res = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(3_000) });
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  const values = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    const match = /^(concord_outbox_[a-z_]+) (\S+)$/.exec(line);
    if (match) values.set(match[1], Number(match[2]));
  }
  return { depth: values.get("concord_outbox_depth"), oldestAgeSeconds: values.get("concord_outbox_oldest_age_seconds"), parked: values.get("concord_outbox_parked") };
}

/** Prints the status of every service; resolves true when all of them serve and every part could be read. */
export async function printStatus(nc: NatsConnection | undefined, natsProblem: string | undefined, targets: readonly ServiceTarget[], print: (line: string) => void): Promise<boolean> {
  let healthy = true;
  const jsm = nc ? await nc.jetstreamManager() : undefined;
  let dlqCounts: Record<string, number> | undefined;
  if (jsm) {
    const info = await jsm.streams.info(deadLetterStreamSpec.name, { subjects_filter: ">" }).catch(() => undefined);
    dlqCounts = info?.state.subjects ?? (info ? {} : undefined);
  }
  // Health is asked as the other tools call the services: over TLS trusting the development CA (or GRPC_TLS_CA), in
  // plaintext only with GRPC_INSECURE=1; it needs no token. The credentials are read once; a CA that cannot be read
  // makes every service unreachable, saying why.
  const credentials = Promise.resolve().then(() => toolClientSecurity({ subject: "concord", roles: [] }).credentials);
  credentials.catch(() => undefined);
  for (const target of targets) {
    const [health, outbox] = await Promise.all([
      credentials.then((c) => checkHealth(target.grpc, "", 2_000, c)).catch((err: Error) => `unreachable (${whyUnreachable(err)})`),
      scrapeOutbox(target.metrics).then(
        (o) => (o.depth === undefined ? "no outbox metrics" : `depth ${o.depth}, oldest ${(o.oldestAgeSeconds ?? 0).toFixed(1)}s, parked ${o.parked ?? 0}`),
        (err: Error) => {
          healthy = false;
          // fetch says only "fetch failed"; its cause says why (connect ECONNREFUSED ...).
          const cause = (err as { cause?: unknown }).cause;
          return `unknown (metrics at ${target.metrics}: ${cause instanceof Error ? cause.message : err.message})`;
        },
      ),
    ]);
    if (health !== "SERVING") healthy = false;
    print(`${target.name}  gRPC ${target.grpc}: ${health}`);
    print(`  outbox: ${outbox}`);
    for (const spec of target.consumers) {
      if (!jsm) {
        print(`  consumer ${spec.durable}: unknown (${natsProblem ?? "NATS not reached"})`);
        continue;
      }
      const dead = dlqCounts?.[deadLetterSubject(deadLetterStreamSpec, spec.stream, spec.durable)] ?? 0;
      try {
        const info = await jsm.consumers.info(spec.stream, spec.durable);
        print(`  consumer ${spec.durable} on ${spec.stream}: pending ${info.num_pending}, unacked ${info.num_ack_pending}, redelivered ${info.num_redelivered}, dead letters ${dead}`);
      } catch (err) {
        healthy = false;
        print(`  consumer ${spec.durable} on ${spec.stream}: unknown (${reason(err)})`);
      }
    }
  }
  if (!jsm) healthy = false;
  return healthy;
}
