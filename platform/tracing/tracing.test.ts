import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { tracingWanted } from "./tracing.js";

/**
 * Loads the services' code and starts tracing in a fresh process, then
 * prints which OpenTelemetry packages are loaded (as CommonJS, they show in
 * require.cache however they were imported).
 */
const loadedPackages = (env: Record<string, string>): string[] => {
  const script = `
    import { createRequire } from "node:module";
    await import("./services/orders/app.ts");
    await import("./services/products/app.ts");
    const { startTracing } = await import("./platform/tracing/index.ts");
    const tracing = await startTracing({ service: "probe" });
    const cache = createRequire(import.meta.url).cache;
    const names = new Set(Object.keys(cache).flatMap((k) => /node_modules\\/(@opentelemetry\\/[^/]+)/.exec(k)?.[1] ?? []));
    console.log(JSON.stringify([...names].sort()));
    await tracing.shutdown();`;
  const child = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: "", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "", ...env }, timeout: 60_000 });
  if (child.status !== 0) throw new Error(child.stderr);
  return JSON.parse(child.stdout.trim().split("\n").at(-1)!);
};

describe("tracing", () => {
  it("is wanted only with an OTLP endpoint, and not when OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none say no", () => {
    expect(tracingWanted({})).toBe(false);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: " " })).toBe(false);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" })).toBe(true);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:4318/v1/traces" })).toBe(true);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_SDK_DISABLED: "TRUE" })).toBe(false);
    expect(tracingWanted({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_TRACES_EXPORTER: "none" })).toBe(false);
  });

  it("loads no OpenTelemetry SDK or exporter in a service that does not trace, and the SDK once it does", () => {
    // The API alone may be there: prom-client's process metrics import it.
    expect(loadedPackages({}).filter((name) => name !== "@opentelemetry/api")).toEqual([]);
    const on = loadedPackages({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" });
    expect(on).toEqual(expect.arrayContaining(["@opentelemetry/api", "@opentelemetry/sdk-trace-base", "@opentelemetry/exporter-trace-otlp-http"]));
  }, 120_000);
});
