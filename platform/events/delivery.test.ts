import { describe, expect, it } from "vitest";
import { headerValue, repeatedAttribute, type Delivery } from "./delivery.js";

describe("headerValue", () => {
  it("finds a header by its name in any case, as another publisher may have capitalised it, and nothing for a name that is not there", () => {
    const headers = { "ce-id": "e-1", "Ce-Type": "shop.orders.v1.OrderPlaced", "Nats-Msg-Id": "e-1", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" };
    expect(headerValue(headers, "ce-id")).toBe("e-1");
    expect(headerValue(headers, "ce-type")).toBe("shop.orders.v1.OrderPlaced");
    expect(headerValue(headers, "nats-msg-id")).toBe("e-1");
    expect(headerValue(headers, "TRACEPARENT")).toBe(headers.traceparent);
    expect(headerValue(headers, "tracestate")).toBeUndefined();
    expect(headerValue(headers, "ce-traceparent")).toBeUndefined();
    expect(headerValue({}, "ce-id")).toBeUndefined();
  });
});

describe("repeatedAttribute", () => {
  const delivery = (headers: Record<string, string>) => ({ headers }) as unknown as Delivery;

  it("names a CloudEvents attribute given under two spellings with two values, and takes two spellings with one value, or other headers spelled so", () => {
    expect(repeatedAttribute(delivery({ "ce-type": "a.B", "CE-Type": "a.C" }))).toBe("CE-Type");
    expect(repeatedAttribute(delivery({ "CE-Type": "a.C", "ce-type": "a.B" }))).toBe("CE-Type");
    expect(repeatedAttribute(delivery({ "Ce-Type": "a.B", "CE-TYPE": "a.B", "ce-type": "a.C" }))).toBe("Ce-Type");
    expect(repeatedAttribute(delivery({ "ce-type": "a.B", "CE-Type": "a.B", "ce-id": "e-1" }))).toBeUndefined();
    expect(repeatedAttribute(delivery({ "ce-type": "a.B", "CE-Id": "e-1", "ce-source": "s" }))).toBeUndefined();
    expect(repeatedAttribute(delivery({ "Nats-Msg-Id": "e-1", "nats-msg-id": "e-2", "ce-id": "e-1" }))).toBeUndefined();
    // Only A to Z count as another spelling, as a reader that ignores ASCII case reads them.
    expect(repeatedAttribute(delivery({ "ce-é": "1", "CE-É": "2" }))).toBeUndefined();
  });

  it("answers for thousands of attribute-like headers in mixed case at once (a 60 KB header block held the event loop for seconds)", () => {
    const headers: Record<string, string> = { "ce-type": "a.B" };
    for (let i = 0; i < 6_000; i++) headers[`CE-A${String(i).padStart(4, "0")}`] = String(i);
    const started = performance.now();
    expect(repeatedAttribute(delivery(headers))).toBeUndefined();
    headers["ce-a0042"] = "other";
    expect(repeatedAttribute(delivery(headers))).toBe("CE-A0042");
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});
