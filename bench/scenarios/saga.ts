/**
 * Scenario 4: the order saga end to end, through both real services and
 * nats-server: CreateOrder (which looks products up over gRPC), OrderPlaced
 * through the order outbox, the product service's reservation with inbox,
 * StockReserved through its outbox, the order service's confirmation, and
 * OrderConfirmed through its outbox, seen by the load generator.
 * - highest sustainable rate: a closed loop keeping `SAGA_WINDOW` orders
 *   between the call and their confirmation; confirmed orders/s.
 * - latency at a fixed offered load (open loop, default 200 orders/s):
 *   from the intended start of each call to its OrderConfirmed, and how many
 *   orders are left PENDING after a drain period.
 * There is no bare baseline for a saga; it is judged on its targets.
 */
import { status } from "@grpc/grpc-js";
import { reportProfile } from "../lib/cpuprofile.js";
import { MemorySampler, runMeteredWorker } from "../lib/proc.js";
import { row, type BenchContext, type Row, type Scenario, type ScenarioResult } from "../lib/report.js";
import { type ShopOptions, startShop } from "../lib/shop-processes.js";
import type { OrderLoadConfig, OrderLoadResult } from "../workers/order-load.js";
import { runWorker } from "../lib/proc.js";

export const SAGA_P99_TARGET_MS = 25;
/** CPU per order at the offered rate, every process of the system (both services and nats-server), µs. */
export const SAGA_CPU_TARGET_US = 2_000;
const codes = (errors: Record<string, number>) =>
  Object.entries(errors)
    .map(([code, n]) => `${n} ${status[Number(code)] ?? code}`)
    .join(", ");
const SAGA_WINDOW = 64;
const LINES_PER_ORDER = 2;

export interface SagaRun {
  /** The table's scenario column, e.g. "4 Saga". */
  readonly scenario: string;
  /** Names the processes' logs and profiles. */
  readonly prefix: string;
  /** Added to each row's case, e.g. "Postgres, 2 instances of each". */
  readonly label?: string;
  readonly shop?: ShopOptions;
  /** Offered orders/s of the open loop. */
  readonly rate: number;
  /** Judge the open loop against the saga's latency target. */
  readonly judged: boolean;
}

/**
 * The saga on one shop: its highest sustainable rate (closed loop), then
 * latency at `run.rate` offered (open loop), CPU per order summed over the
 * instances of each service.
 */
