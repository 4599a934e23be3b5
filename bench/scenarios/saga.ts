/**
 * Scenario 4: the order saga end to end, through both real services and
 * nats-server: CreateOrder (priced from the order service's copy of the
 * catalogue, SQLite), OrderPlaced
 * through the order outbox, the product service's reservation with inbox,
 * StockReserved through its outbox, the order service's confirmation, and
 * OrderConfirmed through its outbox, seen by the load generator.
 * - highest sustainable rate: a closed loop keeping `SAGA_WINDOW` orders
 *   between the call and their confirmation; confirmed orders/s.
 * - latency at a fixed offered load (open loop, default 200 orders/s):
 *   from the intended start of each call to its OrderConfirmed, and how many
 *   orders are left PENDING after a drain period.
 * The baseline (bare-saga.ts): the same loads through two bare processes that
 * only pass the saga's messages on (a gRPC answer, three publishes, two
 * consumers), on the same nats-server. Judged on the targets; the baseline
 * says how much of each figure the pattern itself costs on this machine.
 */
import { status } from "@grpc/grpc-js";
import { reportProfile } from "../lib/cpuprofile.js";
import { MemorySampler, runMeteredWorker } from "../lib/proc.js";
import { row, type BenchContext, type Row, type Scenario, type ScenarioResult } from "../lib/report.js";
import { type ShopOptions, shopProcessNames, startShop } from "../lib/shop-processes.js";
import type { OrderLoadConfig, OrderLoadResult } from "../workers/order-load.js";
import { runWorker } from "../lib/proc.js";
import type { RunningNats } from "../lib/nats-server.js";
import type { TimerWakesConfig, TimerWakesResult } from "../workers/timer-wakes.js";
import { startBareSaga } from "./bare-saga.js";

/** p99 from the call to CONFIRMED at the offered rate, SQLite. */
export const SAGA_P99_TARGET_MS = 15;
/** Confirmed orders/s in the closed loop, SQLite. */
export const SAGA_CAPACITY_TARGET = 1_000;
/** CPU per order at the offered rate, every process of the system (both services and nats-server), µs. */
export const SAGA_CPU_TARGET_US = 2_000;
const codes = (errors: Record<string, number>) =>
  Object.entries(errors)
    .map(([code, n]) => `${n} ${status[Number(code)] ?? code}`)
    .join(", ");
export const SAGA_WINDOW = 64;
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
  /** Measure the bare stand-ins too and judge the open loop's latency and CPU per order against the saga's targets. */
  readonly judged: boolean;
  /** Judge the open loop's latency alone (p99 and nothing left PENDING), without the stand-ins. Default: as `judged`. */
  readonly latencyJudged?: boolean;
  /** The open loop's p99 target, ms. Default SAGA_P99_TARGET_MS. */
  readonly p99TargetMs?: number;
  /** The database server's main process (PostgreSQL's postmaster), whose CPU per order, its children's with it, is metered too. */
  readonly databasePid?: number;
}

type MeteredResult = OrderLoadResult & {
  readonly cpuUsPerOrder: { readonly products: number; readonly orders: number; readonly natsServer: number; /** The PostgreSQL server's, all its processes. */ readonly database?: number };
};

/** Runs the generator, metering the CPU of each service's processes and of nats-server over its window, per confirmed order. */
async function meteredLoad(config: OrderLoadConfig, productPids: readonly number[], orderPids: readonly number[], natsPid: number, databasePid?: number): Promise<MeteredResult> {
  const { result: r, cpuMs: cpu } = await runMeteredWorker<OrderLoadResult>("bench/workers/order-load.ts", config, [...productPids, ...orderPids, natsPid], databasePid === undefined ? [] : [databasePid]);
  const per = (ms: number) => (r.confirmed === 0 ? Number.NaN : (ms * 1000) / r.confirmed);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const n = productPids.length;
  const m = n + orderPids.length;
  return {
    ...r,
    cpuUsPerOrder: {
      products: per(sum(cpu.slice(0, n))),
      orders: per(sum(cpu.slice(n, m))),
      natsServer: per(cpu[m]),
      ...(databasePid !== undefined && { database: per(cpu[m + 1]) }),
    },
  };
}

