import { constants as http2Constants, type OutgoingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { Code, StatusError } from "../errors/index.js";
import { isStorageFailure, isStorageFull } from "../sql/storage-full.js";
import { decodeStatusDetails, encodeBadRequestStatus } from "./status-details.js";

/** What a caller is told when the service's database could not write for want of space. */
export const storageFullMessage = "the service's storage is full: its database could not write; try again later";
/** What a caller is told when the service's database met an I/O error of its storage. */
export const storageFailedMessage = "the service's storage failed: its database could not read or write; try again later";

/**
 * The status a caller sees for `err`, the one place a StatusError becomes a
 * gRPC status: its code (the same numbers), its message, and its field
 * violations as a google.rpc.BadRequest in `grpc-status-details-bin`. A
 * database's storage full (isStorageFull) is UNAVAILABLE, saying so: it
 * passes once space is freed, and the platform's client and consumers take
 * UNAVAILABLE as try-again-later. So is an I/O error of its storage
 * (isStorageFailure): the caller's request is not at fault, nor the
 * service's code, and the operator's repair brings it back. Any other error
 * is INTERNAL "internal error". None sends the error's own message.
 */
export function toGrpcError(err: unknown): Partial<ServiceError> {
  if (err instanceof StatusError) {
    const metadata = new Metadata();
    if (err.violations.length > 0) {
      metadata.set("grpc-status-details-bin", Buffer.from(encodeBadRequestStatus(err.code, err.message, err.violations)));
    }
    return { code: err.code as number as status, details: err.message, metadata };
  }
  if (isStorageFull(err)) return { code: status.UNAVAILABLE, details: storageFullMessage };
  if (isStorageFailure(err)) return { code: status.UNAVAILABLE, details: storageFailedMessage };
  return { code: status.INTERNAL, details: "internal error" };
}

/** The StatusError a client rejects with for a failed call: the server's code and message, its field violations decoded. */
export function fromGrpcError(err: ServiceError): StatusError {
  const raw = err.metadata?.get("grpc-status-details-bin")[0];
  const violations = raw instanceof Buffer ? decodeStatusDetails(raw).violations : [];
  const code = err.code in Code ? (err.code as number as Code) : Code.UNKNOWN;
  return new StatusError(lostConnection(err) ? Code.UNAVAILABLE : code, err.details || err.message, { violations, cause: err });
}

/**
 * Whether grpc-js reports INTERNAL for a call whose connection failed on the
 * client's side (the HTTP/2 session closed under it, as when the server's
 * process dies): no answer from the server, which is UNAVAILABLE by gRPC's
 * status code definitions, and what grpc-js itself reports when the same loss
 * shows as ECONNRESET.
 */
function lostConnection(err: ServiceError): boolean {
  return (err.code as number) === Code.INTERNAL && /^Received RST_STREAM with code \d+ triggered by internal client error/.test(err.details ?? "");
}

/**
 * Answers `stream` with a gRPC status alone (a trailers-only answer, which
 * ends its writable side), for calls refused at the HTTP/2 layer before
 * grpc-js has answered them. The stream stays open: see `endWithStatus`.
 */
export function respondWithStatus(stream: ServerHttp2Stream, code: status, message: string, headers: OutgoingHttpHeaders = {}): void {
  stream.respond(
    {
      [http2Constants.HTTP2_HEADER_STATUS]: 200,
      [http2Constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc+proto",
      ...headers,
      "grpc-status": String(code),
      "grpc-message": encodeURI(message),
    },
    { endStream: true },
  );
}

/**
 * Answers `stream` with a gRPC status alone, then closes it with RST_STREAM
 * NO_ERROR so that grpc-js, which has the call, reads nothing more of it and
 * runs no handler. Node sends the reset once the answer is queued, and it
 * can overtake the answer (over TLS, when the request's end arrives
 * meanwhile): a call grpc-js has not seen is better answered with
 * `respondWithStatus` and reset once the answer is out (unread-requests.ts).
 */
export function endWithStatus(stream: ServerHttp2Stream, code: status, message: string, headers: OutgoingHttpHeaders = {}): void {
  respondWithStatus(stream, code, message, headers);
  stream.close(http2Constants.NGHTTP2_NO_ERROR);
}
