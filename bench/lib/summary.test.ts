import { describe, expect, it } from "vitest";
import { cpuRatioRow, row } from "./report.js";
import { formatSummary, spread, summarize } from "./summary.js";

describe("the summary of several bench runs", () => {
  it("gives min, median and max, the median of an even count being the mean of the middle two", () => {
    expect(spread([3, 1, 2])).toEqual({ min: 1, median: 2, max: 3 });
    expect(spread([4, 1, 3, 2])).toEqual({ min: 1, median: 2.5, max: 4 });
    expect(spread([null, Number.NaN, undefined])).toBeNull();
  });

  it("judges a target on the median: met in two of three runs passes, in one of three fails", () => {
    const run = (ratio: number, p99: number) => [
      row({ scenario: "1 gRPC", case: "GetProduct", unit: "req/s", concord: 100 * ratio, baseline: 100, target: "ratio >= 0.85", pass: ratio >= 0.85 }),
      row({ scenario: "4 Saga", case: "at 200/s", unit: "orders/s", concord: 200, concordLatencyMs: { p50: 1, p99 }, target: "p99 < 15 ms", pass: p99 < 15 }),
      row({ scenario: "4 Saga", case: "capacity", unit: "orders/s", concord: 900 }),
    ];
    const summary = summarize([run(0.9, 20), run(0.8, 14), run(0.88, 16)]);
    expect(summary.map((s) => [s.case, s.passed, s.pass])).toEqual([
      ["GetProduct", 2, true],
      ["at 200/s", 1, false],
      ["capacity", null, null],
    ]);
    expect(summary[0].ratio).toEqual({ min: 0.8, median: 0.88, max: 0.9 });
    expect(summary[1].concordP99Ms).toEqual({ min: 14, median: 16, max: 20 });
    const table = formatSummary(summary);
    expect(table).toContain("0.80 / 0.88 / 0.90");
    expect(table).toContain("PASS (2 of 3 runs)");
    expect(table).toContain("FAIL (1 of 3 runs)");
  });

  it("holds the CPU side of a ratio row to its own target, as baseline / Concord, so higher is better on both", () => {
    const measured = row({ scenario: "1 gRPC", case: "GetProduct", view: "ghz", inFlight: 16, unit: "req/s", concord: 80, baseline: 100, concordCpuUsPerOp: 180, baselineCpuUsPerOp: 117 });
    const cpu = cpuRatioRow(measured, 0.85);
    expect(cpu).toMatchObject({ scenario: "1 gRPC", case: "GetProduct: CPU per operation", view: "ghz", inFlight: 16, concord: 180, baseline: 117, pass: false });
    expect(cpu.ratio).toBeCloseTo(0.65);
    expect(cpuRatioRow({ ...measured, concordCpuUsPerOp: 130 }, 0.85).pass).toBe(true);
    expect(cpuRatioRow({ ...measured, concordCpuUsPerOp: 130 }, 0.85, false).pass).toBe(false);
    expect(cpu.target).toBe("baseline / Concord CPU >= 0.85");
    expect(cpuRatioRow({ ...measured, concordCpuUsPerOp: null }, 0.85)).toMatchObject({ ratio: null, pass: false });
  });
});
