/**
 * The command line of `npm run bench`: its flags, read with node:util's
 * parseArgs in strict mode, and its --help text.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import type { Options } from "./report.js";

/** A flag the bench does not know, a missing value or one it cannot use; `npm run bench` prints it and exits with status 2. */
export class BenchFlagError extends Error {
  override readonly name = "BenchFlagError";
}

/** Every flag; `--name value` and `--name=value` both work. */
export const benchFlags = {
  quick: { type: "boolean" },
  only: { type: "string" },
  warmup: { type: "string" },
  duration: { type: "string" },
  rounds: { type: "string" },
  runs: { type: "string" },
  concurrency: { type: "string" },
  "log-levels": { type: "string" },
  window: { type: "string" },
  "saga-rate": { type: "string" },
  profile: { type: "boolean" },
  "no-ghz": { type: "boolean" },
  out: { type: "string" },
  help: { type: "boolean" },
} as const satisfies NonNullable<ParseArgsConfig["options"]>;

const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** A scenario as the command line knows it. */
export interface ScenarioName {
  readonly name: string;
  readonly summary: string;
}

/** The --help text. */
export function benchUsage(scenarios: readonly ScenarioName[]): string {
  return `Usage: npm run bench -- [flags]

Runs Concord's benchmarks, each against a bare baseline measured in the same
run, prints one table and writes it as JSON to bench/results/<time>.json and
bench/results/latest.json. Every load generator runs in its own process;
services run as production runs them (compiled, from dist/; see tools/service-launch.ts)
against a nats-server -js of the bench's own (free port, temporary store).
\`npm run bench\` builds dist/ first; \`npx tsx bench/run.ts\` does not, and refuses
to run (exit 2, naming the file) when a source under platform/, services/ or
gen/ changed since dist/ was built. Ctrl-C (SIGINT) or SIGTERM stops every
process the run started, removes its temporary directory and exits 130 or 143,
writing no figures.

Scenarios (default: all, in this order):
${scenarios.map((s) => `  ${s.name.padEnd(9)} ${s.summary}`).join("\n")}

Each ratio with a target has a row beside it for the CPU per operation of the
process under test against the baseline's, judged too; bench/README.md lists
every target. The run ends with how many targets were met (on the medians
when there are several runs).

Flags:
  --quick               one rough run, under two minutes: short windows, ghz view
                        only, LOG_LEVEL=info only
  --only <a,b>          run only these scenarios (names above)
  --warmup <seconds>    warm-up before each measured window (default 1.5; quick 0.5;
                        later rounds on a warm process: at most 0.3)
  --duration <seconds>  length of each measured window (default 2.5; quick 1.5)
  --rounds <n>          alternating rounds (bare, concord, concord, bare, ...) of each
                        judged gRPC measurement (default 2; quick 1)
  --runs <n>            full runs of the chosen scenarios, one after another (default 3;
                        quick 1); a target counts as met when it holds in most runs,
                        that is, when the median of its figure meets it; the summary
                        gives min / median / max of each figure
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

Environment: NATS_SERVER (nats-server binary), GHZ (ghz binary; one that names no
file is refused, exit 2).`;
}

/**
 * The options `argv` (the arguments after `npm run bench --`) ask for, or
 * undefined when they ask for --help. Throws BenchFlagError, naming the flag,
 * for an unknown flag or an argument that is not a flag, a flag without its
 * value or a boolean flag with one, and a value out of range.
 */
export function parseBenchFlags(argv: readonly string[], scenarios: readonly string[], defaultOutDir: string): Options | undefined {
  const flags = readFlags(argv);
  if (flags.help) return undefined;
  const quick = flags.quick === true;
  const only = list("--only", flags.only, "");
  for (const o of only) if (!scenarios.includes(o)) throw new BenchFlagError(`--only: no scenario "${o}" (${scenarios.join(", ")})`);
  const concurrencies = list("--concurrency", flags.concurrency, "1,16,64").map((c) => Number(c));
  if (concurrencies.some((c) => !Number.isInteger(c) || c < 1)) throw new BenchFlagError(`--concurrency takes positive integers, e.g. 1,16,64, got "${flags.concurrency}"`);
  const levels = list("--log-levels", flags["log-levels"], quick ? "info" : "info,warn");
  for (const l of levels) if (!logLevels.includes(l)) throw new BenchFlagError(`--log-levels: unknown level ${l} (${logLevels.join(", ")})`);
  if (flags.out === "") throw new BenchFlagError("--out needs a directory");
  return {
    quick,
    only,
    warmupMs: positive("--warmup", flags.warmup, quick ? 0.5 : 1.5) * 1000,
    measureMs: positive("--duration", flags.duration, quick ? 1.5 : 2.5) * 1000,
    rounds: whole("--rounds", flags.rounds, quick ? 1 : 2),
    runs: whole("--runs", flags.runs, quick ? 1 : 3),
    concurrencies,
    logLevels: levels,
    profile: flags.profile === true,
    ghz: flags["no-ghz"] !== true,
    window: whole("--window", flags.window, 256),
    sagaRate: positive("--saga-rate", flags["saga-rate"], 200),
    outDir: flags.out ?? defaultOutDir,
  };
}

/** The flags' values; what strict parsing refuses becomes a BenchFlagError in the bench's words. */
function readFlags(argv: readonly string[]) {
  try {
    return parseArgs({ args: [...argv], options: benchFlags, strict: true, allowPositionals: false }).values;
  } catch (err) {
    if (!String((err as { code?: unknown }).code).startsWith("ERR_PARSE_ARGS_")) throw err;
    throw new BenchFlagError(`${refusal(argv) ?? (err as Error).message}; see --help`);
  }
}

/** Which argument strict parsing refused, and why, from parseArgs' tokens. */
function refusal(argv: readonly string[]): string | undefined {
  const { tokens } = parseArgs({ args: [...argv], options: benchFlags, strict: false, allowPositionals: true, tokens: true });
  for (const token of tokens) {
    if (token.kind === "positional") return `unexpected argument ${token.value}: every argument is a flag such as --quick`;
    if (token.kind === "option-terminator") return "unexpected argument --";
    if (!Object.hasOwn(benchFlags, token.name)) return `unknown flag ${token.rawName}`;
    const { type } = benchFlags[token.name as keyof typeof benchFlags];
    if (type === "boolean" && token.value !== undefined) return `${token.rawName} takes no value`;
    if (type === "string" && token.value === undefined) return `${token.rawName} needs a value`;
    if (type === "string" && !token.inlineValue && token.value?.startsWith("-")) {
      return `${token.rawName} needs a value, got ${token.value} (write ${token.rawName}=${token.value} if that is the value)`;
    }
  }
  return undefined;
}

/** A comma-separated list, blanks dropped; a flag given with nothing in it is an error. */
function list(flag: string, value: string | undefined, fallback: string): string[] {
  const items = (value ?? fallback).split(",").map((s) => s.trim()).filter(Boolean);
  if (value !== undefined && items.length === 0) throw new BenchFlagError(`${flag} needs at least one item`);
  return items;
}

/** A number above zero. */
function positive(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = value.trim() === "" ? NaN : Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new BenchFlagError(`${flag} must be a number above 0, got "${value}"`);
  return n;
}

/** A whole number above zero. */
function whole(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = value.trim() === "" ? NaN : Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new BenchFlagError(`${flag} must be a whole number above 0, got "${value}"`);
  return n;
}
