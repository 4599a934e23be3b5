/**
 * Scenario 8: the saga offered three times what it can take. The capacity
 * is measured first (closed loop, as in scenario 4); then an open loop
 * offers three times that for 10 s from a process of its own; then a third
 * of the capacity, to see how soon latency is back to normal.
 * - goodput: orders confirmed per second during the overload, against the
 *   capacity (target: at least 0.8);
 * - the excess: how the calls that failed failed, and how long a failure
 *   took (target: every one RESOURCE_EXHAUSTED or UNAVAILABLE, p99 under
 *   FAIL_FAST_MS; the client's bound on calls in flight refuses at once,
 *   nothing sent);
 * - memory: the services' peak RSS during it;
 * - recovery: latency of the calm run that starts about a second after the
 *   overload's last call (its drain), against the same run before it
 *   (target: p99 at most RECOVERED_P99_FACTOR times as high, no call failed).
 */
import { status } from "@grpc/grpc-js";
import { cpuMeter, MemorySampler, runWorker } from "../lib/proc.js";
import { row, type BenchContext, type Row, type Scenario, type ScenarioResult } from "../lib/report.js";
import { startShop } from "../lib/shop-processes.js";
import type { OrderLoadConfig, OrderLoadResult } from "../workers/order-load.js";

export const OVERLOAD_GOODPUT_TARGET = 0.8;
export const RSS_TARGET_MIB = 150;
/** The slowest refusal (p99) that still counts as refused fast: a caller told in time to try elsewhere or later. */
export const FAIL_FAST_MS = 250;
/**
 * Back to normal a second after the overload: the calm run's p99 at most
 * this many times the same run's before it (two runs of one rate on this
 * kind of machine differ by up to about that much).
 */
export const RECOVERED_P99_FACTOR = 2;
/** The codes of a call refused for want of capacity, which a caller may try again later or elsewhere. */
const retryable = new Set<string>([String(status.RESOURCE_EXHAUSTED), String(status.UNAVAILABLE)]);
const FACTOR = 3;

const codes = (errors: Record<string, number>) =>
  Object.entries(errors)
    .map(([code, n]) => `${n} ${status[Number(code)] ?? code}`)
    .join(", ") || "none";

const f = (v: number | null | undefined, digits = 1) => (v == null || !Number.isFinite(v) ? "-" : v.toFixed(digits));

