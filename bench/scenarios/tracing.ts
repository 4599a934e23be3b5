/**
 * Scenario 9: what tracing costs. The saga of scenario 4 (closed loop, then
 * the open loop at the offered rate) with tracing off, then on: both
 * services exporting every span over OTLP/HTTP to a receiver in the bench
 * process (OTEL_EXPORTER_OTLP_ENDPOINT, default sampler, so every order is
 * traced). The baseline column is tracing off; CPU per order is the two
 * services' (the receiver's work is not counted).
 */
import { runMeteredWorker, runWorker } from "../lib/proc.js";
import { row, type BenchContext, type Row, type Scenario, type ScenarioResult } from "../lib/report.js";
import { startShop } from "../lib/shop-processes.js";
import type { OrderLoadConfig, OrderLoadResult } from "../workers/order-load.js";
import { startTraceReceiver } from "../../tools/traces/otlp-receiver.js";

const WINDOW = 64;
/** A figure for the log; a window with nothing confirmed has none (NaN, null once sent from the worker). */
const fmt = (n: number | null | undefined, digits: number) => (n == null || Number.isNaN(n) ? "-" : n.toFixed(digits));
const LINES_PER_ORDER = 2;

interface SagaFigures {
  readonly max: OrderLoadResult & { readonly cpuUsPerOrder: number };
  readonly atRate: OrderLoadResult & { readonly cpuUsPerOrder: number };
}

/** The saga's closed loop and open loop on a fresh shop started with `env`. */
async function measure(ctx: BenchContext, prefix: string, env: NodeJS.ProcessEnv): Promise<SagaFigures | string> {
  const { options } = ctx;
  const nats = await ctx.nats();
  const shop = await startShop(ctx, prefix, { env });
  try {
    const base = { ordersAddress: shop.orders.address, natsUrl: nats.url, productIds: shop.productIds, linesPerOrder: LINES_PER_ORDER, concurrency: WINDOW, rate: options.sagaRate, drainMs: options.quick ? 2_000 : 5_000 };
    const pids = [shop.products.process.pid, shop.orders.process.pid];
    const load = async (config: OrderLoadConfig) => {
      const { result: r, cpuMs: cpu } = await runMeteredWorker<OrderLoadResult>("bench/workers/order-load.ts", config, pids);
      return { ...r, cpuUsPerOrder: r.confirmed === 0 ? Number.NaN : ((cpu[0] + cpu[1]) * 1000) / r.confirmed };
    };
    const probe = await runWorker<OrderLoadResult>("bench/workers/order-load.ts", { ...base, mode: "probe", warmupMs: 10_000, measureMs: 0, drainMs: 0 } satisfies OrderLoadConfig);
    if (probe.confirmed !== 1) return `the first order was not confirmed within 10 s (${JSON.stringify(probe.unresolved)})`;
    const max = await load({ ...base, mode: "saga", warmupMs: options.warmupMs, measureMs: Math.max(options.measureMs, options.quick ? 1_500 : 4_000) });
    await new Promise((r) => setTimeout(r, options.quick ? 500 : 1_000));
    const atRate = await load({ ...base, mode: "rate", warmupMs: options.quick ? 500 : 2_000, measureMs: options.quick ? 2_000 : Math.max(options.measureMs, 10_000) });
    return { max, atRate };
  } finally {
    await shop.stop();
  }
}

export const tracing: Scenario = {
  name: "tracing",
  summary: "saga orders/s and p99 with tracing on (every span exported over OTLP to a local receiver) against off",
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const receiver = await startTraceReceiver({ keepSpans: false });
    const rows: Row[] = [];
    const details: Record<string, unknown> = {};
    try {
      const off = await measure(ctx, "tracing-off", { OTEL_EXPORTER_OTLP_ENDPOINT: "", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "" });
      const on = await measure(ctx, "tracing-on", { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "", OTEL_TRACES_SAMPLER: "parentbased_always_on" });
      details.off = off;
      details.on = on;
      details.spansReceived = receiver.count();
      if (typeof off === "string" || typeof on === "string") {
        const why = typeof off === "string" ? `off: ${off}` : `on: ${on as string}`;
        ctx.log(`  skipped: ${why}`);
        rows.push(row({ scenario: "9 Tracing", case: "saga with tracing on / off", unit: "orders/s", note: `skipped: ${why}` }));
        return { rows, details };
      }
      const spansPerOrder = receiver.count() / Math.max(1, on.max.started + on.atRate.started);
      for (const [label, a, b] of [["closed loop", on.max, off.max], ["open loop", on.atRate, off.atRate]] as const) {
        ctx.log(
          `  ${label}: tracing on ${fmt(a.perSecond, 0)} orders/s (${a.confirmed} confirmed, ${a.createFailed} calls failed) p99 ${fmt(a.confirmLatencyMs.p99, 1)} ms, ${fmt(a.cpuUsPerOrder, 0)} µs CPU/order; ` +
            `off ${fmt(b.perSecond, 0)} orders/s (${b.confirmed} confirmed, ${b.createFailed} calls failed) p99 ${fmt(b.confirmLatencyMs.p99, 1)} ms, ${fmt(b.cpuUsPerOrder, 0)} µs CPU/order`,
        );
        rows.push(
          row({
            scenario: "9 Tracing",
            case: label === "closed loop" ? `saga, highest sustainable rate, tracing on / off` : `saga at ${ctx.options.sagaRate}/s offered, tracing on / off`,
            view: label,
            inFlight: label === "closed loop" ? WINDOW : null,
            unit: "orders/s",
            concord: a.perSecond,
            baseline: b.perSecond,
            concordLatencyMs: { p50: a.confirmLatencyMs.p50, p99: a.confirmLatencyMs.p99 },
            baselineLatencyMs: { p50: b.confirmLatencyMs.p50, p99: b.confirmLatencyMs.p99 },
            concordCpuUsPerOp: a.cpuUsPerOrder,
            baselineCpuUsPerOp: b.cpuUsPerOrder,
            note: `${spansPerOrder.toFixed(1)} spans exported per order`,
          }),
        );
      }
      return { rows, details };
    } finally {
      await receiver.close();
    }
  },
};
