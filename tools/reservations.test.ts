import { describe, expect, it } from "vitest";
import { cancelledLinesVersion } from "../services/products/domain/reservation.js";
import { reservationShown } from "./reservations.js";

describe("reservationShown", () => {
  const lines = [{ productId: "p-1", quantity: 2 }];

  it("shows a held or refused reservation's lines version as it is", () => {
    expect(reservationShown({ orderId: "o-1", linesVersion: 3, status: "reserved", lines })).toEqual({ status: "reserved", linesVersion: 3, lines });
    expect(reservationShown({ orderId: "o-1", linesVersion: 2, status: "failed", lines: [] })).toEqual({ status: "failed", linesVersion: 2, lines: [] });
  });

  it("says in words that a released one is given back for good, not the number stored to keep later requests out", () => {
    const shown = reservationShown({ orderId: "o-1", linesVersion: cancelledLinesVersion, status: "released", lines });
    expect(shown).toEqual({ status: "released", linesVersion: null, forGood: "given back for good: no lines version of this order is reserved again", lines });
    expect(JSON.stringify(shown)).not.toContain(String(cancelledLinesVersion));
  });
});
