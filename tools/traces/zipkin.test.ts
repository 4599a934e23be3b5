/**
 * The trace viewer the README points to: `npx concord traces serve --zipkin`
 * as a user runs it (the pinned Zipkin fetched on first use, Java from the
 * machine), fed an OTLP/JSON export as the services' exporter sends it; the
 * trace then reads back from Zipkin's own API with its parent links, and
 * its web UI answers.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../test/support/nats-server.js";
import { type ReceivedSpan, spansOfExport } from "./otlp-receiver.js";
import { ensureZipkin, zipkinSpansOf } from "./zipkin.js";

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
const ns = (ms: number) => String(BigInt(1_764_650_000_000 + ms) * 1_000_000n);
const attr = (key: string, value: string) => ({ key, value: { stringValue: value } });
/** What @opentelemetry/exporter-trace-otlp-http posts: a CreateOrder and the event it wrote, then the consumer in another service. */
const exportBody = {
  resourceSpans: [
    {
      resource: { attributes: [attr("service.name", "orders")] },
      scopeSpans: [
        {
          scope: { name: "concord" },
          spans: [
            { traceId, spanId: "00f067aa0ba902b7", name: "shop.orders.v1.OrderService/CreateOrder", kind: 2, startTimeUnixNano: ns(0), endTimeUnixNano: ns(15), attributes: [attr("rpc.system", "grpc")], status: {} },
            { traceId, spanId: "00f067aa0ba902b8", parentSpanId: "00f067aa0ba902b7", name: "create shop.orders.v1.OrderPlaced", kind: 4, startTimeUnixNano: ns(6), endTimeUnixNano: ns(6), attributes: [attr("messaging.destination.name", "shop.orders.v1.order.o-1.placed")], status: {} },
          ],
        },
      ],
    },
    {
      resource: { attributes: [attr("service.name", "products")] },
      scopeSpans: [
        {
          scope: { name: "concord" },
          spans: [
            {
              traceId,
              spanId: "00f067aa0ba902b9",
              parentSpanId: "00f067aa0ba902b8",
              name: "process shop.orders.v1.OrderPlaced",
              kind: 5,
              startTimeUnixNano: ns(50),
              endTimeUnixNano: ns(95),
              attributes: [],
              status: { code: 2, message: "stock ran out" },
              links: [{ traceId, spanId: "00f067aa0ba902b8" }],
            },
          ],
        },
      ],
    },
  ],
};

