import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { counterFamily, histogramFamily } from "./index.js";

describe("counterFamily and histogramFamily", () => {
  it("render counts per label set and cumulative buckets in Prometheus' text format", async () => {
    const registry = new Registry();
    const calls = counterFamily(registry, { name: "calls_total", help: "calls", labelNames: ["method", "code"] });
    const latency = histogramFamily(registry, { name: "latency_seconds", help: "latency", labelNames: ["method"], buckets: [0.01, 0.1, 1] });
    calls({ method: "Get", code: "OK" }).inc();
    calls({ method: "Get", code: "OK" }).inc();
    calls({ method: "Get", code: "NOT_FOUND" }).inc();
    const get = latency({ method: "Get" });
    for (const v of [0.005, 0.05, 0.05, 0.5, 5]) get.observe(v);
    const text = await registry.metrics();
    expect(text).toContain("# TYPE calls_total counter");
    expect(text).toContain('calls_total{method="Get",code="OK"} 2');
    expect(text).toContain('calls_total{method="Get",code="NOT_FOUND"} 1');
    expect(text).toContain("# TYPE latency_seconds histogram");
    for (const [le, n] of [["0.01", 1], ["0.1", 3], ["1", 4], ["+Inf", 5]] as const) expect(text).toContain(`latency_seconds_bucket{method="Get",le="${le}"} ${n}`);
    expect(text).toContain('latency_seconds_count{method="Get"} 5');
    expect(text).toMatch(/latency_seconds_sum\{method="Get"\} 5\.60\d*/);
    expect(() => counterFamily(registry, { name: "calls_total", help: "again", labelNames: [] })).toThrow(/already been registered/);
  });
});
