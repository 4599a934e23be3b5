/**
 * Scenario 2: events/s from commit to JetStream ack through the outbox and
 * its relay, against raw nats.js publishing with the same window, the same
 * stream (SHOP_ORDERS as provisioned from the contracts), the same subjects,
 * payload size and headers. Each run is a process of its own; the stream is
 * purged before each; raw and outbox alternate over the rounds.
 */
import { connect } from "nats";
import { ensureStreams } from "../../platform/events/index.js";
import { profileDirOf, reportProfile } from "../lib/cpuprofile.js";
import { streamSpec } from "../lib/events.js";
import { runWorker } from "../lib/proc.js";
import { resetStreams } from "../lib/shop-processes.js";
import { cpuRatioRow, row, type BenchContext, type Row, type Scenario, type ScenarioResult } from "../lib/report.js";
import type { PublishConfig, PublishResult } from "../workers/events-publish.js";

/** Events/s, outbox / raw. */
export const PUBLISH_TARGET_RATIO = 0.8;
/** CPU per event, raw / outbox. */
export const PUBLISH_CPU_TARGET_RATIO = 0.8;

/** Empties the stream (creating it from its spec when missing). */
export async function purgeStream(natsUrl: string): Promise<void> {
  const nc = await connect({ servers: natsUrl.split(","), name: "bench-runner" });
  try {
    const jsm = await nc.jetstreamManager();
    await ensureStreams(jsm, [streamSpec]);
    await jsm.streams.purge(streamSpec.name);
  } finally {
    await nc.close();
  }
}

/** Several runs of one side as one: acked events over the summed windows. */
function combine(runs: PublishResult[]): PublishResult & { rounds: number[] } {
  const acked = runs.reduce((n, r) => n + r.acked, 0);
  const elapsedMs = runs.reduce((n, r) => n + r.elapsedMs, 0);
  return {
    ...runs[0],
    acked,
    elapsedMs,
    duplicates: runs.reduce((n, r) => n + r.duplicates, 0),
    failed: runs.reduce((n, r) => n + r.failed, 0),
    perSecond: (acked * 1000) / elapsedMs,
    cpuMs: runs.reduce((n, r) => n + r.cpuMs, 0),
    rounds: runs.map((r) => Math.round(r.perSecond)),
  };
}

/** Transactions at once in the info row on group commit: a service serving that many calls that write. */
const COMMITS_AT_ONCE = 16;

// "raw" connects as Concord's event bus does (noAsyncTraces: true); "raw-default" with nats.js defaults, for reference.
type Side = "raw" | "outbox" | "raw-default";

/** What a publishing run measures beyond scenario 2's defaults. */
export interface PublishRun {
  readonly scenario: string;
  /** Added to the case, e.g. "Postgres". */
  readonly label?: string;
  /** A fresh database for each outbox run (postgres:// URL); a SQLite file by default. */
  readonly outboxDatabase?: () => Promise<string>;
  /** Transactions committing at once on the outbox side (default 1). */
  readonly producers?: number;
  /** Also measure raw publishing with nats.js defaults, for reference. */
  readonly withDefaults?: boolean;
  /** Whether the rows are held to the targets (the SQLite outbox's); other stores are measured against the same baselines, not judged. Default true. */
  readonly judged?: boolean;
}

export const eventPublish: Scenario = {
  name: "publish",
  summary: "events/s commit -> outbox -> relay -> JetStream ack vs raw nats.js js.publish, same window and stream; the commits alone",
  run: (ctx) => measurePublish(ctx, { scenario: "2 Event publishing", withDefaults: !ctx.options.quick }),
};

