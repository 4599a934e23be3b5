import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../test/support/temp-dir.js";
import { repoRoot } from "../tools/repo-root.js";

const profile = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", join(repoRoot, "bench", "profile.ts"), ...args], { cwd: repoRoot, encoding: "utf8", timeout: 20_000 });

describe("bench/profile.ts", () => {
  const dir = tempDirForSuite();

  it("prints where a profile's time went, given its file or its directory", () => {
    const made = spawnSync(process.execPath, ["--cpu-prof", "--cpu-prof-dir", dir, "-e", "let x = 0; for (let i = 0; i < 3e6; i++) x += Math.sqrt(i);"]);
    expect(made.status).toBe(0);
    const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"))!;
    for (const given of [join(dir, file), dir]) {
      const result = profile(given, "--top", "5");
      expect(result.stderr).toBe("");
      expect(result.status).toBe(0);
      expect(result.stdout).toContain("CPU profile");
    }
  });

  it("refuses a wrong command line in one line, exit 2, where it threw with a stack", () => {
    // An unknown flag was taken for the profile's path and failed in statSync with a stack; --top x printed NaN rows.
    const cases: [string[], string][] = [
      [["--bogus"], "profile: unknown option --bogus"],
      [[], "profile: name a .cpuprofile file or a directory of them"],
      [[dir, "--top", "x"], 'profile: --top takes a whole number from 1 to 999999, got "x"'],
      [[dir, "--grep", "("], "profile: --grep: Invalid regular expression"],
      [[join(dir, "missing.cpuprofile")], "profile: ENOENT"],
      [[join(repoRoot, "package.json")], "profile: " + join(repoRoot, "package.json") + " is not a V8 CPU profile"],
    ];
    for (const [args, said] of cases) {
      const result = profile(...args);
      expect({ args, status: result.status }).toEqual({ args, status: 2 });
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expect(result.stderr).toContain(said);
    }
  });

  it("prints its usage with --help", () => {
    const result = profile("--help");
    expect(result.status).toBe(0);
    expect(result.stdout).toContain("Usage: npx tsx bench/profile.ts <file.cpuprofile | directory> [--top N] [--grep REGEX]");
  });
});
