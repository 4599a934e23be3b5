/**
 * Scenario 5: resident memory of each service process, from /proc: idle
 * (started, catalogue seeded, settled) and under load (the peak while the
 * saga runs flat out for 15 s, a closed loop of 64 orders in flight: VmHWM
 * set back as the load starts, and VmRSS sampled every 100 ms), plus VmHWM
 * since start (module loading included);
 * then the order service's peak while 24 clients send 4 MB CreateOrders
 * (over every limit) as fast as it answers them.
 */
import { freePort, type MemoryReading, MemorySampler, nodeArgs, readMemory, runWorker, sleep, startProcess } from "../lib/proc.js";
import { serviceNodeFlags } from "../../tools/service-launch.js";
import { row, type BenchContext, type Row, type Scenario, type ScenarioResult } from "../lib/report.js";
import { startShop } from "../lib/shop-processes.js";
import type { OrderLoadConfig, OrderLoadResult } from "../workers/order-load.js";
import type { RequestFloodConfig, RequestFloodResult } from "../workers/request-flood.js";
import { CreateOrderRequest, OrderServiceService } from "../../gen/ts/shop/orders/v1/order_service_pb.js";

/** Each service under the saga's load (issue 14's target). */
export const RSS_TARGET_MIB = 100;
/** The order service under a flood of oversized requests. */
export const FLOOD_RSS_TARGET_MIB = 150;

