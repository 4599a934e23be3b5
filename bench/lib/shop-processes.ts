import { connect } from "nats";
import { allStreams } from "../../gen/ts/concord_streams.js";
import { deadLetterStreamSpec } from "../../platform/events/index.js";
import type { RunningNats } from "./nats-server.js";
import type { BenchContext } from "./report.js";
import { freePort } from "./proc.js";
import { type ServiceProcess, startOrdersProcess, startProductsProcess } from "./services.js";
import { createProducts } from "./shop.js";

export interface RunningShop {
  readonly products: ServiceProcess;
  readonly orders: ServiceProcess;
  /** Products in the catalogue, each with ample stock. */
  readonly productIds: string[];
  stop(): Promise<void>;
}

/**
 * The product and order services as production runs them, each its own
 * process with its own SQLite file, on this run's nats-server (or `on`);
 * `prefix` names their logs, databases and profiles; `env` is added to
 * their environment.
 */
export async function startShop(ctx: BenchContext, prefix: string, productCount = 16, on?: RunningNats, env?: NodeJS.ProcessEnv): Promise<RunningShop> {
  const nats = on ?? (await ctx.nats());
  await resetStreams(nats.url);
  const common = { logDir: ctx.tmp, dataDir: ctx.tmp, logLevel: "info", natsUrl: nats.url, profileDir: ctx.profileDir, env };
  // Both start at once (the order service dials the product service lazily), to keep runs short.
  const productsAddress = `127.0.0.1:${await freePort()}`;
  const started = await Promise.allSettled([
    startProductsProcess({ ...common, name: `${prefix}-products`, address: productsAddress }),
    startOrdersProcess({ ...common, name: `${prefix}-orders`, productsAddress }),
  ]);
  const [p, o] = started;
  if (p.status === "rejected" || o.status === "rejected") {
    for (const r of started) if (r.status === "fulfilled") await r.value.process.stop();
    throw p.status === "rejected" ? p.reason : (o as PromiseRejectedResult).reason;
  }
  const products = p.value;
  const orders = o.value;
  try {
    const productIds = await createProducts(products.address, productCount, 1_000_000_000);
    return {
      products,
      orders,
      productIds,
      async stop() {
        await orders.process.stop();
        await products.process.stop();
      },
    };
  } catch (err) {
    await orders.process.stop();
    await products.process.stop();
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
