/**
 * Scenario 3: events/s through Concord's typed consumer (decode, checks,
 * inbox transaction, handler, ack) against a raw nats.js pull consumer that
 * acks each message. The stream is prefilled once with OrderPlaced events;
 * every run reads it from the start through a durable consumer of its own
 * with the same settings, in a process of its own; sides alternate by round.
 */
import { connect } from "nats";
import { deadLetterStreamSpec } from "../../platform/events/index.js";
import { profileDirOf, reportProfile } from "../lib/cpuprofile.js";
import { runWorker } from "../lib/proc.js";
import { resetStreams } from "../lib/shop-processes.js";
import { cpuRatioRow, row, type BenchContext, type Scenario, type ScenarioResult } from "../lib/report.js";
import type { ConsumeConfig, ConsumeResult } from "../workers/events-consume.js";
import type { PublishConfig, PublishResult } from "../workers/events-publish.js";
import { purgeStream } from "./event-publish.js";

/** Events/s, inbox / raw. */
export const CONSUME_TARGET_RATIO = 0.8;
/** CPU per event, raw / Concord. */
export const CONSUME_CPU_TARGET_RATIO = 0.8;
/** Messages pulled ahead: startConsumers' default, used for both sides. */
const PULL_BATCH = 64;
/**
 * Prefill sized for a raw consumer this fast over one warm-up plus window.
 * On a server with a thread a core the raw consumer read 240,000 events
 * (60,000 a second) before its window ended, about 80,000 a second in its
 * warm-up, in each of three full runs.
 */
const RAW_RATE_CEILING = 150_000;

function combine(runs: ConsumeResult[]): ConsumeResult & { rounds: number[] } {
  const acked = runs.reduce((n, r) => n + r.acked, 0);
  const elapsedMs = runs.reduce((n, r) => n + r.elapsedMs, 0);
  return { ...runs[0], acked, elapsedMs, perSecond: (acked * 1000) / elapsedMs, cpuMs: runs.reduce((n, r) => n + r.cpuMs, 0), pendingAtEnd: Math.min(...runs.map((r) => r.pendingAtEnd)), rounds: runs.map((r) => Math.round(r.perSecond)) };
}

/** What a consuming run measures beyond scenario 3's defaults. */
export interface ConsumeRun {
  readonly scenario: string;
  /** Added to the case, e.g. "Postgres". */
  readonly label?: string;
  /** A fresh database for each Concord run's inbox (postgres:// URL); a SQLite file by default. */
  readonly inboxDatabase?: () => Promise<string>;
  /** Whether the rows are held to the targets (the SQLite inbox's); other stores are measured against the same baselines, not judged. Default true. */
  readonly judged?: boolean;
}

export const eventConsume: Scenario = {
  name: "consume",
  summary: "events/s through startConsumers (inbox; events that arrive together share one transaction) vs a raw nats.js pull consumer acking each",
  run: (ctx) => measureConsume(ctx, { scenario: "3 Event consuming" }),
};

/** Messages in the dead letter stream (none when it does not exist yet). */
async function deadLetterCount(natsUrl: string): Promise<number> {
  const nc = await connect({ servers: natsUrl.split(","), name: "bench-runner" });
  try {
    const jsm = await nc.jetstreamManager();
    return await jsm.streams.info(deadLetterStreamSpec.name).then((info) => info.state.messages, () => 0);
  } finally {
    await nc.close();
  }
}