/** Outbox publishing against raw js.publish, alternating by round, each run a process of its own. */
export async function measurePublish(ctx: BenchContext, run: PublishRun): Promise<ScenarioResult> {
  const nats = await ctx.eventsNats();
  const { warmupMs, measureMs, window, rounds } = ctx.options;
  const judged = run.judged ?? true;
  const runs: Record<Side, PublishResult[]> = { raw: [], outbox: [], "raw-default": [] };
  const profiles: Record<string, unknown> = {};
  const plan: Side[] = [];
  for (let round = 0; round < rounds; round++) plan.push(...(round % 2 === 0 ? (["raw", "outbox"] as const) : (["outbox", "raw"] as const)));
  if (run.withDefaults) plan.push("raw-default");
  for (const [i, side] of plan.entries()) {
    await purgeStream(nats.url);
    const mode = side === "outbox" ? "outbox" : "raw";
    const outboxSide = side === "outbox" && run.outboxDatabase ? { databaseUrl: await run.outboxDatabase(), producers: run.producers } : {};
    const config: PublishConfig = { mode, natsUrl: nats.url, window, warmupMs, measureMs, noAsyncTraces: side !== "raw-default", ...outboxSide };
    const name = `publish${run.label ? `-${run.label.toLowerCase()}` : ""}-${side}-${i + 1}`;
    const r = await runWorker<PublishResult>("bench/workers/events-publish.ts", config, { profileDir: profileDirOf(ctx.profileDir, name) });
    const profile = reportProfile(ctx.profileDir, name, ctx.log);
    if (profile) profiles[name] = profile;
    runs[side].push(r);
    ctx.log(
      `  ${side.padEnd(18)} ${r.perSecond.toFixed(0).padStart(7)} events/s acked, ${((r.cpuMs * 1000) / r.acked).toFixed(0)} µs CPU each (${r.acked} in ${(r.elapsedMs / 1000).toFixed(1)} s${r.duplicates ? `, ${r.duplicates} duplicates not counted` : ""}${r.failed ? `, ${r.failed} failed` : ""}${r.committed !== undefined ? `; backlog min ${r.backlogMin}, mean ${r.backlogMean}` : ""})`,
    );
  }
  // Leave no backlog or durables behind for the scenarios that start services.
  await resetStreams(nats.url);
  const raw = combine(runs.raw);
  const outbox = combine(runs.outbox);
  const ratio = outbox.perSecond / raw.perSecond;
  const rows: Row[] = [
    row({
      scenario: run.scenario,
      case: `commit -> outbox -> relay -> ack vs raw js.publish (same connection options)${run.label ? `, ${run.label}${run.producers ? `, ${run.producers} transactions at once` : ""}` : ""}`,
      view: "nats.js",
      inFlight: window,
      unit: "events/s",
      concord: outbox.perSecond,
      baseline: raw.perSecond,
      concordCpuUsPerOp: (outbox.cpuMs * 1000) / outbox.acked,
      baselineCpuUsPerOp: (raw.cpuMs * 1000) / raw.acked,
      ...(judged && { target: `ratio >= ${PUBLISH_TARGET_RATIO}`, pass: ratio >= PUBLISH_TARGET_RATIO }),
      note: raw.failed || outbox.failed ? `failed publishes: raw ${raw.failed}, outbox ${outbox.failed}` : rounds > 1 ? `rounds ${outbox.rounds.join("/")} vs ${raw.rounds.join("/")}` : undefined,
    }),
  ];
  let commitsAlone: PublishResult | undefined;
  let commitsAtOnce: PublishResult | undefined;
  if (judged) {
    rows.push(cpuRatioRow(rows[0], PUBLISH_CPU_TARGET_RATIO));
    // What the raw side never pays: the producer's own commits, measured alone in the same run.
    commitsAlone = await runWorker<PublishResult>("bench/workers/events-publish.ts", { mode: "commit", natsUrl: nats.url, window, warmupMs, measureMs } satisfies PublishConfig);
    const commitUs = (commitsAlone.cpuMs * 1000) / commitsAlone.acked;
    const rawUs = (raw.cpuMs * 1000) / raw.acked;
    const outboxUs = (outbox.cpuMs * 1000) / outbox.acked;
    ctx.log(`  commits alone ${commitsAlone.perSecond.toFixed(0).padStart(7)} transactions/s, ${commitUs.toFixed(0)} µs CPU each; the relay's share of the outbox side: ${(outboxUs - commitUs).toFixed(0)} µs`);
    rows.push(
      row({
        scenario: run.scenario,
        case: "of the outbox side, its transactions alone, one per event, no relay (info): ratio raw / them",
        view: "SQLite",
        unit: "µs CPU/op",
        concord: commitUs,
        baseline: rawUs,
        ratio: rawUs / commitUs,
        concordCpuUsPerOp: commitUs,
        baselineCpuUsPerOp: rawUs,
        note: `${commitsAlone.perSecond.toFixed(0)} transactions/s; the relay's share of the outbox side: ${(outboxUs - commitUs).toFixed(0)} µs per event`,
      }),
    );
    // A service under concurrent calls: transactions that queue for SQLite's one writer commit together.
    commitsAtOnce = await runWorker<PublishResult>("bench/workers/events-publish.ts", { mode: "commit", natsUrl: nats.url, window, warmupMs, measureMs, producers: COMMITS_AT_ONCE } satisfies PublishConfig);
    const atOnceUs = (commitsAtOnce.cpuMs * 1000) / commitsAtOnce.acked;
    ctx.log(`  commits alone, ${COMMITS_AT_ONCE} at once ${commitsAtOnce.perSecond.toFixed(0).padStart(7)} transactions/s, ${atOnceUs.toFixed(0)} µs CPU each`);
    rows.push(
      row({
        scenario: run.scenario,
        case: `the same transactions, ${COMMITS_AT_ONCE} at once (group commit; info): ratio raw / them`,
        view: "SQLite",
        inFlight: COMMITS_AT_ONCE,
        unit: "µs CPU/op",
        concord: atOnceUs,
        baseline: rawUs,
        ratio: rawUs / atOnceUs,
        concordCpuUsPerOp: atOnceUs,
        baselineCpuUsPerOp: rawUs,
        note: `${commitsAtOnce.perSecond.toFixed(0)} transactions/s`,
      }),
    );
  }
  const fast = runs["raw-default"].length ? combine(runs["raw-default"]) : undefined;
  if (fast) {
    rows.push(
      row({
        scenario: run.scenario,
        case: "same, baseline with nats.js default options (info)",
        view: "nats.js",
        inFlight: window,
        unit: "events/s",
        concord: outbox.perSecond,
        baseline: fast.perSecond,
        concordCpuUsPerOp: (outbox.cpuMs * 1000) / outbox.acked,
        baselineCpuUsPerOp: (fast.cpuMs * 1000) / fast.acked,
      }),
    );
  }
  return {
    rows,
    details: {
      stream: streamSpec,
      window,
      relayWindow: "sliding: the relay keeps up to `window` outbox events awaiting their PubAck",
      rawWindow: "sliding: `window` publishes always in flight",
      raw,
      outbox,
      rawDefaultOptions: fast,
      commitsAlone,
      commitsAtOnce,
      profiles,
    },
  };
}
