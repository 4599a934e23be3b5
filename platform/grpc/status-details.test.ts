import { Metadata, type ServiceError } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { Code } from "../errors/index.js";
import { fromGrpcError } from "./grpc-status.js";
import { decodeStatusDetails, encodeBadRequestStatus } from "./status-details.js";

describe("grpc-status-details-bin", () => {
  it("round-trips a google.rpc.Status with a BadRequest detail", () => {
    const violations = [{ field: "lines[0].quantity", description: "must be greater than 0" }, { field: "customer_id", description: "é ✓" }];
    expect(decodeStatusDetails(encodeBadRequestStatus(3, "invalid request", violations))).toEqual({ code: 3, message: "invalid request", violations });
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