export const overload: Scenario = {
  name: "overload",
  summary: `the saga offered ${FACTOR}x its measured capacity for 10 s: goodput, how the excess is refused, memory, latency right after`,
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const { options } = ctx;
    const nats = await ctx.nats();
    const shop = await startShop(ctx, "overload");
    const base = { ordersAddress: shop.ordersAddress, natsUrl: nats.url, productIds: shop.productIds, linesPerOrder: 2, concurrency: 64, drainMs: options.quick ? 2_000 : 5_000 };
    const pids = [shop.products.process.pid, shop.orders.process.pid];
    const details: Record<string, unknown> = {};
    const rows: Row[] = [];
    try {
      const capacity = await runWorker<OrderLoadResult>("bench/workers/order-load.ts", { ...base, mode: "saga", rate: 0, warmupMs: options.warmupMs, measureMs: Math.max(options.measureMs, options.quick ? 1_500 : 4_000) } satisfies OrderLoadConfig);
      details.capacity = capacity;
      const calmRate = Math.max(10, Math.round(capacity.perSecond / 3));
      const calm = (name: string) =>
        runWorker<OrderLoadResult>("bench/workers/order-load.ts", { ...base, mode: "rate", rate: calmRate, warmupMs: 500, measureMs: options.quick ? 1_500 : 3_000 } satisfies OrderLoadConfig).then((r) => {
          details[name] = r;
          return r;
        });
      const before = await calm("before");
      const offered = Math.round(FACTOR * capacity.perSecond);
      ctx.log(`  capacity ${capacity.perSecond.toFixed(0)} orders/s; offering ${offered}/s for ${options.quick ? 3 : 10} s`);
      const sampler = new MemorySampler(pids).start();
      const meter = cpuMeter(pids);
      const over = await runWorker<OrderLoadResult>("bench/workers/order-load.ts", { ...base, mode: "rate", rate: offered, warmupMs: 0, measureMs: options.quick ? 3_000 : 10_000, drainMs: 1_000 } satisfies OrderLoadConfig);
      const cpu = meter();
      const peaks = sampler.stop();
      details.overload = over;
      const after = await calm("after");
      const goodput = over.perSecond / capacity.perSecond;
      const rss = { products: peaks.get(pids[0]) ?? Number.NaN, orders: peaks.get(pids[1]) ?? Number.NaN };
      details.rssPeakMiB = rss;
      const failedFast = over.failedLatencyMs;
      const refusedFast = over.createFailed === 0 || (Object.keys(over.createErrors).every((code) => retryable.has(code)) && failedFast.p99 < FAIL_FAST_MS);
      ctx.log(
        `  ${offered}/s offered: ${over.started} calls, ${over.created} OK, ${over.confirmed} confirmed (${over.perSecond.toFixed(0)}/s, ${(100 * goodput).toFixed(0)}% of capacity); failed ${codes(over.createErrors)}, in p50 ${f(failedFast.p50)} p99 ${f(failedFast.p99)} ms; unresolved ${JSON.stringify(over.unresolved)}; peak RSS products ${f(rss.products, 0)} MiB, orders ${f(rss.orders, 0)} MiB; CPU products ${cpu[0]} ms, orders ${cpu[1]} ms`,
      );
      ctx.log(`  ${calmRate}/s before: p99 ${f(before.confirmLatencyMs.p99)} ms; right after: p99 ${f(after.confirmLatencyMs.p99)} ms, ${after.createFailed} failed`);
      const stranded = Object.entries(over.unresolved).filter(([state]) => state !== "CONFIRMED" && state !== "REJECTED");
      rows.push(
        row({
          scenario: "8 Overload",
          // The case is the same in every run (the summary groups runs by it); the rates, which differ, go in the note.
          case: `saga offered ${FACTOR}x its capacity: confirmed/s vs the closed-loop capacity`,
          view: "open loop",
          unit: "orders/s",
          concord: over.perSecond,
          baseline: capacity.perSecond,
          concordLatencyMs: { p50: over.confirmLatencyMs.p50, p99: over.confirmLatencyMs.p99 },
          target: `ratio >= ${OVERLOAD_GOODPUT_TARGET}, RSS < ${RSS_TARGET_MIB} MiB, failures RESOURCE_EXHAUSTED or UNAVAILABLE in p99 < ${FAIL_FAST_MS} ms`,
          pass: goodput >= OVERLOAD_GOODPUT_TARGET && Math.max(rss.products, rss.orders) < RSS_TARGET_MIB && refusedFast,
          note: `offered ${offered}/s; failed: ${codes(over.createErrors)} (p99 ${f(failedFast.p99, 0)} ms to fail); peak RSS ${f(rss.products, 0)} / ${f(rss.orders, 0)} MiB${stranded.length ? `; unresolved ${JSON.stringify(Object.fromEntries(stranded))}` : ""}`,
        }),
        row({
          scenario: "8 Overload",
          case: "saga at a third of its capacity right after the overload vs before it",
          view: "open loop",
          unit: "orders/s",
          concord: after.perSecond,
          baseline: before.perSecond,
          concordLatencyMs: { p50: after.confirmLatencyMs.p50, p99: after.confirmLatencyMs.p99 },
          baselineLatencyMs: { p50: before.confirmLatencyMs.p50, p99: before.confirmLatencyMs.p99 },
          target: `p99 <= ${RECOVERED_P99_FACTOR}x before, nothing failed`,
          pass: after.createFailed === 0 && after.confirmLatencyMs.p99 <= RECOVERED_P99_FACTOR * before.confirmLatencyMs.p99,
          note: `${calmRate}/s${after.createFailed ? `; ${after.createFailed} calls failed (${codes(after.createErrors)})` : ""}`,
        }),
      );
    } finally {
      await shop.stop();
    }
    return { rows, details };
  },
};
