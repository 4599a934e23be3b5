/**
 * Scenario 6: what durability costs. Publishing (the outbox relay, and raw
 * js.publish as its baseline) and the saga (highest sustainable rate, and
 * latency at 100 orders/s, the fault tests' load) on three set-ups in the
 * same run:
 * - R1: one server, the default fsync (every 2 minutes): what the other
 *   scenarios run on;
 * - R1, sync always: one server with `sync_interval: always`, which
 *   `npm start` runs: the cost of fsync alone;
 * - R3, sync always: a cluster of three on loopback, streams of 3 replicas
 *   (as the contracts declare), every service given all three URLs: what
 *   the README's durability promise rests on.
 * All three servers and the services share the same two cores, so a cluster
 * here costs more CPU per event than three machines would.
 */
import { reportProfile } from "../lib/cpuprofile.js";
import { startNatsCluster, startNatsServer, type RunningNats } from "../lib/nats-server.js";
import { runMeteredWorker, runWorker } from "../lib/proc.js";
import { row, type BenchContext, type Row, type Scenario, type ScenarioResult } from "../lib/report.js";
import { resetStreams, startShop } from "../lib/shop-processes.js";
import type { OrderLoadConfig, OrderLoadResult } from "../workers/order-load.js";
import type { PublishConfig, PublishResult } from "../workers/events-publish.js";
import { purgeStream } from "./event-publish.js";

/** The fault tests' load (test/cluster-faults.test.ts). */
export const DURABILITY_SAGA_RATE = 100;
const SAGA_WINDOW = 64;
const LINES_PER_ORDER = 2;

interface Setup {
  readonly key: string;
  readonly label: string;
  /** Starts (or hands over) the set-up's servers; `own` says whether the scenario stops them. */
  start(ctx: BenchContext): Promise<{ nats: RunningNats; own: boolean }>;
}

const setups: Setup[] = [
  { key: "r1", label: "R1, fsync every 2 min", start: async (ctx) => ({ nats: await ctx.nats(), own: false }) },
  { key: "r1-sync", label: "R1, sync always", start: async (ctx) => ({ nats: await startNatsServer(ctx.tmp, { syncAlways: true, name: "nats-sync" }), own: true }) },
  { key: "r3-sync", label: "R3 cluster, sync always", start: async (ctx) => ({ nats: await startNatsCluster(ctx.tmp, { syncAlways: true, name: "cluster" }), own: true }) },
];

