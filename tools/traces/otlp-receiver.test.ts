import { once } from "node:events";
import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { formatTraces, type ReceivedSpan, startTraceReceiver } from "./otlp-receiver.js";

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
const span = (spanId: string, parentSpanId: string, name: string, extra: Partial<ReceivedSpan> = {}): ReceivedSpan => ({
  service: "orders",
  traceId,
  spanId,
  parentSpanId,
  name,
  kind: "CONSUMER",
  startNs: "1764650000000000000",
  endNs: "1764650000002000000",
  attributes: { "messaging.destination.name": "shop.products.v1.reservation.o-1.reserved" },
  status: { code: 0 },
  links: [],
  ...extra,
});

describe("formatTraces", () => {
  it("writes control characters in what it prints as \\u escapes: a failed span's status names the subject a publisher chose", () => {
    const subject = "shop.products.v1.reservation.\u001b[2J\u001b]0;owned\u0007.reserved";
    const out = formatTraces(
      [
        span("a".repeat(16), "", "process shop.products.v1.StockReserved", {
          attributes: { "messaging.destination.name": subject },
          status: { code: 2, message: `the shop.products.v1.StockReserved event came on ${subject}, but its fields make its subject another` },
        }),
        span("b".repeat(16), "a".repeat(16), "create \u009b31m", { service: "orders\r" }),
      ],
      "reservation",
    );
    // eslint-disable-next-line no-control-regex
    expect(out).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    expect(out).toContain("ERROR the shop.products.v1.StockReserved event came on shop.products.v1.reservation.\\u001b[2J\\u001b]0;owned\\u0007.reserved, but");
    expect(out).toContain("create \\u009b31m  [orders\\u000d CONSUMER]");
  });

  it("says of a failed consumer span whether its attempt was given back for a retry or dead-lettered, and which delivery it was", () => {
    const attempt = (spanId: string, deliveryCount: number, settlement: string) =>
      span(spanId, "c".repeat(16), "process shop.orders.v1.OrderPlaced", {
        attributes: { "messaging.destination.name": "shop.orders.v1.order.o-1.placed", "messaging.nats.delivery_count": deliveryCount, "concord.settlement": settlement },
        status: { code: 2, message: "reservations refused" },
      });
    const out = formatTraces([span("c".repeat(16), "", "create shop.orders.v1.OrderPlaced", { kind: "PRODUCER" }), attempt("d".repeat(16), 1, "retry"), attempt("e".repeat(16), 5, "deadLetter")], "o-1");
    expect(out).toContain("ERROR (delivery 1, retried) reservations refused");
    expect(out).toContain("ERROR (delivery 5, dead-lettered) reservations refused");
  });

  it("names the server a call went to on its client span and the peer it came from on its server span", () => {
    const call = span("f".repeat(16), "", "shop.products.v1.ProductService/GetProduct", { kind: "CLIENT", attributes: { "server.address": "products", "server.port": 50052 } });
    const served = span("0".repeat(16), "f".repeat(16), "shop.products.v1.ProductService/GetProduct", { service: "products", kind: "SERVER", attributes: { "network.peer.address": "::1", "network.peer.port": 41234 } });
    const out = formatTraces([call, served], traceId);
    expect(out).toContain("shop.products.v1.ProductService/GetProduct  [orders CLIENT]  +0.0 ms  2.0 ms  to products:50052");
    expect(out).toContain("shop.products.v1.ProductService/GetProduct  [products SERVER]  +0.0 ms  2.0 ms  from [::1]:41234");
    // A log line's span_id finds its trace as well as its trace_id does.
    expect(formatTraces([call, served], "0".repeat(16))).toBe(out);
  });

  it("prints each span once: one received twice, one naming itself its parent, and spans whose parents go round in a circle", () => {
    const root = span("a".repeat(16), "", "create shop.orders.v1.OrderPlaced", { kind: "PRODUCER" });
    const child = span("b".repeat(16), "a".repeat(16), "process shop.orders.v1.OrderPlaced");
    // A batch sent again, and a copy of the root naming itself its parent, which printed it under itself until the stack overflowed.
    const out = formatTraces([root, child, root, child, { ...root, parentSpanId: root.spanId }], "o-1");
    expect(out.split("\n")).toEqual([`trace ${traceId} (2 spans)`, "  create shop.orders.v1.OrderPlaced  [orders PRODUCER]  +0.0 ms  2.0 ms", "    process shop.orders.v1.OrderPlaced  [orders CONSUMER]  +0.0 ms  2.0 ms"]);
    const circle = formatTraces([span("c".repeat(16), "d".repeat(16), "one"), span("d".repeat(16), "c".repeat(16), "two")], "o-1");
    expect(circle).toContain("  one  [orders CONSUMER]");
    expect(circle).toContain("    two  [orders CONSUMER]");
  });
});

