/**
 * `npm run bench`: Concord against bare baselines, on this machine, in one run.
 * Prints one table and writes the same figures to bench/results/<time>.json
 * and bench/results/latest.json. Not a test: it reports, it does not assert
 * (the exit code is 0 whether targets pass or fail, 1 when the bench broke).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { repoRoot } from "../tools/repo-root.js";
import { staleBuild } from "./lib/compiled.js";
import { BenchFlagError, benchUsage, parseBenchFlags } from "./lib/flags.js";
import { findGhz, ghzVersion, givenGhzProblem, installGhz } from "./lib/ghz.js";
import { machineFacts } from "./lib/machine.js";
import { findNatsServer, natsServerVersion, type RunningNats, startNatsServer } from "./lib/nats-server.js";
import { type CpuShare, startCpuMeter } from "./lib/noise.js";
import { killStarted, sleep, stopStarted } from "./lib/proc.js";
import type { BenchContext, Options, Row, Scenario } from "./lib/report.js";
import { formatSummary, summarize } from "./lib/summary.js";
import { formatTable } from "./lib/table.js";
import { eventConsume } from "./scenarios/event-consume.js";
import { eventPublish } from "./scenarios/event-publish.js";
import { grpcUnary } from "./scenarios/grpc-unary.js";
import { memory } from "./scenarios/memory.js";
import { durability } from "./scenarios/durability.js";
import { overload } from "./scenarios/overload.js";
import { postgres } from "./scenarios/postgres.js";
import { saga } from "./scenarios/saga.js";
import { tracing } from "./scenarios/tracing.js";

const scenarios: Scenario[] = [grpcUnary, eventPublish, eventConsume, saga, memory, durability, postgres, overload, tracing];

/** The signal that interrupted the run: it then writes no figures and exits 128 + the signal's number. */
let interrupted: NodeJS.Signals | undefined;
let finished: Promise<unknown> = Promise.resolve();

/**
 * On SIGINT (Ctrl-C) or SIGTERM, stops every process the bench started
 * (bench/lib/proc.ts), gives the scenario under way up to 10 s to let go of
 * what it holds in-process (a local PostgreSQL server), removes `tmp` and
 * exits. Node's default would end this process alone and leave its
 * nats-server, services and workers running and `tmp` behind. A second
 * signal skips the waiting; the exit handlers kill whatever is left.
 */
function stopOnSignals(tmp: string): void {
  const leave = (signal: NodeJS.Signals) => {
    rmSync(tmp, { recursive: true, force: true });
    console.error(`bench: interrupted by ${signal}; stopped what it started, removed ${tmp}, wrote no figures`);
    process.exit(128 + os.constants.signals[signal]);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) {
      killStarted();
      leave(interrupted);
    }
    interrupted = signal;
    console.error(`bench: ${signal}: stopping the processes it started`);
    void Promise.race([stopStarted(5_000).then(() => finished), sleep(10_000)]).finally(() => leave(signal));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}

