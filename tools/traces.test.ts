import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../test/support/temp-dir.js";

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

  const dir = tempDirForSuite("concord-traces-");

  it("show skips a line whose times are not whole nanoseconds, saying so, and prints the rest of the trace", () => {
    const file = join(dir, "traces.jsonl");
    const line = (spanId: string, startNs: unknown) =>
      JSON.stringify({ service: "orders", traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId, parentSpanId: "", name: `span ${spanId}`, kind: "SERVER", startNs, endNs: "1764650000002000000", attributes: { order: "o-1" }, status: { code: 0 }, links: [] });
    // A receiver before it checked times wrote what it was sent; show then stopped on "Cannot convert soon to a BigInt" (exit 1).
    writeFileSync(file, [line("00f067aa0ba902b7", "1764650000000000000"), line("00f067aa0ba902b8", "soon")].join("\n") + "\n");
    const run = traces("show", "o-1", "--file", file);
    expect(run.stderr).toBe(`tools/traces.ts: ${file}: 1 line(s) hold no whole span and were skipped (line 2)\n`);
    expect(run.status).toBe(0);
    expect(run.stdout).toContain("span 00f067aa0ba902b7  [orders SERVER]");
  });

  it("names itself at the start of what show says on standard error, as it does of bad usage, where those lines began with the file, \"no trace\" or \"traces:\"", () => {
    const file = join(dir, "one.jsonl");
    writeFileSync(file, `${JSON.stringify({ service: "orders", traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", parentSpanId: "", name: "a span", kind: "SERVER", startNs: "1", endNs: "2", attributes: {}, status: { code: 0 }, links: [] })}\n`);
    const none = traces("show", "o-2", "--file", file);
    expect(none.status).toBe(1);
    expect(none.stderr.startsWith(`tools/traces.ts: no trace in ${file} has a span mentioning "o-2" (`), none.stderr).toBe(true);
    const missing = traces("show", "o-2", "--file", join(dir, "none.jsonl"));
    expect(missing.status).toBe(1);
    expect(missing.stderr.startsWith(`tools/traces.ts: ${join(dir, "none.jsonl")} does not exist; `), missing.stderr).toBe(true);
  });
});