describe("startTraceReceiver", () => {
  const dir = tempDirForSuite("concord-otlp-");

  it("keeps the spans' file its owner's alone, one an earlier run left readable by others too: spans name callers' addresses and customers", async () => {
    const file = join(dir, "traces.jsonl");
    writeFileSync(file, "", { mode: 0o644 });
    chmodSync(file, 0o644);
    const receiver = await startTraceReceiver({ file });
    try {
      const attr = (key: string, stringValue: string) => ({ key, value: { stringValue } });
      const body = {
        resourceSpans: [
          {
            resource: { attributes: [attr("service.name", "orders")] },
            scopeSpans: [
              {
                spans: [
                  {
                    traceId,
                    spanId: "00f067aa0ba902b7",
                    name: "shop.orders.v1.OrderService/CreateOrder",
                    kind: 2,
                    startTimeUnixNano: "1764650000000000000",
                    endTimeUnixNano: "1764650000002000000",
                    attributes: [attr("network.peer.address", "192.0.2.7")],
                    status: { code: 2, message: 'c-1 may call CreateOrder only with customer_id "c-1", not "c-2"' },
                  },
                ],
              },
            ],
          },
        ],
      };
      const posted = await fetch(`${receiver.url}/v1/traces`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      expect(posted.status).toBe(200);
      expect(readFileSync(file, "utf8")).toContain("192.0.2.7");
      expect(statSync(file).mode & 0o777).toBe(0o600);
    } finally {
      await receiver.close();
    }
    const fresh = join(dir, "fresh.jsonl");
    await (await startTraceReceiver({ file: fresh })).close();
    expect(statSync(fresh).mode & 0o777).toBe(0o600);
  });

  const post = (url: string, body: Buffer | string, headers: Record<string, string> = {}) =>
    fetch(`${url}/v1/traces`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
  const oneSpan = (times: Record<string, unknown>) =>
    JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [{ traceId, spanId: "00f067aa0ba902b7", name: "x", kind: 2, ...times }] }] }] });

  it("refuses an export past its size, sent so or once inflated (a gzip bomb), with 413, and takes the next", async () => {
    const receiver = await startTraceReceiver({ maxBodyBytes: 64 * 1024 });
    try {
      // 40 KB of gzip that inflates to 40 MB: without the bound it was inflated whole, then failed to parse (400).
      const bomb = await post(receiver.url, gzipSync(Buffer.alloc(40 * 1024 * 1024, 0x20)), { "content-encoding": "gzip" });
      expect(bomb.status).toBe(413);
      expect(await bomb.json()).toEqual({ message: "an export may hold at most 65536 bytes, sent or inflated" });
      expect((await post(receiver.url, " ".repeat(65 * 1024))).status).toBe(413);
      const fine = await post(receiver.url, gzipSync(oneSpan({ startTimeUnixNano: "1764650000000000000", endTimeUnixNano: 1764650000 })), { "content-encoding": "gzip" });
      expect(fine.status).toBe(200);
      expect(receiver.spans().map((s) => [s.startNs, s.endNs])).toEqual([["1764650000000000000", "1764650000"]]);
    } finally {
      await receiver.close();
    }
  });

  it("holds at most 32 connections, each past them closing the oldest idle one, and takes an export while they are open", async () => {
    const receiver = await startTraceReceiver();
    const sockets: Socket[] = [];
    try {
      const { hostname, port } = new URL(receiver.url);
      const open = async () => {
        const socket = connect(Number(port), hostname).on("error", () => {});
        sockets.push(socket);
        await once(socket, "connect");
        return { socket, closed: once(socket, "close") };
      };
      // Each sends half a request and no more: without a bound every one of them was held, as many as came.
      const held = [];
      for (let i = 0; i < 34; i++) {
        const c = await open();
        c.socket.write("POST /v1/traces HTTP/1.1\r\nHost: x\r\n");
        held.push(c);
      }
      await Promise.all(held.slice(0, 2).map((c) => c.closed));
      const taken = await post(receiver.url, oneSpan({ startTimeUnixNano: "1", endTimeUnixNano: "2" }), { connection: "close" });
      expect(taken.status).toBe(200);
      expect(receiver.count()).toBe(1);
      // The export's connection made room too: the third oldest.
      await held[2]!.closed;
      expect(held.slice(3).every((c) => !c.socket.destroyed)).toBe(true);
    } finally {
      for (const socket of sockets) socket.destroy();
      await receiver.close();
    }
  });

  it("closes a connection that sends no whole export within its request timeout, 408 to it, where one sending its body slowly was held 300 s", { timeout: 15_000 }, async () => {
    const receiver = await startTraceReceiver({ requestTimeoutMs: 500 });
    try {
      const { hostname, port } = new URL(receiver.url);
      const socket = connect(Number(port), hostname).on("error", () => {});
      let answer = "";
      socket.on("data", (chunk) => (answer += String(chunk)));
      await once(socket, "connect");
      socket.write("POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{");
      await once(socket, "close");
      expect(answer).toMatch(/^HTTP\/1\.1 408/);
      expect((await post(receiver.url, oneSpan({ startTimeUnixNano: "1", endTimeUnixNano: "2" }))).status).toBe(200);
    } finally {
      await receiver.close();
    }
  });

  it("refuses a span whose times are not whole nanoseconds (400, naming the field), which traces show could not place", async () => {
    const receiver = await startTraceReceiver();
    try {
      const soon = await post(receiver.url, oneSpan({ startTimeUnixNano: "soon", endTimeUnixNano: "1" }));
      expect(soon.status).toBe(400);
      expect(await soon.json()).toEqual({ message: 'not OTLP/JSON: a span\'s startTimeUnixNano is not a whole number of nanoseconds: "soon"' });
      expect((await post(receiver.url, oneSpan({ startTimeUnixNano: "1", endTimeUnixNano: 1e21 }))).status).toBe(400);
      expect(receiver.count()).toBe(0);
    } finally {
      await receiver.close();
    }
  });
});