export async function measureSaga(ctx: BenchContext, run: SagaRun): Promise<ScenarioResult> {
  const { options } = ctx;
  const nats = run.shop?.on ?? (await ctx.nats());
  const shop = await startShop(ctx, run.prefix, run.shop);
  const label = run.label ? `, ${run.label}` : "";
  const base = {
    ordersAddress: shop.ordersAddress,
    natsUrl: nats.url,
    productIds: shop.productIds,
    linesPerOrder: LINES_PER_ORDER,
    concurrency: SAGA_WINDOW,
    rate: run.rate,
    drainMs: options.quick ? 2_000 : 5_000,
  };
  const rows: Row[] = [];
  const productPids = shop.allProducts.map((p) => p.process.pid);
  const orderPids = shop.allOrders.map((o) => o.process.pid);
  const pids = [...productPids, ...orderPids, nats.process.pid];
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  /** Runs the generator, metering the services' and nats-server's CPU over its window. */
  const load = async (config: OrderLoadConfig) => {
    const { result: r, cpuMs: cpu } = await runMeteredWorker<OrderLoadResult>("bench/workers/order-load.ts", config, pids);
    const per = (ms: number) => (r.confirmed === 0 ? Number.NaN : (ms * 1000) / r.confirmed);
    const n = productPids.length;
    return { ...r, cpuUsPerOrder: { products: per(sum(cpu.slice(0, n))), orders: per(sum(cpu.slice(n, 2 * n))), natsServer: per(cpu[2 * n]) } };
  };
  const details: Record<string, unknown> = { linesPerOrder: LINES_PER_ORDER, window: SAGA_WINDOW, offeredRate: run.rate, instances: shop.allOrders.length };
  const sampler = new MemorySampler([...productPids, ...orderPids]).start();
  try {
    const probe = await runWorker<OrderLoadResult>("bench/workers/order-load.ts", { ...base, mode: "probe", warmupMs: 10_000, measureMs: 0, drainMs: 0 } satisfies OrderLoadConfig);
    details.probe = probe;
    if (probe.confirmed !== 1) {
      const why = probe.createFailed ? `CreateOrder failed ${JSON.stringify(probe.createErrors)}` : `the first order was not confirmed within 10 s (${JSON.stringify(probe.unresolved)})`;
      ctx.log(`  skipped: ${why}`);
      rows.push(row({ scenario: run.scenario, case: `CreateOrder -> CONFIRMED${label}`, unit: "orders/s", note: `skipped: ${why}` }));
      return { rows, details };
    }
    ctx.log(`  ${run.label ?? "probe"}: first order confirmed ${probe.confirmLatencyMs.p50.toFixed(1)} ms after the call`);

    // Capacity first: a closed loop cannot overload the system, and it warms the JIT for the latency run.
    const max = await load({ ...base, mode: "saga", warmupMs: options.warmupMs, measureMs: Math.max(options.measureMs, options.quick ? 1_500 : 4_000) } satisfies OrderLoadConfig);
    details.max = max;
    ctx.log(
      `  closed loop, ${SAGA_WINDOW} orders in flight: ${max.perSecond.toFixed(0)} confirmed orders/s; call -> CONFIRMED p50 ${max.confirmLatencyMs.p50.toFixed(1)} p99 ${max.confirmLatencyMs.p99.toFixed(1)} ms; CPU per order: orders ${max.cpuUsPerOrder.orders.toFixed(0)} µs, products ${max.cpuUsPerOrder.products.toFixed(0)} µs, nats-server ${max.cpuUsPerOrder.natsServer.toFixed(0)} µs; ${max.createFailed} calls failed; unresolved ${JSON.stringify(max.unresolved)}`,
    );
    rows.push(
      row({
        scenario: run.scenario,
        case: `CreateOrder -> CONFIRMED, highest sustainable rate (${LINES_PER_ORDER} lines)${label}`,
        view: "closed loop",
        inFlight: SAGA_WINDOW,
        unit: "orders/s",
        concord: max.perSecond,
        concordLatencyMs: { p50: max.confirmLatencyMs.p50, p99: max.confirmLatencyMs.p99 },
        concordCpuUsPerOp: max.cpuUsPerOrder.products + max.cpuUsPerOrder.orders,
        note: max.createFailed || Object.keys(max.unresolved).length ? `${max.createFailed} calls failed, unresolved ${JSON.stringify(max.unresolved)}` : undefined,
      }),
    );
    // Then latency at the offered load, on the warmed-up system once the closed loop has drained.
    await new Promise((r) => setTimeout(r, options.quick ? 500 : 1_000));
    const rateMeasureMs = options.quick ? 2_000 : Math.max(options.measureMs, 10_000);
    const atRate = await load({
      ...base,
      mode: "rate",
      warmupMs: options.quick ? 500 : 2_000,
      measureMs: rateMeasureMs,
    } satisfies OrderLoadConfig);
    details.atRate = atRate;
    const pending = atRate.unresolved.PENDING ?? 0;
    const unresolved = Object.values(atRate.unresolved).reduce((a, b) => a + b, 0);
    const lat = atRate.confirmLatencyMs;
    ctx.log(
      `  ${run.rate}/s offered: ${atRate.started} orders, ${atRate.confirmed} confirmed, ${atRate.rejected} rejected, ${atRate.createFailed} calls failed, unresolved ${JSON.stringify(atRate.unresolved)}; call -> CONFIRMED p50 ${lat.p50.toFixed(1)} p99 ${lat.p99.toFixed(1)} p99.9 ${lat.p999.toFixed(1)} max ${lat.max.toFixed(1)} ms; CreateOrder p50 ${atRate.createLatencyMs.p50.toFixed(1)} p99 ${atRate.createLatencyMs.p99.toFixed(1)} ms; CPU per order: orders ${atRate.cpuUsPerOrder.orders.toFixed(0)} µs, products ${atRate.cpuUsPerOrder.products.toFixed(0)} µs, nats-server ${atRate.cpuUsPerOrder.natsServer.toFixed(0)} µs${atRate.lateStarts ? `; ${atRate.lateStarts} calls started > 5 ms late (generator overloaded)` : ""}`,
    );
    const capacityShare = run.rate / max.perSecond;
    const okRate = lat.p99 < SAGA_P99_TARGET_MS && pending === 0 && unresolved === 0 && atRate.createFailed === 0 && atRate.confirmed === atRate.started;
    rows.push(
      row({
        scenario: run.scenario,
        case: `CreateOrder -> CONFIRMED at ${run.rate}/s offered (${LINES_PER_ORDER} lines)${label}`,
        view: "open loop",
        unit: "orders/s",
        concord: atRate.perSecond,
        concordLatencyMs: { p50: lat.p50, p99: lat.p99, p999: lat.p999 },
        concordCpuUsPerOp: atRate.cpuUsPerOrder.products + atRate.cpuUsPerOrder.orders,
        ...(run.judged ? { target: `p99 < ${SAGA_P99_TARGET_MS} ms, 0 PENDING`, pass: okRate } : {}),
        note: `${pending} PENDING of ${atRate.started}; offered = ${(100 * capacityShare).toFixed(0)}% of the capacity above${atRate.createFailed ? `, ${atRate.createFailed} calls failed (${codes(atRate.createErrors)})` : ""}${unresolved - pending ? `, ${unresolved - pending} other unresolved` : ""}${atRate.rejected ? `, ${atRate.rejected} rejected` : ""}`,
      }),
    );
    if (run.judged) {
      const all = atRate.cpuUsPerOrder.products + atRate.cpuUsPerOrder.orders + atRate.cpuUsPerOrder.natsServer;
      rows.push(
        row({
          scenario: run.scenario,
          case: `CPU per order at ${run.rate}/s offered, every process (services and nats-server)${label}`,
          view: "open loop",
          unit: "µs CPU/order",
          concord: all,
          concordCpuUsPerOp: all,
          target: `< ${SAGA_CPU_TARGET_US} µs`,
          pass: all < SAGA_CPU_TARGET_US,
          note: `orders ${atRate.cpuUsPerOrder.orders.toFixed(0)}, products ${atRate.cpuUsPerOrder.products.toFixed(0)}, nats-server ${atRate.cpuUsPerOrder.natsServer.toFixed(0)} µs`,
        }),
      );
    }
  } finally {
    const peaks = sampler.stop();
    details.rssPeakMiB = { products: peaks.get(shop.products.process.pid), orders: peaks.get(shop.orders.process.pid) };
    await shop.stop();
  }
  const profiles: Record<string, unknown> = {};
  for (const name of [`${run.prefix}-products`, `${run.prefix}-orders`]) {
    const s = reportProfile(ctx.profileDir, name, ctx.log, `${name} (whole scenario)`);
    if (s) profiles[name] = s;
  }
  details.profiles = profiles;
  return { rows, details };
}

export const saga: Scenario = {
  name: "saga",
  summary: "orders/s CreateOrder -> CONFIRMED (closed loop) and latency at a fixed offered load (open loop), PENDING left",
  run: (ctx: BenchContext) => measureSaga(ctx, { scenario: "4 Saga", prefix: "saga", rate: ctx.options.sagaRate, judged: true }),
};