export const memory: Scenario = {
  name: "memory",
  summary: `RSS of each service process idle and under saga load (VmRSS/VmHWM), target < ${RSS_TARGET_MIB} MiB (under a flood of oversized requests < ${FLOOD_RSS_TARGET_MIB})`,
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const { options } = ctx;
    const nats = await ctx.nats();
    const shop = await startShop(ctx, "memory");
    const services = [
      { name: "products", pid: shop.products.process.pid },
      { name: "orders", pid: shop.orders.process.pid },
    ];
    // Reference points: what Node with tsx and a bare grpc-js server take before any Concord code, under the services' V8 flags.
    const bare = startProcess({
      name: "memory-bare-grpc",
      command: process.execPath,
      args: nodeArgs("bench/workers/bare-grpc-server.ts", serviceNodeFlags),
      env: { ...process.env, BARE_LISTEN: `127.0.0.1:${await freePort()}`, BARE_METHOD: "/bench.Bare/Call", BARE_RESPONSE_HEX: "00" },
      logDir: ctx.tmp,
    });
    let load: OrderLoadResult;
    let flood: RequestFloodResult;
    let floodPeak = Number.NaN;
    let floodBytes = 0;
    let peaks = new Map<number, number>();
    let hwm: Record<string, number> = {};
    const idle: Record<string, number> = {};
    const idleDetail: Record<string, MemoryReading | undefined> = {};
    let bareIdle: MemoryReading | undefined;
    const sampler = new MemorySampler(services.map((s) => s.pid));
    try {
      await sleep(options.quick ? 1_000 : 2_000);
      for (const s of services) {
        const m = readMemory(s.pid);
        idle[s.name] = m?.rssMiB ?? Number.NaN;
        idleDetail[s.name] = m;
      }
      bareIdle = readMemory(bare.pid);
      await bare.stop();
      sampler.start();
      const config: OrderLoadConfig = {
        mode: "saga",
        ordersAddress: shop.orders.address,
        natsUrl: nats.url,
        productIds: shop.productIds,
        linesPerOrder: 2,
        concurrency: 64,
        rate: 0,
        warmupMs: options.warmupMs,
        // Long enough for what grows with the data written (a page cache) to show.
        measureMs: Math.max(options.measureMs, options.quick ? 1_500 : 15_000),
        drainMs: options.quick ? 1_000 : 3_000,
      };
      load = await runWorker<OrderLoadResult>("bench/workers/order-load.ts", config);
      peaks = sampler.stop();
      const floodSampler = new MemorySampler([shop.orders.process.pid]);
      floodSampler.start();
      const huge = CreateOrderRequest.encode({
        customerId: "flood",
        lines: Array.from({ length: 100_000 }, () => ({ productId: shop.productIds[0], quantity: 1 })),
        shippingAddress: { recipient: "A", line1: "B", line2: "", city: "C", postalCode: "D", countryCode: "GB" },
      }).finish();
      floodBytes = huge.byteLength;
      const floodConfig: RequestFloodConfig = {
        address: shop.orders.address,
        method: OrderServiceService.createOrder.path,
        requestHex: Buffer.from(huge).toString("hex"),
        concurrency: 24,
        durationMs: options.quick ? 1_500 : 5_000,
      };
      try {
        flood = await runWorker<RequestFloodResult>("bench/workers/request-flood.ts", floodConfig);
      } finally {
        floodPeak = floodSampler.stop().get(shop.orders.process.pid) ?? Number.NaN;
      }
    } finally {
      if (peaks.size === 0) peaks = sampler.stop();
      hwm = Object.fromEntries(services.map((s) => [s.name, readMemory(s.pid)?.hwmMiB ?? Number.NaN]));
      await shop.stop();
      await bare.stop();
    }
    const work = `${load.confirmed} orders confirmed, ${load.created} created in the window`;
    ctx.log(`  under load: ${work}`);
    const rows: Row[] = [];
    ctx.log(`  reference: bare grpc-js server under node --import tsx, idle ${bareIdle?.rssMiB.toFixed(1)} MiB (anon ${bareIdle?.anonMiB.toFixed(1)}, file ${bareIdle?.fileMiB.toFixed(1)})`);
    const details: Record<string, unknown> = { bareGrpcIdle: bareIdle, load: { confirmedPerSecond: load.perSecond, confirmed: load.confirmed, created: load.created, createFailed: load.createFailed } };
    for (const s of services) {
      const peak = peaks.get(s.pid) ?? Number.NaN;
      const d = idleDetail[s.name];
      ctx.log(`  ${s.name.padEnd(9)} idle ${idle[s.name].toFixed(1)} MiB (anon ${d?.anonMiB.toFixed(1)}, file ${d?.fileMiB.toFixed(1)}, ${d?.threads} threads), under load peak ${peak.toFixed(1)} MiB, VmHWM ${hwm[s.name].toFixed(1)} MiB`);
      details[s.name] = { idle: d, idleRssMiB: idle[s.name], loadPeakRssMiB: peak, vmHwmMiB: hwm[s.name] };
      rows.push(row({ scenario: "5 Memory", case: `${s.name} idle (VmRSS; baseline: bare grpc-js)`, view: "/proc", unit: "MiB", concord: idle[s.name], baseline: bareIdle?.rssMiB ?? null }));
      rows.push(
        row({
          scenario: "5 Memory",
          // The case names what was measured, the same in every run (the summary groups runs by it); figures go in the note.
          case: `${s.name} under saga load (peak VmRSS)`,
          view: "/proc",
          inFlight: 64,
          unit: "MiB",
          concord: peak,
          target: `< ${RSS_TARGET_MIB} MiB`,
          pass: peak < RSS_TARGET_MIB,
          note: `VmHWM since start ${hwm[s.name].toFixed(1)} MiB${load.confirmed === 0 ? "; no order was confirmed: the load was CreateOrder only" : ""}`,
        }),
      );
    }
    const floodCase = `orders under a flood: 24 clients sending ${(floodBytes / 1e6).toFixed(1)} MB CreateOrders (peak VmRSS)`;
    ctx.log(`  flood: ${flood!.sent} oversized CreateOrders, answered ${JSON.stringify(flood!.codes)} (8 = RESOURCE_EXHAUSTED); orders peak ${floodPeak.toFixed(1)} MiB`);
    details.flood = { ...flood!, peakRssMiB: floodPeak };
    rows.push(row({ scenario: "5 Memory", case: floodCase, view: "/proc", inFlight: 24, unit: "MiB", concord: floodPeak, target: `< ${FLOOD_RSS_TARGET_MIB} MiB`, pass: floodPeak < FLOOD_RSS_TARGET_MIB }));
    return { rows, details };
  },
};