const services = (r: MeteredResult) => r.cpuUsPerOrder.products + r.cpuUsPerOrder.orders;
const everyProcess = (r: MeteredResult) => services(r) + r.cpuUsPerOrder.natsServer;
/** Orders of the window never seen confirmed or rejected. */
const unresolvedOf = (r: OrderLoadResult) => Object.values(r.unresolved).reduce((a, b) => a + b, 0);
/** With the database server metered, every process's CPU per order (the row's own figure is the services'). */
const databaseCpu = (r: MeteredResult) => (r.cpuUsPerOrder.database === undefined ? "" : `; CPU per order: ${cpuNote(r)}`);
const cpuNote = (r: MeteredResult) =>
  `orders ${r.cpuUsPerOrder.orders.toFixed(0)}, products ${r.cpuUsPerOrder.products.toFixed(0)}, nats-server ${r.cpuUsPerOrder.natsServer.toFixed(0)}${r.cpuUsPerOrder.database === undefined ? "" : `, PostgreSQL ${r.cpuUsPerOrder.database.toFixed(0)}`} µs`;

/** The closed and the open loop through the bare stand-ins (bare-saga.ts), after a probe like the shop's. */
async function measureBareSaga(
  ctx: BenchContext,
  nats: RunningNats,
  base: Omit<OrderLoadConfig, "mode" | "warmupMs" | "measureMs">,
  closedLoop: Pick<OrderLoadConfig, "mode" | "warmupMs" | "measureMs">,
  openLoop: Pick<OrderLoadConfig, "mode" | "warmupMs" | "measureMs">,
  pause: () => Promise<unknown>,
): Promise<{ max: MeteredResult; atRate: MeteredResult }> {
  const stand = await startBareSaga(ctx, nats);
  try {
    const [products, orders] = stand.processes;
    const on = { ...base, ordersAddress: stand.ordersAddress };
    const probe = await runWorker<OrderLoadResult>("bench/workers/order-load.ts", { ...on, mode: "probe", warmupMs: 10_000, measureMs: 0, drainMs: 0 } satisfies OrderLoadConfig);
    if (probe.confirmed !== 1) throw new Error(`the first order through the stand-ins was not confirmed within 10 s (${probe.createFailed} calls failed ${JSON.stringify(probe.createErrors)}, outcome ${JSON.stringify(probe.unresolved)})`);
    const bareLoad = (config: OrderLoadConfig) => meteredLoad(config, [products.pid], [orders.pid], nats.process.pid);
    const max = await bareLoad({ ...on, ...closedLoop });
    ctx.log(`  bare baseline, closed loop: ${max.perSecond.toFixed(0)} orders/s; p50 ${max.confirmLatencyMs.p50.toFixed(1)} p99 ${max.confirmLatencyMs.p99.toFixed(1)} ms; CPU per order: ${cpuNote(max)}`);
    await pause();
    const atRate = await bareLoad({ ...on, ...openLoop });
    ctx.log(`  bare baseline, ${base.rate}/s offered: ${atRate.confirmed} of ${atRate.started} confirmed; p50 ${atRate.confirmLatencyMs.p50.toFixed(1)} p99 ${atRate.confirmLatencyMs.p99.toFixed(1)} ms; CPU per order: ${cpuNote(atRate)}`);
    return { max, atRate };
  } finally {
    await stand.stop();
  }
}

