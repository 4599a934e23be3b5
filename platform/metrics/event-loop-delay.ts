import type { Gauge, Registry } from "prom-client";

/**
 * prom-client's gauges read from Node's event loop delay histogram
 * (`perf_hooks.monitorEventLoopDelay`). Not `nodejs_eventloop_lag_seconds`,
 * a setImmediate's wait measured at each scrape, nor the standard
 * deviation, which a shift leaves as it is.
 */
const histogramGauges = [
  "nodejs_eventloop_lag_min_seconds",
  "nodejs_eventloop_lag_max_seconds",
  "nodejs_eventloop_lag_mean_seconds",
  "nodejs_eventloop_lag_p50_seconds",
  "nodejs_eventloop_lag_p90_seconds",
  "nodejs_eventloop_lag_p99_seconds",
] as const;

/**
 * Makes `registry`'s `nodejs_eventloop_lag_{min,max,mean,p50,p90,p99}_seconds`
 * the event loop's delay, not the time from one sample to the next: Node's
 * histogram records the whole interval between its timer's firings, the
 * `sampleMs` it was asked to wait included, so an idle service read 0.1 s
 * (0.099 to 0.101) at every percentile with samples every 100 ms, where its
 * loop was late by a millisecond or less. Each value prom-client sets is
 * lowered by `sampleMs`, never below 0. Call it once, after
 * `collectDefaultMetrics` registered them; throws when one of them is not
 * there (prom-client renamed it), rather than leave it reading high.
 */
export function netEventLoopDelay(registry: Registry, sampleMs: number): void {
  const sampleSeconds = sampleMs / 1_000;
  const net = (value: number) => Math.max(0, value - sampleSeconds);
  for (const name of histogramGauges) {
    const gauge = registry.getSingleMetric(name) as Gauge | undefined;
    if (!gauge) throw new Error(`netEventLoopDelay: ${name} is not registered; collectDefaultMetrics first (or prom-client renamed it)`);
    const set = gauge.set.bind(gauge);
    // prom-client sets these at each scrape, with labels when the default metrics were given some.
    gauge.set = ((labelsOrValue: number | Record<string, string | number>, value?: number) =>
      typeof labelsOrValue === "number" ? set(net(labelsOrValue)) : set(labelsOrValue, net(value!))) as Gauge["set"];
  }
}
