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
import { findGhz, ghzVersion, installGhz } from "./lib/ghz.js";
import { machineFacts } from "./lib/machine.js";
import { findNatsServer, natsServerVersion, type RunningNats, startNatsServer } from "./lib/nats-server.js";
import { type CpuShare, startCpuMeter } from "./lib/noise.js";
import type { BenchContext, Options, Row, Scenario } from "./lib/report.js";
import { formatTable } from "./lib/table.js";
import { eventConsume } from "./scenarios/event-consume.js";
import { eventPublish } from "./scenarios/event-publish.js";
import { grpcUnary } from "./scenarios/grpc-unary.js";
import { memory } from "./scenarios/memory.js";
import { saga } from "./scenarios/saga.js";

const scenarios: Scenario[] = [grpcUnary, eventPublish, eventConsume, saga, memory];

const help = `Usage: npm run bench -- [flags]

Runs Concord's benchmarks, each against a bare baseline measured in the same
run, prints one table and writes it as JSON to bench/results/<time>.json and
bench/results/latest.json. Every load generator runs in its own process;
services run as production runs them (compiled, from dist/; see tools/service-launch.ts)
against a nats-server -js of the bench's own (free port, temporary store).

Scenarios (default: all, in this order):
${scenarios.map((s) => `  ${s.name.padEnd(9)} ${s.summary}`).join("\n")}

Flags:
  --quick               rough run, under a minute: short windows, ghz view only,
                        LOG_LEVEL=info only
  --only <a,b>          run only these scenarios (names above)
  --warmup <seconds>    warm-up before each measured window (default 1.5; quick 0.5;
                        later rounds on a warm process: at most 0.3)
  --duration <seconds>  length of each measured window (default 2.5; quick 1.5)
  --rounds <n>          alternating rounds (bare, concord, concord, bare, ...) of each
                        judged gRPC measurement (default 2; quick 1)
  --concurrency <list>  gRPC calls in flight (default 1,16,64)
  --log-levels <list>   LOG_LEVELs of the product service in the gRPC scenario
                        (default info,warn; quick info). info is production's default.
  --window <n>          publishes in flight, relay and raw alike (default 256)
  --saga-rate <n>       offered load of the saga latency run, orders/s (default 200)
  --profile             run services with node --cpu-prof and print their hot spots
                        (profiles kept under bench/results/profiles/<time>/)
  --no-ghz              use only the Node load generator (ghz is otherwise
                        installed with \`go install\` into .tools/bin when missing)
  --out <dir>           results directory (default bench/results)
  --help                this text

Environment: NATS_SERVER (nats-server binary), GHZ (ghz binary).`;

function parseArgs(argv: string[]): Options | undefined {
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}; see --help`);
    const [name, inline] = a.slice(2).split("=", 2);
    const takesValue = ["only", "warmup", "duration", "concurrency", "log-levels", "window", "saga-rate", "out", "rounds"].includes(name);
    if (!takesValue && !["quick", "profile", "no-ghz", "help"].includes(name)) throw new Error(`unknown flag --${name}; see --help`);
    if (takesValue) {
      const value = inline ?? argv[++i];
      if (value === undefined) throw new Error(`--${name} needs a value`);
      flags.set(name, value);
    } else flags.set(name, true);
  }
  if (flags.has("help")) return undefined;
  const quick = flags.has("quick");
  const num = (name: string, fallback: number) => {
    const v = flags.get(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${String(v)}`);
    return n;
  };
  const list = (name: string, fallback: string) => String(flags.get(name) ?? fallback).split(",").map((s) => s.trim()).filter(Boolean);
  const only = list("only", "");
  for (const o of only) if (!scenarios.some((s) => s.name === o)) throw new Error(`--only: no scenario "${o}" (${scenarios.map((s) => s.name).join(", ")})`);
  const concurrencies = list("concurrency", "1,16,64").map(Number);
  if (concurrencies.some((c) => !Number.isInteger(c) || c < 1)) throw new Error("--concurrency takes positive integers, e.g. 1,16,64");
  const levels = list("log-levels", quick ? "info" : "info,warn");
  for (const l of levels) if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(l)) throw new Error(`--log-levels: unknown level ${l}`);
  return {
    quick,
    only,
    warmupMs: num("warmup", quick ? 0.5 : 1.5) * 1000,
    measureMs: num("duration", quick ? 1.5 : 2.5) * 1000,
    rounds: Math.round(num("rounds", quick ? 1 : 2)),
    concurrencies,
    logLevels: levels,
    profile: flags.has("profile"),
    ghz: !flags.has("no-ghz"),
    window: Math.round(num("window", 256)),
    sagaRate: num("saga-rate", 200),
    outDir: String(flags.get("out") ?? join(repoRoot, "bench", "results")),
  };
}

