import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../tools/repo-root.js";
import { services } from "../tools/services.js";
import { readmeProse } from "./support/readme.js";

/** The OTEL_* variables platform/tracing reads itself (those the SDK alone reads are the SDK's to document). */
function tracingVariables(): string[] {
  const source = readFileSync(join(repoRoot, "platform", "tracing", "tracing.ts"), "utf8");
  return [...new Set([...source.matchAll(/\bOTEL_[A-Z_]*[A-Z]\b/g)].map((m) => m[0]))].sort();
}

describe("README's configuration", () => {
  it("names every variable a service reads", () => {
    // REQUEST_ID_RETENTION was read, with its default of 24h, and named nowhere but --help.
    const prose = readmeProse();
    const names = [...new Set(services.flatMap((s) => Object.keys(s.settings)))];
    expect(names.length).toBeGreaterThan(10);
    expect(names.filter((name) => !prose.includes(`\`${name}\``) && !prose.includes(`\`${name}=`))).toEqual([]);
  });

  it("names every OTEL_* variable the platform's tracing reads to turn tracing on or off and to check its settings", () => {
    // OTEL_EXPORTER_OTLP_TRACES_ENDPOINT turned tracing on, and OTEL_TRACES_EXPORTER=none off, with the README saying neither.
    const prose = readmeProse();
    const names = tracingVariables();
    expect(names).toContain("OTEL_TRACES_EXPORTER");
    expect(names.filter((name) => !prose.includes(`\`${name}\``) && !prose.includes(`\`${name}=`))).toEqual([]);
  });
});
