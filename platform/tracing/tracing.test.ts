import { execFile, spawnSync } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { startTraceReceiver } from "../../tools/traces/otlp-receiver.js";
import { otlpEndpointProblem, problemLogger, tracingSettingsProblem, tracingWanted } from "./tracing.js";

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

  it("refuses an OTLP endpoint that is not an http or https URL, which the exporter would replace by its default unsaid", () => {
    // The exporter took "127.0.0.1:4318" for no URL and sent to http://localhost:4318, and "localhost:4318" for a URL of scheme localhost.
    for (const value of ["127.0.0.1:4318", "localhost:4318", "ftp://127.0.0.1:4318", "http://"]) {
      expect(otlpEndpointProblem({ OTEL_EXPORTER_OTLP_ENDPOINT: value })).toBe(
        `OTEL_EXPORTER_OTLP_ENDPOINT=${JSON.stringify(value)} is not an http:// or https:// URL, which the OTLP exporter needs (it would send the spans elsewhere or nowhere, saying nothing): write it whole, as http://127.0.0.1:4318`,
      );
    }
    expect(otlpEndpointProblem({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "collector:4318" })).toMatch(/^OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="collector:4318" is not/);
    expect(otlpEndpointProblem({ OTEL_EXPORTER_OTLP_ENDPOINT: " https://collector.example:4318/ " })).toBeUndefined();
    // Not read when tracing is off.
    expect(otlpEndpointProblem({ OTEL_EXPORTER_OTLP_ENDPOINT: "127.0.0.1:4318", OTEL_SDK_DISABLED: "true" })).toBeUndefined();
    // A service refuses it at start, one line and exit 2, as it does a bad setting of its own.
    const service = spawnSync(process.execPath, ["--import", "tsx", "services/products/main.ts"], {
      encoding: "utf8",
      env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: "127.0.0.1:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "", OTEL_SDK_DISABLED: "", INSTANCE: "products#1" },
      timeout: 60_000,
    });
    expect(service.status).toBe(2);
    // Its settings read, the refusal names the process, as its log lines would.
    expect(service.stderr).toBe(`products (products#1): ${otlpEndpointProblem({ OTEL_EXPORTER_OTLP_ENDPOINT: "127.0.0.1:4318" })}\n`);
  }, 60_000);

  it("refuses an OTEL_* wait longer than a Node.js timer waits, which would fire after 1 ms", () => {
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" };
    for (const name of ["OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"]) {
      // The SDK reads any number, its exponent form included.
      for (const value of ["2147483648", "3e9", "Infinity"]) {
        expect(tracingSettingsProblem({ ...endpoint, [name]: value })).toBe(
          `${name}=${JSON.stringify(value)} is more than 2147483647 ms (about 24.8 days), the longest a Node.js timer waits: give at most 2147483647 (24d is 2073600000)`,
        );
      }
      expect(tracingSettingsProblem({ ...endpoint, [name]: "2147483647" })).toBeUndefined();
      // What is no number the SDK warns of and replaces by its default itself.
      expect(tracingSettingsProblem({ ...endpoint, [name]: "soon" })).toBeUndefined();
      // Not read when tracing is off.
      expect(tracingSettingsProblem({ [name]: "3e9" })).toBeUndefined();
    }
    // The endpoint is said first.
    expect(tracingSettingsProblem({ OTEL_EXPORTER_OTLP_ENDPOINT: "127.0.0.1:4318", OTEL_BSP_SCHEDULE_DELAY: "3e9" })).toBe(otlpEndpointProblem({ OTEL_EXPORTER_OTLP_ENDPOINT: "127.0.0.1:4318" }));
    // A service refuses it at start, one line and exit 2.
    const service = spawnSync(process.execPath, ["--import", "tsx", "services/products/main.ts"], {
      encoding: "utf8",
      env: { ...process.env, ...endpoint, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "", OTEL_SDK_DISABLED: "", OTEL_BSP_SCHEDULE_DELAY: "2592000000", INSTANCE: "products#1" },
      timeout: 60_000,
    });
    expect(service.status).toBe(2);
    expect(service.stderr).toBe(`products (products#1): ${tracingSettingsProblem({ ...endpoint, OTEL_BSP_SCHEDULE_DELAY: "2592000000" })}\n`);
  }, 60_000);

  it("says where the spans go, as the exporter makes the URL from the variables", () => {
    const endpoint = (env: Record<string, string>) => {
      const child = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", `const { startTracing } = await import("./platform/tracing/index.ts"); const t = await startTracing({ service: "probe" }); console.log(JSON.stringify(t.endpoint)); await t.shutdown();`], {
        encoding: "utf8",
        env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: "", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "", OTEL_SDK_DISABLED: "", ...env },
        timeout: 60_000,
      });
      if (child.status !== 0) throw new Error(child.stderr);
      return JSON.parse(child.stdout.trim().split("\n").at(-1)!);
    };
    expect(endpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" })).toBe("http://127.0.0.1:9/v1/traces");
    expect(endpoint({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9/", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:8/spans" })).toBe("http://127.0.0.1:8/spans");
  }, 120_000);

  it("exports the instance as the resource's service.instance.id, unless OTEL_RESOURCE_ATTRIBUTES names another", { timeout: 120_000 }, async () => {
    const receiver = await startTraceReceiver();
    try {
      // In a process of its own (the SDK reads the variables itself), not waited for synchronously: the receiver here answers it.
      const exportOne = (env: Record<string, string>) =>
        promisify(execFile)(
          process.execPath,
          ["--import", "tsx", "--input-type=module", "-e", `const { startTracing, activeTracer } = await import("./platform/tracing/index.ts"); const t = await startTracing({ service: "probe", instance: "probe#2" }); activeTracer().startSpan("one").end(); await t.shutdown();`],
          { env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "", OTEL_SDK_DISABLED: "", OTEL_SERVICE_NAME: "", OTEL_RESOURCE_ATTRIBUTES: "", ...env }, timeout: 60_000 },
        );
      await exportOne({});
      await exportOne({ OTEL_RESOURCE_ATTRIBUTES: "service.instance.id=probe-7f9c" });
      expect(receiver.spans().map((s) => [s.service, s.instance])).toEqual([
        ["probe", "probe#2"],
        ["probe", "probe-7f9c"],
      ]);
    } finally {
      await receiver.close();
    }
  });

  it("tells of spans it cannot export, in one line saying why, where the SDK said nothing", () => {
    // Nothing listens on port 9 of loopback: every batch fails, as with a collector that is down.
    const script = `
      const { startTracing, activeTracer } = await import("./platform/tracing/index.ts");
      const tracing = await startTracing({ service: "probe", onProblem: (problem, left) => { console.log(JSON.stringify({ problem, left })); process.exit(0); } });
      activeTracer().startSpan("lost").end();
      setInterval(() => {}, 1000);`;
    const child = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      encoding: "utf8",
      env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "", OTEL_SDK_DISABLED: "", OTEL_BSP_SCHEDULE_DELAY: "50", OTEL_EXPORTER_OTLP_TIMEOUT: "500" },
      timeout: 60_000,
    });
    expect(child.status).toBe(0);
    expect(JSON.parse(child.stdout.trim())).toEqual({ problem: "connect ECONNREFUSED 127.0.0.1:9", left: 0 });
  }, 90_000);

  it("tells each kind of the SDK's warnings at most once a minute, counting those left untold, each on one line", () => {
    const told: [string, number][] = [];
    let now = 1_000_000;
    const logger = problemLogger((problem, left) => told.push([problem, left]), () => now);
    const failure = JSON.stringify({ stack: "Error: connect ECONNREFUSED 127.0.0.1:9\n    at TCPConnectWrap", message: "connect ECONNREFUSED 127.0.0.1:9", code: "ECONNREFUSED" });
    logger.error(failure);
    logger.error(failure);
    now += 1_000;
    // Another kind is not hidden by the first; the same words with other numbers are the same kind.
    logger.warn("Dropped 3 spans because maxQueueSize reached");
    logger.warn("Dropped 40 spans because maxQueueSize reached");
    now += 58_999;
    logger.error(failure);
    logger.info("not a problem");
    expect(told).toEqual([["connect ECONNREFUSED 127.0.0.1:9", 0], ["Dropped 3 spans because maxQueueSize reached", 0]]);
    now += 1;
    logger.error(failure);
    logger.warn("a warning\nover two lines");
    expect(told.slice(2)).toEqual([["connect ECONNREFUSED 127.0.0.1:9", 2], ["a warning over two lines", 0]]);
  });

  it("loads no OpenTelemetry SDK or exporter in a service that does not trace, and the SDK once it does", () => {
    // The API alone may be there: prom-client's process metrics import it.
    expect(loadedPackages({}).filter((name) => name !== "@opentelemetry/api")).toEqual([]);
    const on = loadedPackages({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" });
    expect(on).toEqual(expect.arrayContaining(["@opentelemetry/api", "@opentelemetry/sdk-trace-base", "@opentelemetry/exporter-trace-otlp-http"]));
  }, 120_000);
});