async function main(): Promise<number> {
  let options: Options | undefined;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`bench: ${(err as Error).message}`);
    return 2;
  }
  if (!options) {
    console.log(help);
    return 0;
  }
  const log = (line: string) => console.log(line);
  const stamp = new Date().toISOString().replace(/[:.]/g, "-").replace(/-\d{3}Z$/, "Z");
  const tmp = mkdtempSync(join(os.tmpdir(), "concord-bench-"));
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
  const ctx: BenchContext = {
    options,
    tmp,
    profileDir,
    ghz,
    log,
    nats: () => (natsStarting ??= startNatsServer(tmp).then((n) => (nats = n))),
  };

  const rows: Row[] = [];
  const details: Record<string, unknown> = {};
  const failures: Record<string, string> = {};
  const cpu: Record<string, CpuShare> = {};
  const started = Date.now();
  try {
    for (const scenario of scenarios) {
      if (options.only.length > 0 && !options.only.includes(scenario.name)) continue;
      const t0 = Date.now();
      log(`\n== ${scenario.name}: ${scenario.summary}`);
      const meter = startCpuMeter(() => (nats ? [nats.process.pid] : []));
      try {
        const result = await scenario.run(ctx);
        rows.push(...result.rows);
        details[scenario.name] = result.details;
      } catch (err) {
        failures[scenario.name] = (err as Error).stack ?? String(err);
        log(`bench: scenario ${scenario.name} failed: ${(err as Error).stack ?? err}`);
      }
      const share = meter();
      cpu[scenario.name] = share;
      log(`   (${((Date.now() - t0) / 1000).toFixed(0)} s; CPU: bench ${share.benchPct}%, other processes ${share.otherPct}%, steal ${share.stealPct}% of the machine)`);
    }
  } finally {
    await nats?.process.stop();
    if (Object.keys(failures).length === 0) rmSync(tmp, { recursive: true, force: true });
    else log(`bench: logs of the failed run kept in ${tmp}`);
  }

  const table = formatTable(rows);
  log(`\n${table}\n`);
  const noisy = Object.entries(cpu).filter(([, c]) => c.otherPct + c.stealPct >= 10);
  if (noisy.length > 0) {
    log(`noise: other processes (and steal) took ${noisy.map(([name, c]) => `${(c.otherPct + c.stealPct).toFixed(0)}% of the machine during ${name}`).join(", ")}; ratios are measured side by side, but absolute figures are low and spread is wide`);
  }
  const judged = rows.filter((r) => r.pass !== null);
  log(`targets: ${judged.filter((r) => r.pass).length} of ${judged.length} met; run took ${((Date.now() - started) / 1000).toFixed(0)} s; load average at end ${os.loadavg().map((v) => v.toFixed(2)).join(" ")}`);

  const report = {
    timestamp: stamp,
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
    machine: { ...machine, loadAverageAtEnd: os.loadavg().map((v) => Math.round(v * 100) / 100) },
    options,
    durationSeconds: Math.round((Date.now() - started) / 1000),
    table,
    rows,
    cpuDuringScenarios: cpu,
    details,
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

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`bench: ${err instanceof Error ? (err.stack ?? err.message) : err}`);
    process.exit(1);
  },
);
