import { describe, expect, it } from "vitest";
import { OrderUpdated } from "../../gen/ts/shop/orders/v1/order_events_pb.js";
import { decodedPayload } from "../event-watch.js";
import { cutForReading, payloadPrinter } from "./readable-payload.js";

/** An OrderUpdated of near 1 MiB, as a contract-breaking publisher can send: its rejection reason is a megabyte. */
const hugeEvent = {
  stream: "SHOP_ORDERS",
  seq: 7,
  type: "shop.orders.v1.OrderUpdated",
  payload: decodedPayload(
    "shop.orders.v1.OrderUpdated",
    OrderUpdated.encode(OrderUpdated.fromPartial({ orderId: "o-1", order: { id: "o-1", rejectionReason: "a".repeat(1_000_000) }, changedFields: ["shipping_address"], linesVersion: 1 })).finish(),
  ),
};

describe("payloadPrinter", () => {
  it("cuts a near-1 MiB payload to a readable size on a terminal, saying once how to get it whole", () => {
    const notes: string[] = [];
    const print = payloadPrinter("concord events tail", { terminal: true, whole: false, note: (line) => notes.push(line) });
    const printed = JSON.stringify(print(hugeEvent));
    expect(printed.length).toBeLessThan(1_000);
    expect(printed).toContain(`"rejectionReason":"${"a".repeat(200)}… (+999800 characters)"`);
    expect(printed).toContain('"seq":7');
    print(hugeEvent);
    expect(notes).toEqual([
      "concord events tail: a payload is cut to a readable size (strings past 200 characters, lists past 20 items, each marked where cut); --full prints payloads whole, as does output to a file or pipe",
    ]);
  });

  it("prints it whole with --full, or to a file or pipe", () => {
    const notes: string[] = [];
    for (const options of [
      { terminal: true, whole: true },
      { terminal: false, whole: false },
    ]) {
      const printed = payloadPrinter("concord dlq show", { ...options, note: (line) => notes.push(line) })(hugeEvent);
      expect(JSON.stringify(printed).length).toBeGreaterThan(1_000_000);
    }
    expect(notes).toEqual([]);
  });

  it("cuts a dead letter's payloadBase64 too, and leaves a short payload as it is", () => {
    const notes: string[] = [];
    const print = payloadPrinter("concord dlq show", { terminal: true, whole: false, note: (line) => notes.push(line) });
    const short = { seq: 1, payload: { orderId: "o-1", lines: [{ productId: "p-1" }] }, payloadBase64: "AAAA" };
    expect(print(short)).toEqual(short);
    expect(notes).toEqual([]);
    const printed = print({ seq: 2, payloadBase64: "A".repeat(1_333_336) }) as { payloadBase64: string };
    expect(printed.payloadBase64).toBe(`${"A".repeat(200)}… (+1333136 characters)`);
    expect(notes).toHaveLength(1);
  });
});

describe("cutForReading", () => {
  it("keeps the first 20 items of a long list, nested ones too, and counts the rest", () => {
    const { value, cut } = cutForReading({ order: { lines: Array.from({ length: 450_000 }, (_, i) => ({ productId: `p-${i}` })) } });
    const lines = (value as { order: { lines: unknown[] } }).order.lines;
    expect(cut).toBe(true);
    expect(lines).toHaveLength(21);
    expect(lines[19]).toEqual({ productId: "p-19" });
    expect(lines[20]).toBe("… (+449980 items)");
  });

  it("leaves numbers, booleans, null and short strings as they are", () => {
    const payload = { a: 1, b: true, c: null, d: "x".repeat(200), e: [1, 2, 3] };
    expect(cutForReading(payload)).toEqual({ value: payload, cut: false });
  });
});