/**
 * The saga on one shop: its highest sustainable rate (closed loop), then
 * latency at `run.rate` offered (open loop), CPU per order summed over the
 * instances of each service. A judged run then measures the same two loads
 * on the bare baseline (bare-saga.ts) on the same nats-server.
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
  const closedLoop = { mode: "saga", warmupMs: options.warmupMs, measureMs: Math.max(options.measureMs, options.quick ? 1_500 : 4_000) } as const;
  const openLoop = { mode: "rate", warmupMs: options.quick ? 500 : 2_000, measureMs: options.quick ? 2_000 : Math.max(options.measureMs, 10_000) } as const;
  const pause = () => new Promise((r) => setTimeout(r, options.quick ? 500 : 1_000));
  const productPids = shop.allProducts.map((p) => p.process.pid);
  const orderPids = shop.allOrders.map((o) => o.process.pid);
  const load = (config: OrderLoadConfig) => meteredLoad(config, productPids, orderPids, nats.process.pid, run.databasePid);
  const details: Record<string, unknown> = { linesPerOrder: LINES_PER_ORDER, window: SAGA_WINDOW, offeredRate: run.rate, instances: shop.allOrders.length };
  const sampler = new MemorySampler([...productPids, ...orderPids]).start();
  let max: MeteredResult;
  let atRate: MeteredResult;
  try {
    const probe = await runWorker<OrderLoadResult>("bench/workers/order-load.ts", { ...base, mode: "probe", warmupMs: 10_000, measureMs: 0, drainMs: 0 } satisfies OrderLoadConfig);
    details.probe = probe;
    if (probe.confirmed !== 1) {
      const why = probe.createFailed ? `CreateOrder failed ${JSON.stringify(probe.createErrors)}` : `the first order was not confirmed within 10 s (${JSON.stringify(probe.unresolved)})`;
      ctx.log(`  skipped: ${why}`);
      return { rows: [row({ scenario: run.scenario, case: `CreateOrder -> CONFIRMED${label}`, unit: "orders/s", note: `skipped: ${why}` })], details };
    }
    ctx.log(`  ${run.label ?? "probe"}: first order confirmed ${probe.confirmLatencyMs.p50.toFixed(1)} ms after the call`);

    // Capacity first: a closed loop cannot overload the system, and it warms the JIT for the latency run.
    max = await load({ ...base, ...closedLoop });
    details.max = max;
    ctx.log(
      `  closed loop, ${SAGA_WINDOW} orders in flight: ${max.perSecond.toFixed(0)} confirmed orders/s; call -> CONFIRMED p50 ${max.confirmLatencyMs.p50.toFixed(1)} p99 ${max.confirmLatencyMs.p99.toFixed(1)} ms; CPU per order: ${cpuNote(max)}; ${max.createFailed} calls failed; unresolved ${JSON.stringify(max.unresolved)}`,
    );
    // Then latency at the offered load, on the warmed-up system once the closed loop has drained.
    await pause();
    atRate = await load({ ...base, ...openLoop });
    details.atRate = atRate;
    const lat = atRate.confirmLatencyMs;
    ctx.log(
      `  ${run.rate}/s offered: ${atRate.started} orders, ${atRate.confirmed} confirmed, ${atRate.rejected} rejected, ${atRate.createFailed} calls failed, unresolved ${JSON.stringify(atRate.unresolved)}; call -> CONFIRMED p50 ${lat.p50.toFixed(1)} p99 ${lat.p99.toFixed(1)} p99.9 ${lat.p999.toFixed(1)} max ${lat.max.toFixed(1)} ms; CreateOrder p50 ${atRate.createLatencyMs.p50.toFixed(1)} p99 ${atRate.createLatencyMs.p99.toFixed(1)} ms; CPU per order: ${cpuNote(atRate)}${atRate.lateStarts ? `; ${atRate.lateStarts} calls started > 5 ms late (generator overloaded)` : ""}`,
    );
  } finally {
    const peaks = sampler.stop();
    details.rssPeakMiB = { products: peaks.get(shop.products.process.pid), orders: peaks.get(shop.orders.process.pid) };
    await shop.stop();
  }

  // The baseline: the same two loads through the bare stand-ins, then what a wake of an idle Node process costs.
  let bare: { max: MeteredResult; atRate: MeteredResult } | undefined;
  let wake: TimerWakesResult | undefined;
  if (run.judged) {
    try {
      bare = await measureBareSaga(ctx, nats, base, closedLoop, openLoop, pause);
      details.bare = bare;
    } catch (err) {
      ctx.log(`  bare baseline failed, rows left without it: ${err instanceof Error ? err.message : String(err)}`);
    }
    try {
      wake = await runWorker<TimerWakesResult>("bench/workers/timer-wakes.ts", { perSecond: run.rate, warmupMs: 1_000, measureMs: options.quick ? 1_000 : 3_000 } satisfies TimerWakesConfig);
      details.timerWakes = { asked: run.rate, ...wake };
      ctx.log(`  a timer doing nothing in an idle Node process, ${wake.perSecond.toFixed(0)} firings a second: ${wake.cpuUsPerFiring.toFixed(0)} µs CPU per firing`);
    } catch (err) {
      ctx.log(`  timing an idle Node process's wakes failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  /** What went wrong in a baseline run. A closed loop's calls started and outcomes seen in its window differ by the orders in flight, so only the open loop compares them. */
  const failures = (r: MeteredResult) => {
    const unresolved = unresolvedOf(r);
    const short = r.mode === "rate" && r.confirmed !== r.started;
    return r.createFailed || unresolved || short ? `; bare: ${r.createFailed} calls failed, ${unresolved} unresolved${short ? `, ${r.confirmed} of ${r.started} confirmed` : ""}` : "";
  };

  const rows: Row[] = [];
  rows.push(
    row({
      scenario: run.scenario,
      case: `CreateOrder -> CONFIRMED, highest sustainable rate (${LINES_PER_ORDER} lines)${label}`,
      view: "closed loop",
      inFlight: SAGA_WINDOW,
      unit: "orders/s",
      concord: max.perSecond,
      concordLatencyMs: { p50: max.confirmLatencyMs.p50, p99: max.confirmLatencyMs.p99 },
      concordCpuUsPerOp: services(max),
      ...(bare && {
        baseline: bare.max.perSecond,
        baselineLatencyMs: { p50: bare.max.confirmLatencyMs.p50, p99: bare.max.confirmLatencyMs.p99 },
        baselineCpuUsPerOp: services(bare.max),
      }),
      ...(run.judged && { target: `>= ${SAGA_CAPACITY_TARGET} orders/s, no call failed`, pass: max.perSecond >= SAGA_CAPACITY_TARGET && max.createFailed === 0 }),
      note: [
        max.createFailed || Object.keys(max.unresolved).length ? `${max.createFailed} calls failed, unresolved ${JSON.stringify(max.unresolved)}` : "",
        bare ? failures(bare.max) : "",
        databaseCpu(max),
      ]
        .join("")
        .replace(/^; /, "") || undefined,
    }),
  );
  const pending = atRate.unresolved.PENDING ?? 0;
  const unresolved = unresolvedOf(atRate);
  const lat = atRate.confirmLatencyMs;
  const p99Target = run.p99TargetMs ?? SAGA_P99_TARGET_MS;
  const okRate = lat.p99 < p99Target && pending === 0 && unresolved === 0 && atRate.createFailed === 0 && atRate.confirmed === atRate.started;
  rows.push(
    row({
      scenario: run.scenario,
      case: `CreateOrder -> CONFIRMED at ${run.rate}/s offered (${LINES_PER_ORDER} lines)${label}`,
      view: "open loop",
      unit: "orders/s",
      concord: atRate.perSecond,
      concordLatencyMs: { p50: lat.p50, p99: lat.p99, p999: lat.p999 },
      concordCpuUsPerOp: services(atRate),
      ...(bare && {
        baseline: bare.atRate.perSecond,
        baselineLatencyMs: { p50: bare.atRate.confirmLatencyMs.p50, p99: bare.atRate.confirmLatencyMs.p99, p999: bare.atRate.confirmLatencyMs.p999 },
        baselineCpuUsPerOp: services(bare.atRate),
        // Both sides confirm what was offered: a ratio of rates would say nothing.
        ratio: null,
      }),
      ...((run.latencyJudged ?? run.judged) ? { target: `p99 < ${p99Target} ms, 0 PENDING`, pass: okRate } : {}),
      note: `${pending} PENDING of ${atRate.started}; offered = ${((100 * run.rate) / max.perSecond).toFixed(0)}% of the capacity above${atRate.createFailed ? `, ${atRate.createFailed} calls failed (${codes(atRate.createErrors)})` : ""}${unresolved - pending ? `, ${unresolved - pending} other unresolved` : ""}${atRate.rejected ? `, ${atRate.rejected} rejected` : ""}${bare ? failures(bare.atRate) : ""}${databaseCpu(atRate)}`,
    }),
  );
  if (run.judged) {
    const all = everyProcess(atRate);
    const bareAll = bare ? everyProcess(bare.atRate) : null;
    rows.push(
      row({
        scenario: run.scenario,
        case: `CPU per order at ${run.rate}/s offered, every process (services and nats-server)${label}`,
        view: "open loop",
        unit: "µs CPU/order",
        concord: all,
        baseline: bareAll,
        // baseline / Concord, as in every CPU row: higher is better.
        ratio: bareAll !== null ? bareAll / all : null,
        concordCpuUsPerOp: all,
        baselineCpuUsPerOp: bareAll,
        target: `< ${SAGA_CPU_TARGET_US} µs`,
        pass: all < SAGA_CPU_TARGET_US,
        note: `${cpuNote(atRate)}${bare ? `; bare: ${cpuNote(bare.atRate)}` : ""}${wake ? `; an idle Node process woken by a timer ${wake.perSecond.toFixed(0)} times a second: ${wake.cpuUsPerFiring.toFixed(0)} µs a firing` : ""}`,
      }),
    );
  }
  const profiles: Record<string, unknown> = {};
  const instances = shop.allOrders.length;
  for (const name of [...shopProcessNames(run.prefix, "products", instances), ...shopProcessNames(run.prefix, "orders", instances), ...(bare ? ["bare-saga-products", "bare-saga-orders"] : [])]) {
    const s = reportProfile(ctx.profileDir, name, ctx.log, `${name} (whole scenario)`);
    if (s) profiles[name] = s;
  }
  details.profiles = profiles;
  return { rows, details };
}

export const saga: Scenario = {
  name: "saga",
  summary: "orders/s CreateOrder -> CONFIRMED (closed loop) and latency at a fixed offered load (open loop), PENDING left; the same loads on two bare stand-ins (same messages, no database) as the baseline",
  run: (ctx: BenchContext) => measureSaga(ctx, { scenario: "4 Saga", prefix: "saga", rate: ctx.options.sagaRate, judged: true }),
};
