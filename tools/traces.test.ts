import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

/** Runs the tool as a user would. */
const traces = (...args: string[]) => spawnSync(process.execPath, ["--import", "tsx", "tools/traces.ts", ...args], { encoding: "utf8", timeout: 30_000, env: { ...process.env, DATA_DIR: "/nonexistent" } });

describe("tools/traces.ts", () => {
  it("names the command an option of serve's belongs to when it is given to show, in one line naming --help (exit 2)", () => {
    for (const [option, ...value] of [["--zipkin"], ["--zipkin-port", "9411"], ["--zipkin-port=9411"], ["--port", "4318"], ["--port=4318"]]) {
      const run = traces("show", "abc", option!, ...value);
      expect(run.status, option).toBe(2);
      // The whole usage, 16 lines, followed it.
      expect(run.stderr, option).toBe(`tools/traces.ts: ${option!.split("=")[0]} is an option of \`npx tsx tools/traces.ts serve\` (\`npx tsx tools/traces.ts --help\` shows the usage)\n`);
      expect(run.stdout).toBe("");
    }
  });

  it("lists its commands on standard error given none (exit 2), on standard output for --help (exit 0)", () => {
    const alone = traces();
    expect(alone.status).toBe(2);
    expect(alone.stderr).toMatch(/^tools\/traces\.ts: name a command, serve or show\n\nUsage:\n  npx tsx tools\/traces\.ts serve /);
    expect(alone.stdout).toBe("");
    const help = traces("--help");
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage:\n  npx tsx tools\/traces\.ts serve /);
    expect(help.stderr).toBe("");
  });

  it("still names a mistyped option with the one it likely meant, and an option neither command takes as unknown", () => {
    const typo = traces("serve", "--zipkn");
    expect(typo.status).toBe(2);
    expect(typo.stderr).toBe("tools/traces.ts: unknown option --zipkn; did you mean --zipkin? (`npx tsx tools/traces.ts --help` shows the usage)\n");
    const neither = traces("show", "abc", "--bogus");
    expect(neither.status).toBe(2);
    expect(neither.stderr).toBe("tools/traces.ts: unknown option --bogus (`npx tsx tools/traces.ts --help` shows the usage)\n");
  });
});
