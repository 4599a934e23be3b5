import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../../tools/repo-root.js";
import { benchFlags, benchUsage, parseBenchFlags } from "./flags.js";

const scenarios = ["grpc", "publish", "consume", "saga", "memory"];
const parse = (...argv: string[]) => parseBenchFlags(argv, scenarios, "/results");

describe("parseBenchFlags", () => {
  it("gives the defaults of a full run and of --quick", () => {
    expect(parse()).toEqual({
      quick: false,
      only: [],
      warmupMs: 1500,
      measureMs: 2500,
      rounds: 2,
      runs: 3,
      concurrencies: [1, 16, 64],
      logLevels: ["info", "warn"],
      profile: false,
      ghz: true,
      window: 256,
      sagaRate: 200,
      outDir: "/results",
    });
    expect(parse("--quick")).toMatchObject({ quick: true, warmupMs: 500, measureMs: 1500, rounds: 1, runs: 1, logLevels: ["info"] });
  });

  it("reads every flag, as --name value or --name=value", () => {
    const argv = ["--only", "grpc,saga", "--warmup=0.25", "--duration", "4", "--rounds=3", "--runs", "5", "--concurrency", "8, 32", "--log-levels=debug"];
    argv.push("--window", "64", "--saga-rate=150.5", "--profile", "--no-ghz", "--out", "elsewhere");
    expect(parse(...argv)).toEqual({
      quick: false,
      only: ["grpc", "saga"],
      warmupMs: 250,
      measureMs: 4000,
      rounds: 3,
      runs: 5,
      concurrencies: [8, 32],
      logLevels: ["debug"],
      profile: true,
      ghz: false,
      window: 64,
      sagaRate: 150.5,
      outDir: "elsewhere",
    });
    expect(parse("--help")).toBeUndefined();
    expect(parse("--quick", "--help", "--rounds", "x")).toBeUndefined();
  });

  it("refuses, naming it, an unknown flag, an argument that is not a flag, a missing value and a value on a switch", () => {
    expect(() => parse("--quik")).toThrow("unknown flag --quik; see --help");
    expect(() => parse("-q")).toThrow("unknown flag -q; see --help");
    expect(() => parse("grpc")).toThrow("unexpected argument grpc: every argument is a flag such as --quick; see --help");
    expect(() => parse("--", "--quick")).toThrow("unexpected argument --; see --help");
    expect(() => parse("--quick", "--only")).toThrow("--only needs a value; see --help");
    expect(() => parse("--only", "--quick")).toThrow("--only needs a value, got --quick (write --only=--quick if that is the value); see --help");
    expect(() => parse("--profile=yes")).toThrow("--profile takes no value; see --help");
  });

  it("refuses values it cannot use", () => {
    expect(() => parse("--rounds", "1.5")).toThrow('--rounds must be a whole number above 0, got "1.5"');
    expect(() => parse("--rounds=0")).toThrow('--rounds must be a whole number above 0, got "0"');
    expect(() => parse("--window", "lots")).toThrow('--window must be a whole number above 0, got "lots"');
    expect(() => parse("--warmup=-1")).toThrow('--warmup must be a number above 0, got "-1"');
    expect(() => parse("--duration=")).toThrow('--duration must be a number above 0, got ""');
    expect(() => parse("--saga-rate", "Infinity")).toThrow('--saga-rate must be a number above 0, got "Infinity"');
    expect(() => parse("--only", "grpc,nosuch")).toThrow('--only: no scenario "nosuch" (grpc, publish, consume, saga, memory)');
    expect(() => parse("--only=,")).toThrow("--only needs at least one item");
    expect(() => parse("--concurrency", "1,0")).toThrow('--concurrency takes positive integers, e.g. 1,16,64, got "1,0"');
    expect(() => parse("--log-levels", "info,loud")).toThrow("--log-levels: unknown level loud");
    expect(() => parse("--out=")).toThrow("--out needs a directory");
  });

  it("documents in --help every flag it reads, and no other", () => {
    const usage = benchUsage(scenarios.map((name) => ({ name, summary: `the ${name} scenario` })));
    const documented = [...usage.matchAll(/^ {2}--([a-z-]+)/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(benchFlags).sort());
    expect(usage).toContain("  saga      the saga scenario");
  });

  it("says how long a --quick run takes as bench/README.md does", () => {
    // --help said "under a minute" after bench/README.md had been changed to "under two minutes" for scenarios 7 and 8.
    const usage = benchUsage([]);
    const readme = readFileSync(join(repoRoot, "bench", "README.md"), "utf8");
    const said = /--quick +# one rough run, (under [a-z ]+)$/m.exec(readme)?.[1];
    expect(said).toBeDefined();
    expect(usage).toContain(`--quick               one rough run, ${said}:`);
  });
});

describe("npm run bench with a bad flag", () => {
  it("says what is wrong and exits with status 2 before running anything", () => {
    const result = spawnSync(process.execPath, ["--import", "tsx", "bench/run.ts", "--rounds", "two"], { cwd: repoRoot, encoding: "utf8", timeout: 30_000 });
    expect(result.stderr.trim()).toBe('bench: --rounds must be a whole number above 0, got "two"');
    expect(result.stdout).toBe("");
    expect(result.status).toBe(2);
  });
});
