/**
 * The error type of service failures, with no transport in it: domain code,
 * handlers and callers use it, and platform/grpc maps it to and from gRPC.
 */
export { Code, codeName, StatusError, type FieldViolation } from "./status-error.js";
export { causeChain, errorLogFields, messageWithCauses } from "./cause-chain.js";
export { unresolvedHost, unresolvedHostWait } from "./unresolved-host.js";
