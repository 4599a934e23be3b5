import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Code } from "../errors/index.js";
import { type CallRefusal, type ConnectionRefusal, refusalReport, type RefusalObserver } from "./refusals.js";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { repoRoot } from "../../tools/repo-root.js";

const getProduct = "/shop.products.v1.ProductService/GetProduct";

describe("refusalReport", () => {
  it("logs the first refusal of a reason at once, then one line per interval with the count since, and tells the observer each", async () => {
    const { lines, logger } = capturedLogger();
    const heard: string[] = [];
    const observer: RefusalObserver = {
      callRefused: (method, code, reason) => heard.push(`${method} ${code} ${reason}`),
      connectionDropped: (reason) => heard.push(reason),
      timeoutClamped: (method) => heard.push(`clamped ${method}`),
    };
    const report = refusalReport(logger, observer, 300, (path) => path === getProduct);
    for (let i = 0; i < 1_000; i++) report.callRefused(getProduct, Code.UNIMPLEMENTED, "compressed", `10.0.0.${i % 8}`);
    report.connectionDropped("no_preface", "10.0.0.9");
    report.callRefused(`/made.Up/${"x".repeat(500)}`, Code.UNIMPLEMENTED, "unknown_method", "10.0.0.1");
    // Written at once, before the interval's line: a pause of 50 ms before looking, stretched past the 300 ms interval
    // on a loaded machine, would see that line too.
    expect(lines.map((l) => [l.level, l.reason, l.count])).toEqual([
      ["warn", "compressed", 1],
      ["warn", "no_preface", 1],
      ["warn", "unknown_method", 1],
    ]);
    expect(lines[0]).toMatchObject({ code: "UNIMPLEMENTED", methods: [getProduct], peers: ["10.0.0.0"] });
    expect(lines[0].sinceMs).toBeUndefined();
    // A made-up method is named in part: the log does not carry what a caller likes at any length.
    expect(lines[2].methods).toEqual([`/made.Up/${"x".repeat(91)}`]);
    await expect.poll(() => lines.length, { timeout: 5_000 }).toBe(4);
    expect(lines[3]).toMatchObject({ level: "warn", reason: "compressed", count: 999, methods: [getProduct] });
    expect(lines[3].peers).toHaveLength(5);
    expect(lines[3].sinceMs).toBeGreaterThanOrEqual(250);
    // Quiet for an interval: the next is logged at once again.
    await new Promise((resolve) => setTimeout(resolve, 350));
    report.timeoutClamped(getProduct, "10.0.0.1");
    report.callRefused(getProduct, Code.UNIMPLEMENTED, "compressed");
    report.callRefused(getProduct, Code.UNIMPLEMENTED, "compressed");
    expect(lines.slice(4).map((l) => [l.level, l.reason, l.count])).toEqual([
      ["info", "timeout_clamped", 1],
      ["warn", "compressed", 1],
    ]);
    // What waits for its interval is written at stop.
    report.stop();
    expect(lines.slice(6).map((l) => [l.reason, l.count])).toEqual([["compressed", 1]]);
    expect(heard).toHaveLength(1_000 + 1 + 1 + 1 + 2);
    expect(heard.slice(998, 1_002)).toEqual([`${getProduct} ${Code.UNIMPLEMENTED} compressed`, `${getProduct} ${Code.UNIMPLEMENTED} compressed`, "no_preface", `undefined ${Code.UNIMPLEMENTED} unknown_method`]);
  });

  it("writes for every reason a line README.md's Metrics section quotes", () => {
    // Every reason, so that one added without its line in the README fails here (the types make the lists complete).
    const callReasons: Record<CallRefusal, Code> = {
      starting: Code.UNAVAILABLE,
      request_count: Code.UNIMPLEMENTED,
      bad_timeout: Code.INVALID_ARGUMENT,
      several_authorizations: Code.UNAUTHENTICATED,
      reflection_overflow: Code.RESOURCE_EXHAUSTED,
      reflection_burst: Code.RESOURCE_EXHAUSTED,
      reflection_too_large: Code.RESOURCE_EXHAUSTED,
      compressed: Code.UNIMPLEMENTED,
      request_timeout: Code.CANCELLED,
      unfinished_overflow: Code.RESOURCE_EXHAUSTED,
      unfinished_bytes: Code.RESOURCE_EXHAUSTED,
      too_large: Code.RESOURCE_EXHAUSTED,
      deadline: Code.DEADLINE_EXCEEDED,
      unknown_method: Code.UNIMPLEMENTED,
      malformed: Code.INTERNAL,
    };
    const connectionReasons: Record<ConnectionRefusal, true> = { no_preface: true, no_tls_handshake: true, too_many_connections: true, too_many_streams: true, no_ping_answer: true };
    const { lines, logger } = capturedLogger();
    const report = refusalReport(logger, undefined, 60_000, () => true);
    for (const [reason, code] of Object.entries(callReasons)) report.callRefused(getProduct, code, reason as CallRefusal);
    for (const reason of Object.keys(connectionReasons)) report.connectionDropped(reason as ConnectionRefusal);
    report.stop();
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const metrics = readme.slice(readme.indexOf("### Metrics"), readme.indexOf("### The `concord` command")).replace(/\s+/g, " ");
    expect(lines).toHaveLength(Object.keys(callReasons).length + Object.keys(connectionReasons).length);
    for (const line of lines) expect(metrics, String(line.reason)).toContain(String(line.msg));
  });
});
