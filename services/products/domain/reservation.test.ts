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

  it("keeps the reason within its contract's 1000 characters however many lines fall short", () => {
    const many = Array.from({ length: 50 }, (_, i) => ({ productId: `01890a5d-ac96-774b-bcce-b302099a${String(8000 + i)}`, requested: 1000, available: 999_999_999 }));
    const reason = shortfallReason(many);
    expect(reason.length).toBeLessThanOrEqual(1000);
    expect(reason).toMatch(/^not enough stock: 01890a5d-.* and \d+ more$/);
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
