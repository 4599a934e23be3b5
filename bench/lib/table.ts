import type { Latency, Row } from "./report.js";

const num = (v: number | null, unit: string): string => {
  if (v == null || Number.isNaN(v)) return "-";
  if (unit === "MiB") return v.toFixed(1);
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
};
const ms = (v: number | undefined) => (v == null || Number.isNaN(v) ? "-" : v < 10 ? v.toFixed(2) : v.toFixed(1));
const us = (v: number | null) => (v == null || !Number.isFinite(v) ? "-" : v.toFixed(0));
const lat = (l: Latency | null) => (l ? [ms(l.p50), ms(l.p99), ...(l.p999 != null ? [ms(l.p999)] : [])].join(" / ") : "-");

/** The results as one aligned text table. */
export function formatTable(rows: readonly Row[]): string {
  const header = ["Scenario", "Case", "View", "In flight", "Unit", "Concord", "Baseline", "Ratio", "Concord p50/p99(/p99.9) ms", "Baseline p50/p99 ms", "CPU µs/op C / B", "Target", "Result"];
  const body = rows.map((r) => [
    r.scenario,
    r.case,
    r.view,
    r.inFlight == null ? "-" : String(r.inFlight),
    r.unit,
    num(r.concord, r.unit),
    num(r.baseline, r.unit),
    r.ratio == null ? "-" : r.ratio.toFixed(2),
    lat(r.concordLatencyMs),
    lat(r.baselineLatencyMs),
    r.concordCpuUsPerOp == null && r.baselineCpuUsPerOp == null ? "-" : `${us(r.concordCpuUsPerOp)} / ${us(r.baselineCpuUsPerOp)}`,
    r.target ?? "",
    (r.pass == null ? "" : r.pass ? "PASS" : "FAIL") + (r.note ? `${r.pass == null ? "" : " "}(${r.note})` : ""),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const numeric = new Set([3, 5, 6, 7]);
  const line = (cells: string[]) => cells.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}
