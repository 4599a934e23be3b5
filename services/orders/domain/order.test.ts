import { Code as status } from "../../../platform/errors/index.js";
import { describe, expect, it } from "vitest";
import { assertEditable, assertVersion, cancel, expirePending, type OrderRecord, pendingTimeoutReason, priceLines, settleReservation } from "./order.js";

const order = (overrides: Partial<OrderRecord> = {}): OrderRecord => ({
  id: "o-1",
  customerId: "c-1",
  state: "PENDING",
  lines: [{ productId: "p-1", productName: "Teapot", quantity: 2, unitPriceMinor: 1999 }],
  currency: "EUR",
  totalMinor: 3998,
  shippingAddress: { recipient: "A", line1: "B", line2: "", city: "C", postalCode: "D", countryCode: "DE" },
  rejectionReason: "",
  cancellationReason: "",
  linesVersion: 1,
  pendingSince: 0,
  version: 1,
  createdAt: 0,
  updatedAt: 0,
  ...overrides,
});
const codeOf = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return (err as { code: number }).code;
  }
  return undefined;
};

describe("priceLines", () => {
  it("prices each line at the quoted price and sums the total", () => {
    const quotes = new Map([
      ["p-1", { id: "p-1", name: "Teapot", priceMinor: 1999, currency: "EUR" }],
      ["p-2", { id: "p-2", name: "Cup", priceMinor: 450, currency: "EUR" }],
    ]);
    const priced = priceLines([{ productId: "p-1", quantity: 2 }, { productId: "p-2", quantity: 3 }], quotes);
    expect(priced).toEqual({
      currency: "EUR",
      totalMinor: 2 * 1999 + 3 * 450,
      lines: [
        { productId: "p-1", productName: "Teapot", quantity: 2, unitPriceMinor: 1999 },
        { productId: "p-2", productName: "Cup", quantity: 3, unitPriceMinor: 450 },
      ],
    });
  });

  it("refuses products in different currencies", () => {
    const quotes = new Map([
      ["p-1", { id: "p-1", name: "A", priceMinor: 1, currency: "EUR" }],
      ["p-2", { id: "p-2", name: "B", priceMinor: 1, currency: "USD" }],
    ]);
    expect(codeOf(() => priceLines([{ productId: "p-1", quantity: 1 }, { productId: "p-2", quantity: 1 }], quotes))).toBe(status.FAILED_PRECONDITION);
  });

  it("refuses a total that integers cannot hold exactly", () => {
    const quotes = new Map([["p-1", { id: "p-1", name: "A", priceMinor: 2 ** 52, currency: "EUR" }]]);
    expect(codeOf(() => priceLines([{ productId: "p-1", quantity: 1000 }], quotes))).toBe(status.FAILED_PRECONDITION);
  });
});

describe("order state transitions", () => {
  it("lets only PENDING orders change, at the version the caller saw", () => {
    expect(codeOf(() => assertEditable(order()))).toBeUndefined();
    for (const state of ["CONFIRMED", "REJECTED", "CANCELLED"] as const) expect(codeOf(() => assertEditable(order({ state })))).toBe(status.FAILED_PRECONDITION);
    expect(codeOf(() => assertVersion(order({ version: 3 }), 2))).toBe(status.ABORTED);
  });

  it("cancels PENDING and CONFIRMED orders, leaves CANCELLED ones, refuses REJECTED ones", () => {
    expect(cancel(order(), 5, "changed my mind")).toMatchObject({ state: "CANCELLED", cancellationReason: "changed my mind", version: 2, updatedAt: 5 });
    expect(cancel(order({ state: "CONFIRMED" }), 5, "")).toMatchObject({ state: "CANCELLED", cancellationReason: "" });
    expect(cancel(order({ state: "CANCELLED", cancellationReason: "first" }), 5, "second")).toBeNull();
    expect(codeOf(() => cancel(order({ state: "REJECTED" }), 5, ""))).toBe(status.FAILED_PRECONDITION);
  });

  it("confirms or rejects a PENDING order only for its current lines version", () => {
    expect(settleReservation(order(), 1, { reserved: true }, 9)).toMatchObject({ state: "CONFIRMED", version: 2 });
    expect(settleReservation(order(), 1, { reserved: false, reason: "not enough stock" }, 9)).toMatchObject({ state: "REJECTED", rejectionReason: "not enough stock" });
    expect(settleReservation(order({ linesVersion: 2 }), 1, { reserved: true }, 9)).toBeNull();
    expect(settleReservation(order({ state: "CANCELLED" }), 1, { reserved: true }, 9)).toBeNull();
    expect(settleReservation(order({ state: "CONFIRMED" }), 1, { reserved: false, reason: "x" }, 9)).toBeNull();
  });

  it("cancels a PENDING order once its time since it entered PENDING has run out, and no other order", () => {
    const minutes = (m: number) => m * 60_000;
    const placed = order({ pendingSince: minutes(10), createdAt: minutes(1), updatedAt: minutes(12) });
    expect(expirePending(placed, minutes(15), minutes(25) - 1)).toBeNull();
    expect(expirePending(placed, minutes(15), minutes(25))).toEqual({ ...placed, state: "CANCELLED", cancellationReason: pendingTimeoutReason(minutes(15)), version: 2, updatedAt: minutes(25) });
    // Its new lines are a new request: the time runs from them, not from when it was placed.
    expect(expirePending(order({ pendingSince: minutes(20), createdAt: 0 }), minutes(15), minutes(30))).toBeNull();
    for (const state of ["CONFIRMED", "REJECTED", "CANCELLED"] as const) expect(expirePending(order({ state }), minutes(15), minutes(60))).toBeNull();
  });

  it("says why an order timed out, with the timeout as the settings write it, within OrderCancelled's 200 characters", () => {
    expect(pendingTimeoutReason(15 * 60_000)).toBe("not confirmed within 15m: no answer about its stock came from the product service");
    expect(pendingTimeoutReason(90_000)).toContain("within 1m30s:");
    expect(pendingTimeoutReason(1_000)).toContain("within 1s:");
    expect(pendingTimeoutReason(250)).toContain("within 250ms:");
    expect(pendingTimeoutReason(26 * 3_600_000)).toContain("within 1d2h:");
    expect(pendingTimeoutReason(999 * 86_400_000 + 3_723_000).length).toBeLessThanOrEqual(200);
  });
});
