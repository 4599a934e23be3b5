import { readFileSync, readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../tools/repo-root.js";
import { readmeProse } from "./support/readme.js";

/** The TypeScript sources under `dir`, tests left out. */
function sources(dir: string): string[] {
  return readdirSync(join(repoRoot, dir), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"))
    .map((f) => join(repoRoot, dir, f));
}

/** Each metric the platform and the services register, by the file that names it (`name: "concord_..."`). */
function registeredMetrics(): Map<string, string> {
  const found = new Map<string, string>();
  for (const file of [...sources("platform"), ...sources("services")]) {
    for (const m of readFileSync(file, "utf8").matchAll(/\bname: "((?:concord|grpc)_[a-z_]+)"/g)) found.set(m[1], relative(repoRoot, file));
  }
  return found;
}

/** The log message of each refusal reason in platform/grpc/refusals.ts, a `${...}` in it as a pattern for any value. */
function refusalMessages(): Map<string, RegExp> {
  const source = readFileSync(join(repoRoot, "platform", "grpc", "refusals.ts"), "utf8");
  const table = source.slice(source.indexOf("const messages"), source.indexOf("};", source.indexOf("const messages")));
  const found = new Map<string, RegExp>();
  for (const m of table.matchAll(/^\s+([a-z_]+): ["`](.*)["`],$/gm)) {
    const pattern = m[2]
      .split(/\$\{[^}]*\}/)
      .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      .join("\\S+");
    found.set(m[1], new RegExp(pattern));
  }
  return found;
}

describe("README's metrics and log lines", () => {
  it("has a row in its metrics table for every metric the platform and the services register", () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const metrics = registeredMetrics();
    expect(metrics.size).toBeGreaterThan(20);
    const missing = [...metrics].filter(([name]) => !readme.includes(`| \`${name}\` |`)).map(([name, file]) => `${name} (${file})`);
    expect(missing).toEqual([]);
  });

  it("names no metric that nothing registers any more", () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const metrics = registeredMetrics();
    const rows = [...readme.matchAll(/^\| `((?:concord|grpc)_[a-z_]+)` \|/gm)].map((m) => m[1]);
    expect(rows.filter((name) => !metrics.has(name))).toEqual([]);
  });

  it("quotes the log line of every refusal reason as the server writes it, and has a row for each call's reason", () => {
    const prose = readmeProse();
    const messages = refusalMessages();
    expect(messages.size).toBeGreaterThan(15);
    expect([...messages].filter(([, pattern]) => !pattern.test(prose)).map(([reason]) => reason)).toEqual([]);
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const callReasons = [...messages.keys()].filter((r) => !/^(no_|too_many_|timeout_clamped)/.test(r));
    expect(callReasons.filter((reason) => !readme.includes(`| \`${reason}\` |`))).toEqual([]);
  });
});
