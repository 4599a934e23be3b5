import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../tools/repo-root.js";

const flood = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", join(repoRoot, "bench", "metadata-flood.ts"), ...args], { cwd: repoRoot, encoding: "utf8", timeout: 20_000 });

describe("bench/metadata-flood.ts", () => {
  it("prints its usage with --help, and runs nothing", () => {
    const result = flood("--help");
    expect(result.status).toBe(0);
    expect(result.stdout).toContain("usage: npx tsx bench/metadata-flood.ts HOST:PORT [CONNECTIONS] [STREAMS] [BYTES] [HOLD_MS] [METHOD]");
    expect(result.stdout).not.toContain("reset");
  });

  it("refuses a wrong command line in one line, exit 2, where a flag was taken for the server's address and flooded", () => {
    const cases: [string[], string][] = [
      [["--bogus"], 'metadata-flood: the server is HOST:PORT, got "--bogus"'],
      [[], "metadata-flood: name the server, HOST:PORT"],
      [["127.0.0.1:1", "x"], 'metadata-flood: CONNECTIONS is a whole number from 1, got "x"'],
      [["127.0.0.1:1", "1", "1", "1", "1", "GetProduct"], 'metadata-flood: METHOD is a path, /package.Service/Method, got "GetProduct"'],
    ];
    for (const [args, said] of cases) {
      const result = flood(...args);
      expect({ args, status: result.status, stdout: result.stdout }).toEqual({ args, status: 2, stdout: "" });
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expect(result.stderr).toContain(said);
    }
  });
});