/** Concord's consumer with its inbox against a raw pull consumer, alternating by round, each run a process of its own. */
export async function measureConsume(ctx: BenchContext, run: ConsumeRun): Promise<ScenarioResult> {
  const nats = await ctx.eventsNats();
  const { warmupMs, measureMs, rounds } = ctx.options;
  const judged = run.judged ?? true;
  const count = Math.ceil(((warmupMs + measureMs) / 1000) * RAW_RATE_CEILING);
  await purgeStream(nats.url);
  const prefill: PublishConfig = { mode: "prefill", natsUrl: nats.url, window: 1, warmupMs: 0, measureMs: 0, count };
  const filled = await runWorker<PublishResult>("bench/workers/events-publish.ts", prefill);
  ctx.log(`  prefilled ${filled.acked} OrderPlaced events in ${(filled.elapsedMs / 1000).toFixed(1)} s`);
  if (filled.failed > 0) throw new Error(`prefill stored ${filled.acked} of ${count} events`);

  const runs: Record<"raw" | "concord", ConsumeResult[]> = { raw: [], concord: [] };
  const profiles: Record<string, unknown> = {};
  for (let round = 0; round < rounds; round++) {
    for (const mode of round % 2 === 0 ? (["raw", "concord"] as const) : (["concord", "raw"] as const)) {
      const name = `consume${run.label ? `-${run.label.toLowerCase()}` : ""}-${mode}-${round + 1}`;
      const inbox = mode === "concord" && run.inboxDatabase ? { databaseUrl: await run.inboxDatabase() } : {};
      const config: ConsumeConfig = { mode, natsUrl: nats.url, durable: `bench-${name}`, pullBatch: PULL_BATCH, warmupMs, measureMs, ...inbox };
      const filedBefore = await deadLetterCount(nats.url);
      const r = await runWorker<ConsumeResult>("bench/workers/events-consume.ts", config, { profileDir: profileDirOf(ctx.profileDir, name) });
      // A dead-lettered event is acked too, without being handled: a run that filed any measured something else.
      const filed = (await deadLetterCount(nats.url)) - filedBefore;
      if (filed > 0) throw new Error(`the ${mode} consumer dead-lettered ${filed} of the prefilled events (see CONCORD_DLQ's concord-dlq-reason): the run measured no handling`);
      const profile = reportProfile(ctx.profileDir, name, ctx.log);
      if (profile) profiles[name] = profile;
      runs[mode].push(r);
      ctx.log(
        `  ${mode.padEnd(7)} ${r.perSecond.toFixed(0).padStart(7)} events/s acked, ${((r.cpuMs * 1000) / r.acked).toFixed(0)} µs CPU each (${r.acked} in ${(r.elapsedMs / 1000).toFixed(1)} s, ${r.pendingAtEnd} left)${r.pendingAtEnd === 0 ? "  PREFILL RAN OUT: rate is a lower bound" : ""}`,
      );
    }
  }
  // Leave no backlog or durables behind for the scenarios that start services.
  await resetStreams(nats.url);
  const raw = combine(runs.raw);
  const concord = combine(runs.concord);
  const ratio = concord.perSecond / raw.perSecond;
  const ranOut = [raw, concord].filter((r) => r.pendingAtEnd === 0).map((r) => r.mode);
  const measured = row({
    scenario: run.scenario,
    case: `startConsumers + inbox tx vs raw pull + ack${run.label ? `, ${run.label}` : ""}`,
    view: "nats.js",
    inFlight: PULL_BATCH,
    unit: "events/s",
    concord: concord.perSecond,
    baseline: raw.perSecond,
    concordCpuUsPerOp: (concord.cpuMs * 1000) / concord.acked,
    baselineCpuUsPerOp: (raw.cpuMs * 1000) / raw.acked,
    ...(judged && { target: `ratio >= ${CONSUME_TARGET_RATIO}`, pass: ratio >= CONSUME_TARGET_RATIO }),
    note: ranOut.length ? `prefill ran out for ${ranOut.join(", ")}` : rounds > 1 ? `rounds ${concord.rounds.join("/")} vs ${raw.rounds.join("/")}` : undefined,
  });
  return {
    rows: judged ? [measured, cpuRatioRow(measured, CONSUME_CPU_TARGET_RATIO)] : [measured],
    details: { prefilled: filled, pullBatch: PULL_BATCH, handler: "counts the event; no other effect", raw, concord, profiles },
  };
}
