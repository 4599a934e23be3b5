/** Metrics for hot paths, rendered through a prom-client Registry at scrape time, and gauges read at each scrape. */
export { counterFamily, histogramFamily, type CounterChild, type HistogramChild } from "./label-families.js";
export { sampledGauges, type SampledGauge } from "./sampled-gauges.js";
export { databaseFreeSpaceMetrics } from "./database-free-space.js";
export { databaseWritesFailingMetrics } from "./database-writes-failing.js";
export { netEventLoopDelay } from "./event-loop-delay.js";
export { dropGaugeTotals } from "./gauge-totals.js";
