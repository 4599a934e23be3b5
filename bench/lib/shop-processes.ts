import { connect } from "nats";
import { allStreams } from "../../gen/ts/concord_streams.js";
import { deadLetterStreamSpec } from "../../platform/events/index.js";
import type { RunningNats } from "./nats-server.js";
import type { BenchContext } from "./report.js";
import { freePort } from "./proc.js";
import { type ServiceProcess, startOrdersProcess, startProductsProcess } from "./services.js";
import { createProducts } from "./shop.js";

export interface RunningShop {
  /** The first instance of each service. */
  readonly products: ServiceProcess;
  readonly orders: ServiceProcess;
  /** Every instance of each service. */
  readonly allProducts: readonly ServiceProcess[];
  readonly allOrders: readonly ServiceProcess[];
  /** The order service's addresses, comma-separated (a client spreads its calls over them). */
  readonly ordersAddress: string;
  /** Products in the catalogue, each with ample stock. */
  readonly productIds: string[];
  stop(): Promise<void>;
}

export interface ShopOptions {
  readonly productCount?: number;
  /** A nats-server of its own instead of this run's. */
  readonly on?: RunningNats;
  /** Instances of each service (default 1); more than one needs `databases`. */
  readonly instances?: number;
  /** postgres:// URLs of the services' databases; SQLite files in the run's temp dir by default. */
  readonly databases?: { readonly products: string; readonly orders: string };
  /** Added to every service's environment. */
  readonly env?: NodeJS.ProcessEnv;
}

/** The names of a shop's processes of one service (their logs, databases and profiles): numbered when there are several. */
export function shopProcessNames(prefix: string, service: string, instances: number): string[] {
  return instances > 1 ? Array.from({ length: instances }, (_, i) => `${prefix}-${service}-${i + 1}`) : [`${prefix}-${service}`];
}

/**
 * The product and order services as production runs them, each instance its
 * own process, each service with its own database (a SQLite file, or the
 * Postgres database given), on this run's nats-server (or `on`); `prefix`
 * names their logs, databases and profiles.
 */
export async function startShop(ctx: BenchContext, prefix: string, options: ShopOptions = {}): Promise<RunningShop> {
  const { productCount = 16, instances = 1, databases } = options;
  if (instances > 1 && !databases) throw new Error("several instances of a service share its database, which takes Postgres");
  const nats = options.on ?? (await ctx.nats());
  await resetStreams(nats.url);
  const common = { logDir: ctx.tmp, dataDir: ctx.tmp, logLevel: "info", natsUrl: nats.url, profileDir: ctx.profileDir, env: options.env };
  const name = (service: string, i: number) => shopProcessNames(prefix, service, instances)[i];
  // All start at once (the order service dials the product service lazily), to keep runs short.
  const productsAddresses = await Promise.all(Array.from({ length: instances }, async () => `127.0.0.1:${await freePort()}`));
  const started = await Promise.allSettled([
    ...productsAddresses.map((address, i) => startProductsProcess({ ...common, name: name("products", i), address, database: databases?.products })),
    ...productsAddresses.map((_, i) => startOrdersProcess({ ...common, name: name("orders", i), productsAddress: productsAddresses.join(","), database: databases?.orders })),
  ]);
  const running = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const stopAll = async () => {
    // Order services first: they drain into the product services' events.
    for (const s of [...running.slice(instances), ...running.slice(0, instances)]) await s.process.stop();
  };
  const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    for (const s of running) await s.process.stop();
    throw failed.reason;
  }
  const allProducts = running.slice(0, instances);
  const allOrders = running.slice(instances);
  try {
    const productIds = await createProducts(allProducts[0].address, productCount, 1_000_000_000);
    return {
      products: allProducts[0],
      orders: allOrders[0],
      allProducts,
      allOrders,
      ordersAddress: allOrders.map((o) => o.address).join(","),
      productIds,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/**
 * Deletes the shop's streams (and with them every durable consumer), so the
 * services provision them afresh: events left by an earlier scenario would
 * otherwise be a backlog that the new consumers work through first.
 */
export async function resetStreams(natsUrl: string): Promise<void> {
  const nc = await connect({ servers: natsUrl.split(","), name: "bench-runner" });
  try {
    const jsm = await nc.jetstreamManager();
    for (const name of [...allStreams.map((s) => s.name), deadLetterStreamSpec.name]) {
      try {
        await jsm.streams.delete(name);
      } catch {
        // not there: nothing to reset
      }
    }
  } finally {
    await nc.close();
  }
}