async function main(): Promise<number> {
  let options: Options | undefined;
  try {
    options = parseBenchFlags(process.argv.slice(2), scenarios.map((s) => s.name), join(repoRoot, "bench", "results"));
  } catch (err) {
    if (!(err instanceof BenchFlagError)) throw err;
    console.error(`bench: ${err.message}`);
    return 2;
  }
  if (!options) {
    console.log(benchUsage(scenarios));
    return 0;
  }
  // The services and the event workers run the compiled code in dist/, which `npx tsx bench/run.ts` does not build:
  // measured from a build older than the sources, the figures would be the old code's.
  const ghzProblem = options.ghz ? givenGhzProblem() : undefined;
  if (ghzProblem) {
    console.error(`bench: ${ghzProblem}`);
    return 2;
  }
  const stale = staleBuild();
  if (stale) {
    console.error(`bench: dist/ is older than the sources (${stale}); run \`npm run build\` first (\`npm run bench\` builds before it runs)`);
    return 2;
  }
  // Once interrupted, what the scenario under way says as it breaks off is noise.
  const log = (line: string) => void (interrupted || console.log(line));
  const stamp = new Date().toISOString().replace(/[:.]/g, "-").replace(/-\d{3}Z$/, "Z");
  const tmp = mkdtempSync(join(os.tmpdir(), "concord-bench-"));
  stopOnSignals(tmp);
  // The workers, which inherit it, make their temporary files there (lib/worker.ts): a run interrupted leaves none.
  process.env.CONCORD_BENCH_TMP = tmp;
  const profileDir = options.profile ? join(options.outDir, "profiles", stamp) : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });

  let ghz: string | undefined;
  let ghzNote = "not used (--no-ghz)";
  if (options.ghz) {
    ghz = findGhz();
    if (!ghz) {
      const installed = installGhz(log);
      ghz = installed.path;
      if (!ghz) log(`bench: ghz unavailable, using the Node load generator only: ${installed.reason}`);
      ghzNote = ghz ? ghzVersion(ghz) : `unavailable: ${installed.reason}`;
    } else ghzNote = ghzVersion(ghz);
  }
  if (options.quick && ghz) ghzNote += " (quick: ghz view only)";

  const natsBinary = findNatsServer();
  const machine = machineFacts(natsBinary ? natsServerVersion(natsBinary) : "not installed", ghzNote);
  log(`Concord bench ${stamp}${options.quick ? " (quick)" : ""}: ${machine.nproc} CPUs (${machine.cpuModel}), node ${machine.node}, ${machine.natsServer}, ghz ${machine.ghz}`);
  log(`windows: warm-up ${options.warmupMs / 1000} s, measured ${options.measureMs / 1000} s; load average ${machine.loadAverageAtStart.join(" ")}`);

  let nats: RunningNats | undefined;
  let natsStarting: Promise<RunningNats> | undefined;
  let eventsNats: RunningNats | undefined;
  let eventsNatsStarting: Promise<RunningNats> | undefined;
  const ctx: BenchContext = {
    options,
    tmp,
    profileDir,
    ghz,
    log,
    nats: () => (natsStarting ??= startNatsServer(tmp).then((n) => (nats = n))),
    eventsNats: () => (eventsNatsStarting ??= startNatsServer(tmp, { name: "nats-events", everyCore: true }).then((n) => (eventsNats = n))),
  };

  const runs: Array<{ rows: Row[]; details: Record<string, unknown>; cpu: Record<string, CpuShare> }> = [];
  const failures: Record<string, string> = {};
  const started = Date.now();
  try {
    for (let n = 1; n <= options.runs && !interrupted; n++) {
      if (options.runs > 1) log(`\n######## run ${n} of ${options.runs}`);
      const run = { rows: [] as Row[], details: {} as Record<string, unknown>, cpu: {} as Record<string, CpuShare> };
      runs.push(run);
      for (const scenario of scenarios) {
        if (interrupted) break;
        if (options.only.length > 0 && !options.only.includes(scenario.name)) continue;
        const t0 = Date.now();
        log(`\n== ${scenario.name}: ${scenario.summary}`);
        const meter = startCpuMeter(() => [nats, eventsNats].flatMap((server) => (server ? [server.process.pid] : [])));
        try {
          const result = await scenario.run(ctx);
          run.rows.push(...result.rows);
          run.details[scenario.name] = result.details;
        } catch (err) {
          failures[options.runs > 1 ? `${scenario.name} (run ${n})` : scenario.name] = (err as Error).stack ?? String(err);
          log(`bench: scenario ${scenario.name} failed: ${(err as Error).stack ?? err}`);
        }
        const share = meter();
        run.cpu[scenario.name] = share;
        log(`   (${((Date.now() - t0) / 1000).toFixed(0)} s; CPU: bench ${share.benchPct}%, other processes ${share.otherPct}%, steal ${share.stealPct}% of the machine)`);
      }
      log(`\n${formatTable(run.rows)}`);
    }
  } finally {
    await Promise.all([nats?.stop(), eventsNats?.stop()]);
    if (Object.keys(failures).length === 0 || interrupted) rmSync(tmp, { recursive: true, force: true });
    else log(`bench: logs of the failed run kept in ${tmp}`);
  }
  if (interrupted) return 128 + os.constants.signals[interrupted];

  const summary = summarize(runs.map((r) => r.rows));
  const table = options.runs > 1 ? formatSummary(summary) : formatTable(runs[0].rows);
  if (options.runs > 1) log(`\nOver ${options.runs} runs (min / median / max; a target is judged on the median):\n\n${table}\n`);
  else log("");
  const noisy = runs.flatMap((r, i) => Object.entries(r.cpu).filter(([, c]) => c.otherPct + c.stealPct >= 10).map(([name, c]) => `${(c.otherPct + c.stealPct).toFixed(0)}% of the machine during ${name}${options.runs > 1 ? ` (run ${i + 1})` : ""}`));
  if (noisy.length > 0) {
    log(`noise: other processes (and steal) took ${noisy.join(", ")}; ratios are measured side by side, but absolute figures are low and spread is wide`);
  }
  const judged = summary.filter((r) => r.pass !== null);
  log(`targets: ${judged.filter((r) => r.pass).length} of ${judged.length} met${options.runs > 1 ? " (medians)" : ""}; commit ${machine.commit}${machine.clean ? "" : " with uncommitted changes"}; run took ${((Date.now() - started) / 1000).toFixed(0)} s; load average at end ${os.loadavg().map((v) => v.toFixed(2)).join(" ")}`);

  const report = {
    timestamp: stamp,
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
    machine: { ...machine, loadAverageAtEnd: os.loadavg().map((v) => Math.round(v * 100) / 100) },
    options,
    durationSeconds: Math.round((Date.now() - started) / 1000),
    table,
    summary,
    runs,
    failures,
  };
  mkdirSync(options.outDir, { recursive: true });
  const json = JSON.stringify(report, null, 2) + "\n";
  const file = join(options.outDir, `${stamp}.json`);
  writeFileSync(file, json);
  writeFileSync(join(options.outDir, "latest.json"), json);
  log(`written: ${file} (and latest.json)`);
  return Object.keys(failures).length > 0 ? 1 : 0;
}

finished = main().then(
  // Interrupted, the signal handler exits once the processes are stopped.
  (code) => void (interrupted || process.exit(code)),
  (err) => {
    if (interrupted) return;
    console.error(`bench: ${err instanceof Error ? (err.stack ?? err.message) : err}`);
    process.exit(1);
  },
);