describe("Zipkin as the trace viewer", () => {
  it("takes the received spans as Zipkin's JSON: microseconds, kinds, parents, tags, errors and links", () => {
    const spans: ReceivedSpan[] = spansOfExport(exportBody);
    expect(zipkinSpansOf(spans)).toEqual([
      { traceId, id: "00f067aa0ba902b7", name: "shop.orders.v1.OrderService/CreateOrder", kind: "SERVER", timestamp: 1_764_650_000_000_000, duration: 15_000, localEndpoint: { serviceName: "orders" }, tags: { "rpc.system": "grpc" } },
      {
        traceId,
        id: "00f067aa0ba902b8",
        parentId: "00f067aa0ba902b7",
        name: "create shop.orders.v1.OrderPlaced",
        kind: "PRODUCER",
        timestamp: 1_764_650_000_006_000,
        // A span of no length still shows.
        duration: 1,
        localEndpoint: { serviceName: "orders" },
        tags: { "messaging.destination.name": "shop.orders.v1.order.o-1.placed" },
      },
      {
        traceId,
        id: "00f067aa0ba902b9",
        parentId: "00f067aa0ba902b8",
        name: "process shop.orders.v1.OrderPlaced",
        kind: "CONSUMER",
        timestamp: 1_764_650_000_050_000,
        duration: 45_000,
        localEndpoint: { serviceName: "products" },
        tags: { error: "stock ran out", link: `${traceId}/00f067aa0ba902b8` },
      },
    ]);
  });

  describe("`npx concord traces serve --zipkin`, as the README runs it", () => {
    const dir = mkdtempSync(join(tmpdir(), "concord-zipkin-"));
    let serve: ReturnType<typeof spawn>;
    let output = "";
    let otlpPort: number;
    let zipkinPort: number;

    beforeAll(async () => {
      // The first fetch of the jar (about 135 MB) is what takes longest.
      await ensureZipkin();
      [otlpPort, zipkinPort] = [await freePort(), await freePort()];
      serve = spawn(process.execPath, ["tools/concord.mjs", "traces", "serve", "--port", String(otlpPort), "--file", join(dir, "traces.jsonl"), "--zipkin", "--zipkin-port", String(zipkinPort)], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      serve.stdout?.on("data", (d: Buffer) => (output += d.toString()));
      serve.stderr?.on("data", (d: Buffer) => (output += d.toString()));
      const deadline = Date.now() + 150_000;
      while (!output.includes("see the traces at")) {
        if (serve.exitCode !== null) throw new Error(`traces.ts serve exited: ${output}`);
        if (Date.now() > deadline) throw new Error(`Zipkin did not start within 150 s: ${output}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }, 300_000);
    afterAll(async () => {
      if (serve && serve.exitCode === null) {
        const exited = new Promise((r) => serve.once("exit", r));
        serve.kill("SIGINT");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    }, 30_000);

    it("shows a trace sent by the services' exporter in Zipkin, parents and services kept, and serves its UI", async () => {
      expect(output).toContain(`see the traces at http://127.0.0.1:${zipkinPort}/zipkin/`);
      const posted = await fetch(`http://127.0.0.1:${otlpPort}/v1/traces`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(exportBody) });
      expect(posted.status).toBe(200);
      let trace: Array<{ id: string; parentId?: string; localEndpoint: { serviceName: string }; kind?: string }> = [];
      const until = Date.now() + 20_000;
      while (trace.length < 3 && Date.now() < until) {
        const response = await fetch(`http://127.0.0.1:${zipkinPort}/api/v2/trace/${traceId}`);
        if (response.ok) trace = (await response.json()) as typeof trace;
        else await new Promise((r) => setTimeout(r, 200));
      }
      const byId = new Map(trace.map((s) => [s.id, s]));
      expect(byId.get("00f067aa0ba902b7")).toMatchObject({ kind: "SERVER", localEndpoint: { serviceName: "orders" } });
      expect(byId.get("00f067aa0ba902b8")).toMatchObject({ parentId: "00f067aa0ba902b7", kind: "PRODUCER" });
      expect(byId.get("00f067aa0ba902b9")).toMatchObject({ parentId: "00f067aa0ba902b8", kind: "CONSUMER", localEndpoint: { serviceName: "products" } });
      // The spans are in the file too, for `traces.ts show`.
      expect(readFileSync(join(dir, "traces.jsonl"), "utf8").trim().split("\n")).toHaveLength(3);
      const ui = await fetch(`http://127.0.0.1:${zipkinPort}/zipkin/`);
      expect(ui.status).toBe(200);
      expect(await ui.text()).toContain("<!DOCTYPE html>");
    });

    it("says under its command's name that Zipkin did not take the spans, once Zipkin is gone, and keeps them in the file", async () => {
      // Zipkin is the serve's child: killed, it refuses nothing and answers nothing.
      const children = readdirSync(`/proc/${serve.pid}/task`).flatMap((task) => readFileSync(`/proc/${serve.pid}/task/${task}/children`, "utf8").split(" ").filter(Boolean).map(Number));
      const java = children.find((pid) => readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "java");
      expect(java).toBeDefined();
      process.kill(java!, "SIGKILL");
      await expect.poll(() => fetch(`http://127.0.0.1:${zipkinPort}/health`).then(() => "answers", () => "gone"), { timeout: 20_000 }).toBe("gone");
      const spansIn = () => (existsSync(join(dir, "traces.jsonl")) ? readFileSync(join(dir, "traces.jsonl"), "utf8").trim().split("\n").filter(Boolean).length : 0);
      const before = spansIn();
      const posted = await fetch(`http://127.0.0.1:${otlpPort}/v1/traces`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(exportBody) });
      expect(posted.status).toBe(200);
      // It said "traces: fetch failed", not the command it was run as.
      await expect.poll(() => output, { timeout: 20_000 }).toContain("concord traces serve: fetch failed\n");
      expect(output).not.toMatch(/^traces: /m);
      expect(spansIn()).toBe(before + 3);
    });
  });
});
