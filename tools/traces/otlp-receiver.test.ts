import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs";
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
});