export const durability: Scenario = {
  name: "durability",
  summary: `publishing and the saga on R1 (fsync every 2 min), R1 with sync always, and a 3-node cluster (R3) with sync always`,
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const { warmupMs, measureMs, window, quick } = ctx.options;
    const rows: Row[] = [];
    const details: Record<string, unknown> = { sagaRate: DURABILITY_SAGA_RATE, window, linesPerOrder: LINES_PER_ORDER };
    for (const setup of setups) {
      const { nats, own } = await setup.start(ctx);
      const natsPids = nats.processes.map((p) => p.pid);
      const perSetup: Record<string, unknown> = {};
      details[setup.key] = perSetup;
      try {
        // Publishing: raw first, then the relay, each on an empty stream.
        const publish: Partial<Record<"raw" | "outbox", PublishResult & { natsCpuMs: number }>> = {};
        for (const mode of ["raw", "outbox"] as const) {
          await purgeStream(nats.url);
          const config: PublishConfig = { mode, natsUrl: nats.url, window, warmupMs, measureMs, noAsyncTraces: true };
          const { result: r, cpuMs: cpu } = await runMeteredWorker<PublishResult>("bench/workers/events-publish.ts", config, natsPids);
          publish[mode] = { ...r, natsCpuMs: cpu.reduce((a, b) => a + b, 0) };
          ctx.log(`  ${setup.label.padEnd(24)} publish ${mode.padEnd(6)} ${r.perSecond.toFixed(0).padStart(6)} events/s acked, ${((r.cpuMs * 1000) / r.acked).toFixed(0)} µs CPU each, nats-server ${((publish[mode].natsCpuMs * 1000) / r.acked).toFixed(0)} µs${r.failed ? `, ${r.failed} failed` : ""}`);
        }
        perSetup.publish = publish;
        await resetStreams(nats.url);
        const raw = publish.raw!;
        const outbox = publish.outbox!;
        rows.push(
          row({
            scenario: "6 Durability",
            case: `events through outbox and relay, ${setup.label}`,
            view: "nats.js",
            inFlight: window,
            unit: "events/s",
            concord: outbox.perSecond,
            baseline: raw.perSecond,
            concordCpuUsPerOp: (outbox.cpuMs * 1000) / outbox.acked,
            baselineCpuUsPerOp: (raw.cpuMs * 1000) / raw.acked,
            note: `nats-server CPU per event: ${((outbox.natsCpuMs * 1000) / outbox.acked).toFixed(0)} µs (relay), ${((raw.natsCpuMs * 1000) / raw.acked).toFixed(0)} µs (raw)`,
          }),
        );

        // The saga on the same servers.
        const shop = await startShop(ctx, `durability-${setup.key}`, { on: nats });
        try {
          const pids = [shop.products.process.pid, shop.orders.process.pid, ...natsPids];
          const base = { ordersAddress: shop.orders.address, natsUrl: nats.url, productIds: shop.productIds, linesPerOrder: LINES_PER_ORDER, concurrency: SAGA_WINDOW, rate: DURABILITY_SAGA_RATE, drainMs: quick ? 2_000 : 5_000 };
          const load = async (config: OrderLoadConfig) => {
            const { result: r, cpuMs: cpu } = await runMeteredWorker<OrderLoadResult>("bench/workers/order-load.ts", config, pids);
            const per = (ms: number) => (r.confirmed === 0 ? Number.NaN : (ms * 1000) / r.confirmed);
            return { ...r, cpuUsPerOrder: { services: per((cpu[0] ?? 0) + (cpu[1] ?? 0)), natsServer: per(cpu.slice(2).reduce((a, b) => a + b, 0)) } };
          };
          const probe = await runWorker<OrderLoadResult>("bench/workers/order-load.ts", { ...base, mode: "probe", warmupMs: 15_000, measureMs: 0, drainMs: 0 } satisfies OrderLoadConfig);
          if (probe.confirmed !== 1) throw new Error(`the first order on ${setup.label} was not confirmed within 15 s`);
          const max = await load({ ...base, mode: "saga", warmupMs, measureMs: Math.max(measureMs, quick ? 1_500 : 4_000) });
          perSetup.sagaMax = max;
          ctx.log(
            `  ${setup.label.padEnd(24)} saga closed loop: ${max.perSecond.toFixed(0)} confirmed orders/s, call -> CONFIRMED p50 ${max.confirmLatencyMs.p50.toFixed(1)} p99 ${max.confirmLatencyMs.p99.toFixed(1)} ms; CPU per order: services ${max.cpuUsPerOrder.services.toFixed(0)} µs, nats-server ${max.cpuUsPerOrder.natsServer.toFixed(0)} µs`,
          );
          rows.push(
            row({
              scenario: "6 Durability",
              case: `saga, highest sustainable rate, ${setup.label}`,
              view: "closed loop",
              inFlight: SAGA_WINDOW,
              unit: "orders/s",
              concord: max.perSecond,
              concordLatencyMs: { p50: max.confirmLatencyMs.p50, p99: max.confirmLatencyMs.p99 },
              concordCpuUsPerOp: max.cpuUsPerOrder.services,
              note: `nats-server CPU per order ${max.cpuUsPerOrder.natsServer.toFixed(0)} µs${max.createFailed ? `; ${max.createFailed} calls failed` : ""}`,
            }),
          );
          await new Promise((r) => setTimeout(r, quick ? 500 : 1_000));
          const atRate = await load({ ...base, mode: "rate", warmupMs: quick ? 500 : 2_000, measureMs: quick ? 2_000 : Math.max(measureMs, 8_000) });
          perSetup.sagaAtRate = atRate;
          const lat = atRate.confirmLatencyMs;
          const unresolved = Object.values(atRate.unresolved).reduce((a, b) => a + b, 0);
          ctx.log(
            `  ${setup.label.padEnd(24)} saga at ${DURABILITY_SAGA_RATE}/s: ${atRate.started} orders, ${atRate.confirmed} confirmed, unresolved ${JSON.stringify(atRate.unresolved)}; call -> CONFIRMED p50 ${lat.p50.toFixed(1)} p99 ${lat.p99.toFixed(1)} p99.9 ${lat.p999.toFixed(1)} ms`,
          );
          rows.push(
            row({
              scenario: "6 Durability",
              case: `saga at ${DURABILITY_SAGA_RATE}/s offered, ${setup.label}`,
              view: "open loop",
              unit: "orders/s",
              concord: atRate.perSecond,
              concordLatencyMs: { p50: lat.p50, p99: lat.p99, p999: lat.p999 },
              concordCpuUsPerOp: atRate.cpuUsPerOrder.services,
              note: `${unresolved} of ${atRate.started} unresolved; nats-server CPU per order ${atRate.cpuUsPerOrder.natsServer.toFixed(0)} µs`,
            }),
          );
        } finally {
          await shop.stop();
        }
        await resetStreams(nats.url);
      } finally {
        if (own) await nats.stop();
      }
    }
    const profiles: Record<string, unknown> = {};
    for (const setup of setups) {
      for (const svc of ["products", "orders"]) {
        const name = `durability-${setup.key}-${svc}`;
        const s = reportProfile(ctx.profileDir, name, ctx.log, `${name} (whole scenario)`);
        if (s) profiles[name] = s;
      }
    }
    details.profiles = profiles;
    return { rows, details };
  },
};
