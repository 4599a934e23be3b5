import { describe, expect, it } from "vitest";
import { decodePageToken, encodePageToken } from "./page-token.js";
import { decodeStatusDetails, encodeBadRequestStatus } from "./status-details.js";

describe("grpc-status-details-bin", () => {
  it("round-trips a google.rpc.Status with a BadRequest detail", () => {
    const violations = [{ field: "lines[0].quantity", description: "must be greater than 0" }, { field: "customer_id", description: "é ✓" }];
    expect(decodeStatusDetails(encodeBadRequestStatus(3, "invalid request", violations))).toEqual({ code: 3, message: "invalid request", violations });
  });
});

describe("page tokens", () => {
  it("round-trip an id and refuse foreign tokens", () => {
    expect(decodePageToken(encodePageToken("abc"))).toBe("abc");
    expect(decodePageToken("")).toBe("");
    for (const bad of ["abc", "!!", Buffer.from("before:x").toString("base64url")]) expect(() => decodePageToken(bad)).toThrow(/page_token/);
  });
});
