import type { Registry } from "prom-client";

/** prom-client's gauges named like counters, each the sum of a family by `type` that it keeps beside them. */
const gaugeTotals = ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"] as const;

/**
 * Takes prom-client's `nodejs_active_{handles,requests,resources}_total` out
 * of `registry`: gauges whose names end in `_total`, which Prometheus keeps
 * for counters (`promtool check metrics` reports each, and `rate()` would
 * take one for a counter). Each is the sum over `type` of the gauge of the
 * same name without `_total`, which stays. Call it after
 * `collectDefaultMetrics`; one prom-client does not register (Node lacks
 * what it reads) is passed over.
 */
export function dropGaugeTotals(registry: Registry): void {
  for (const name of gaugeTotals) registry.removeSingleMetric(name);
}
