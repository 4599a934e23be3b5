import type { Metadata, ServerUnaryCall } from "@grpc/grpc-js";
import type { Logger } from "../log/index.js";

/**
 * What a handler knows about the call it serves, without seeing grpc-js.
 * Pass it on to outgoing calls (`client.getProduct(req, context)`) so the
 * deadline and cancellation follow the request through the system.
 */
export interface CallContext {
  /** Full method name, "/shop.products.v1.ProductService/GetProduct". */
  readonly method: string;
  /** When the caller gives up; undefined when it set no deadline. */
  readonly deadline: Date | undefined;
  /** Aborted when the caller cancels or the deadline passes. */
  readonly signal: AbortSignal;
  /** Request metadata (headers). */
  readonly metadata: Metadata;
  /** W3C trace context of the call, when the caller sent one. */
  readonly traceparent: string | undefined;
  /** SHA-256 of the request as it was sent: tells a repeated request from a different one (see platform/idempotency). */
  readonly requestDigest: Uint8Array;
  /** The service's logger, bound to this call's method. */
  readonly log: Logger;
  /** The underlying call, for deadline propagation by the client factory only. */
  readonly parentCall: ServerUnaryCall<unknown, unknown> | undefined;
}
