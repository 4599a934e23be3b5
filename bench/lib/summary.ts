import type { Row } from "./report.js";

/** Lowest, middle and highest of one figure over the runs (the middle of an even count is the mean of the two). */
export interface Spread {
  readonly min: number;
  readonly median: number;
  readonly max: number;
}

/** One row of the table over every run that measured it. */
export interface SummaryRow {
  readonly scenario: string;
  readonly case: string;
  readonly view: string;
  readonly inFlight: number | null;
  readonly unit: string;
  readonly runs: number;
  readonly concord: Spread | null;
  readonly ratio: Spread | null;
  readonly concordP99Ms: Spread | null;
  readonly concordCpuUsPerOp: Spread | null;
  readonly target: string | null;
  /** Runs that met the target. */
  readonly passed: number | null;
  /**
   * Whether the median meets the target: with a figure on one side of a
   * threshold, that is when more than half of the runs met it (an even
   * number of runs needs more than half too).
   */
  readonly pass: boolean | null;
}

export function spread(values: readonly (number | null | undefined)[]): Spread | null {
  const xs = values.filter((v): v is number => v != null && Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return null;
  const mid = xs.length >> 1;
  return { min: xs[0], median: xs.length % 2 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2, max: xs[xs.length - 1] };
}

/** Groups the rows of several runs by what they measured, in the order they first appear. */
export function summarize(runs: readonly (readonly Row[])[]): SummaryRow[] {
  const groups = new Map<string, Row[]>();
  for (const rows of runs) {
    for (const r of rows) {
      const key = [r.scenario, r.case, r.view, r.inFlight].join("\u0000");
      let group = groups.get(key);
      if (!group) groups.set(key, (group = []));
      group.push(r);
    }
  }
  return [...groups.values()].map((rows) => {
    const judged = rows.filter((r) => r.pass !== null);
    const passed = judged.filter((r) => r.pass).length;
    return {
      scenario: rows[0].scenario,
      case: rows[0].case,
      view: rows[0].view,
      inFlight: rows[0].inFlight,
      unit: rows[0].unit,
      runs: rows.length,
      concord: spread(rows.map((r) => r.concord)),
      ratio: spread(rows.map((r) => r.ratio)),
      concordP99Ms: spread(rows.map((r) => r.concordLatencyMs?.p99)),
      concordCpuUsPerOp: spread(rows.map((r) => r.concordCpuUsPerOp)),
      target: rows.find((r) => r.target)?.target ?? null,
      passed: judged.length ? passed : null,
      pass: judged.length ? passed * 2 > judged.length : null,
    };
  });
}

const fmt = (v: number, digits?: number) => (digits !== undefined ? v.toFixed(digits) : Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1));
const show = (s: Spread | null, digits?: number) => (s ? `${fmt(s.min, digits)} / ${fmt(s.median, digits)} / ${fmt(s.max, digits)}` : "-");

/** The summary as an aligned text table: min / median / max of each figure. */
export function formatSummary(rows: readonly SummaryRow[]): string {
  const header = ["Scenario", "Case", "View", "In flight", "Unit", "Runs", "Concord min/median/max", "Ratio min/median/max", "p99 ms min/median/max", "CPU µs/op min/median/max", "Target", "Median"];
  const body = rows.map((r) => [
    r.scenario,
    r.case,
    r.view,
    r.inFlight == null ? "-" : String(r.inFlight),
    r.unit,
    String(r.runs),
    show(r.concord),
    show(r.ratio, 2),
    show(r.concordP99Ms),
    show(r.concordCpuUsPerOp),
    r.target ?? "",
    r.pass == null ? "" : `${r.pass ? "PASS" : "FAIL"} (${r.passed} of ${r.runs} runs)`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}
