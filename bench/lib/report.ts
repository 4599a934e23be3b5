import type { RunningNats } from "./nats-server.js";

/** Latency percentiles of one side of a row, ms. */
export interface Latency {
  readonly p50: number;
  readonly p99: number;
  readonly p999?: number;
}

/** One line of the table, and of the JSON. Throughputs count only completed work. */
export interface Row {
  readonly scenario: string;
  /** What was measured, e.g. "GetProduct, products LOG_LEVEL=info". */
  readonly case: string;
  /** The load generator or view: "ghz", "node", "nats.js", ... */
  readonly view: string;
  /** Calls, publishes or messages in flight. */
  readonly inFlight: number | null;
  readonly unit: string;
  /** Concord's figure in `unit`. */
  readonly concord: number | null;
  /** The bare baseline's figure in `unit`, measured in the same run. */
  readonly baseline: number | null;
  /** concord / baseline; baseline / concord in a CPU row (`cpuRatioRow`), so higher is better on both. */
  readonly ratio: number | null;
  readonly concordLatencyMs: Latency | null;
  readonly baselineLatencyMs: Latency | null;
  /** CPU time the process(es) under test spent per counted operation, µs (from /proc; robust to a busy machine). */
  readonly concordCpuUsPerOp: number | null;
  readonly baselineCpuUsPerOp: number | null;
  /** The target this row is judged against, when it is one. */
  readonly target: string | null;
  readonly pass: boolean | null;
  readonly note?: string;
}

export const row = (r: Partial<Row> & Pick<Row, "scenario" | "case" | "unit">): Row => ({
  view: "",
  inFlight: null,
  concord: null,
  baseline: null,
  ratio: r.concord != null && r.baseline != null && r.baseline > 0 ? r.concord / r.baseline : null,
  concordLatencyMs: null,
  baselineLatencyMs: null,
  concordCpuUsPerOp: null,
  baselineCpuUsPerOp: null,
  target: null,
  pass: null,
  ...r,
});

/**
 * The CPU side of a ratio row: what Concord's process(es) spent per
 * operation against the baseline's, as baseline / Concord (1: as cheap as
 * bare; higher is better, like the throughput ratio), held to `atLeast`.
 * Where the load generator shares the cores with the server, this is the
 * steadier of the two figures. `valid` false (the run had errors) fails it.
 */
export function cpuRatioRow(of: Row, atLeast: number, valid = true): Row {
  const concord = of.concordCpuUsPerOp;
  const baseline = of.baselineCpuUsPerOp;
  const ratio = concord && baseline ? baseline / concord : null;
  return row({
    scenario: of.scenario,
    case: `${of.case}: CPU per operation`,
    view: of.view,
    inFlight: of.inFlight,
    unit: "µs CPU/op",
    concord,
    baseline,
    ratio,
    concordCpuUsPerOp: concord,
    baselineCpuUsPerOp: baseline,
    target: `baseline / Concord CPU >= ${atLeast}`,
    pass: valid && ratio !== null && ratio >= atLeast,
  });
}

export interface Options {
  readonly quick: boolean;
  readonly only: readonly string[];
  readonly warmupMs: number;
  readonly measureMs: number;
  /** Alternating rounds of each judged gRPC measurement. */
  readonly rounds: number;
  /** Full runs of the chosen scenarios; targets are judged on the median. */
  readonly runs: number;
  readonly concurrencies: readonly number[];
  readonly logLevels: readonly string[];
  readonly profile: boolean;
  readonly ghz: boolean;
  /** Publishes in flight, for both the relay-side comparison and the raw publisher. */
  readonly window: number;
  readonly sagaRate: number;
  readonly outDir: string;
}

/** What every scenario gets from the runner. */
export interface BenchContext {
  readonly options: Options;
  /** Temporary directory for databases, logs and the JetStream store; removed at the end. */
  readonly tmp: string;
  /** Where CPU profiles go when --profile is set. */
  readonly profileDir: string | undefined;
  /** nats-server of this run, started on first use, as `npm start` runs it (one Go scheduler thread). */
  nats(): Promise<RunningNats>;
  /**
   * The event scenarios' nats-server (publish, consume), started on first
   * use, with Go's own number of threads (one a core). They compare clients,
   * not servers: on one thread the server itself capped the raw consumer,
   * which acks each message on its own, at 32,800 to 36,800 events/s against
   * 45,500 to 48,400, while Concord's consumer, whose acks go out together,
   * went no slower.
   */
  eventsNats(): Promise<RunningNats>;
  /** ghz binary, when available. */
  readonly ghz: string | undefined;
  log(line: string): void;
}

export interface ScenarioResult {
  readonly rows: Row[];
  /** Everything measured, for the JSON file. */
  readonly details: Record<string, unknown>;
}

export interface Scenario {
  readonly name: string;
  readonly summary: string;
  run(ctx: BenchContext): Promise<ScenarioResult>;
}
