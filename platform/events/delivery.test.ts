import { describe, expect, it } from "vitest";
import { headerValue } from "./delivery.js";

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
