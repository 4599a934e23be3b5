import { describe, expect, it } from "vitest";
import { cancelledLinesVersion, isNewReservationRequest, planReservation, shortfallReason } from "./reservation.js";

describe("planReservation", () => {
  const stock = new Map([["a", 5], ["b", 1]]);
  it("covers every line or reports each short one, unknown products included", () => {
    expect(planReservation([{ productId: "a", quantity: 5 }, { productId: "b", quantity: 1 }], (id) => stock.get(id))).toEqual({ ok: true });
    expect(planReservation([{ productId: "a", quantity: 6 }, { productId: "b", quantity: 1 }, { productId: "zz", quantity: 1 }], (id) => stock.get(id))).toEqual({
      ok: false,
      shortfalls: [
        { productId: "a", requested: 6, available: 5 },
        { productId: "zz", requested: 1, available: 0 },
      ],
    });
    expect(shortfallReason([{ productId: "a", requested: 6, available: 5 }])).toBe("not enough stock: a (asked 6, 5 available)");
  });
});

describe("isNewReservationRequest", () => {
  const record = (status: "reserved" | "failed" | "released", linesVersion: number) => ({ orderId: "o", status, linesVersion, lines: [] });
  it("accepts first requests and newer lines, and ignores duplicates, stale versions and cancelled orders", () => {
    expect(isNewReservationRequest(undefined, 1)).toBe(true);
    expect(isNewReservationRequest(record("reserved", 1), 2)).toBe(true);
    expect(isNewReservationRequest(record("reserved", 1), 1)).toBe(false);
    expect(isNewReservationRequest(record("failed", 2), 1)).toBe(false);
    expect(isNewReservationRequest(record("released", cancelledLinesVersion), 1)).toBe(false);
    expect(isNewReservationRequest(record("released", 1), 2)).toBe(false);
  });
});
