export { bindService, requestLimit, type BoundService, type ServiceDefinition, type ServiceImpl, type UnaryMethodDefinition } from "./bind-service.js";
export type { CallContext, CallHeaders } from "./call-context.js";
export { createClient, type ClientOptions, type MethodTraits, type OutgoingCallOptions, type PromiseClient } from "./client.js";
export { createGrpcServer, type GrpcServer, type GrpcServerOptions } from "./server.js";
export { createAdmission, type Admission, type AdmissionOptions } from "./admission.js";
export { fromGrpcError, toGrpcError } from "./grpc-status.js";
export { decodeStatusDetails, encodeBadRequestStatus, type DecodedStatus } from "./status-details.js";
export { decodePageToken, encodePageToken, pageSizeOf } from "./page-token.js";
export { checkHealth, waitForServing } from "./health-client.js";
