import { describe, expect, it } from "vitest";
import { decodedPayload } from "./event-watch.js";

describe("decodedPayload", () => {
  it("says how many bytes did not decode as the type their ce-type names, before the decoder's reason", () => {
    // Field 1 with wire type 7, which no protobuf writer makes.
    const garbage = Uint8Array.of(0x0f, 0x01, 0x02);
    expect(decodedPayload("shop.orders.v1.OrderPlaced", garbage)).toMatch(/^<3 bytes that do not decode as shop\.orders\.v1\.OrderPlaced: .+>$/);
  });

  it("shows an event of a type the contracts declare as JSON, and one of a type they do not by its size", () => {
    expect(decodedPayload("shop.orders.v1.OrderPlaced", new Uint8Array())).toEqual(expect.any(Object));
    expect(decodedPayload("shop.nothing.v1.Unknown", Uint8Array.of(1, 2))).toBe("<2 bytes of an unknown type>");
  });
});
