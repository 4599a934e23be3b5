import { Metadata, type ServiceError } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { Code } from "../errors/index.js";
import { fromGrpcError } from "./grpc-status.js";
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

  it("refuses a token that is not as encodePageToken writes it: an id holding NUL, bytes that are not UTF-8, base64 padded", () => {
    const forged = [Buffer.from("after:a\u0000b"), Buffer.from([...Buffer.from("after:"), 0xff]), Buffer.from("after:")];
    for (const bad of [...forged.map((b) => b.toString("base64url")), `${encodePageToken("abcd")}=`, Buffer.from("after:abcd").toString("base64")]) {
      expect(() => decodePageToken(bad), bad).toThrow(/page_token/);
    }
    expect(decodePageToken(encodePageToken("0190a5b4-7c4e-7d3e-9f1a-000000000001"))).toBe("0190a5b4-7c4e-7d3e-9f1a-000000000001");
  });
});

describe("fromGrpcError", () => {
  const grpcError = (code: number, details: string) => Object.assign(new Error(`${code} ${details}`), { code, details, metadata: new Metadata() }) as ServiceError;

  it("reports a connection the client lost mid-call as UNAVAILABLE, and a server's INTERNAL as INTERNAL", () => {
    const lost = fromGrpcError(grpcError(13, "Received RST_STREAM with code 2 triggered by internal client error: Session closed with error code 2"));
    expect(lost.code).toBe(Code.UNAVAILABLE);
    expect(fromGrpcError(grpcError(13, "Received RST_STREAM with code 2 (Internal server error)")).code).toBe(Code.INTERNAL);
    expect(fromGrpcError(grpcError(13, "boom")).code).toBe(Code.INTERNAL);
  });
});
