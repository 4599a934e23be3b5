import { createHash } from "node:crypto";
import { type DescMessage, ScalarType } from "@bufbuild/protobuf";
import type { Metadata, ServerUnaryCall } from "@grpc/grpc-js";
import { Code, StatusError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import type { TransactionOptions } from "../sql/types.js";
import type { Principal } from "./access.js";
import { callTrace } from "./call-tracing.js";

/**
 * How long a statement of a call's transaction waits for a lock another
 * session holds (PostgreSQL) before the call fails ABORTED. Another call's or
 * a consumer batch's hold on a row lasts milliseconds; one held longer is an
 * open transaction or a migration, and a call waiting for it holds one of the
 * instance's pooled connections: thirty `AdjustStock` calls without a
 * deadline on a row a `psql` session held took all ten for the 30 s of the
 * statement timeout, and the instance's other calls waited for one.
 */
export const callLockWaitMs = 2_000;

/**
 * The options of a call's database transaction: given up, or its statement
 * cancelled, when the caller goes (`context.signal`, asked for only if it
 * has to wait); on PostgreSQL each statement waits at most callLockWaitMs
 * for a lock. `db.transaction(work, callTransaction(context))`.
 */
export function callTransaction(context: Pick<CallContext, "signal">): TransactionOptions {
  return { signal: () => context.signal, lockWaitMs: callLockWaitMs };
}

/** Request headers (gRPC metadata) as text: `get` gives the first value of a header, by its lower-case name. */
export interface CallHeaders {
  get(name: string): string | undefined;
}

/**
 * What a handler knows about the call it serves, without seeing grpc-js.
 * Pass it on to outgoing calls (`client.getProduct(req, { context })`) so
 * the deadline and cancellation follow the request through the system.
 */
export interface CallContext {
  /** Full method name, "/shop.products.v1.ProductService/GetProduct". */
  readonly method: string;
  /** When the caller gives up; undefined when it set no deadline. */
  readonly deadline: Date | undefined;
  /** Aborted, with a CANCELLED StatusError, when the caller cancels or the deadline passes. */
  readonly signal: AbortSignal;
  /** Request headers; binary (`-bin`) headers are left out. */
  readonly headers: CallHeaders;
  /**
   * W3C trace context of the call: its server span's while tracing is on,
   * otherwise the caller's, when it sent one. Events and calls made for
   * this call continue it (pass the context to `outbox.add` and to clients).
   */
  readonly traceparent: string | undefined;
  /** Vendor trace state that goes with `traceparent`. */
  readonly tracestate: string | undefined;
  /**
   * SHA-256 of the decoded request, re-encoded canonically with its request id
   * in lower case: tells a repeated request from a different one however
   * its sender ordered the fields (see requestDigester and platform/idempotency).
   */
  readonly requestDigest: Uint8Array;
  /** The service's logger, bound to this call's method. */
  readonly log: Logger;
  /**
   * Who made the call, from its verified bearer token. When `ownerOnly`, the
   * handler must keep to what `subject` owns (`mayAccessOwnedBy`) where the
   * contract could not name the owner in the request.
   */
  readonly principal: Principal;
}

const cancelReason = () => new StatusError(Code.CANCELLED, "the call was cancelled");

/** The field a request id travels in, by the contracts' convention (AIP-155), as the generated `<Service>Methods` name it. */
const requestIdFieldName = "request_id";

/**
 * The digest of a method's decoded requests: SHA-256 of the encoding the
 * generated code writes (fields in field-number order, default values left
 * out, repeated scalars packed), with the request id lower-cased as
 * RequestIds keys it. So two encodings of one message (another language's
 * SDK, a proxy, a request id in upper case) digest alike, and a request
 * that differs in any known field does not. Fields the contract does not
 * know are not in the decoded request (ts-proto drops them), so not in the
 * digest: a request that differs from an earlier one only in such fields is
 * the same request to this server, which ignores them. A client's own
 * encoding from the generated code is this canonical one, so digests stored
 * before this one was used (of the bytes as sent) still match its retries.
 * Worked out only when a handler reads it: only calls with a request id pay.
 */
export function requestDigester(input: DescMessage, serialize: (request: any) => Uint8Array): (request: unknown) => Uint8Array {
  const idField = input.fields.find((f) => f.name === requestIdFieldName && f.fieldKind === "scalar" && f.scalar === ScalarType.STRING);
  const prop = idField?.localName;
  return (request) => {
    let canonical = request;
    const id = prop === undefined ? undefined : (request as Record<string, unknown>)[prop];
    if (typeof id === "string") {
      const lower = id.toLowerCase();
      if (lower !== id) canonical = { ...(request as object), [prop!]: lower };
    }
    return createHash("sha256").update(serialize(canonical)).digest();
  };
}

/**
 * The CallContext of one grpc-js unary call. Most handlers read none of
 * deadline, traceparent, digest or signal, so each is worked out on first
 * use, and only a handler that reads `signal` pays for an AbortController
 * and a listener.
 */
export class UnaryCallContext implements CallContext {
  private controller: AbortController | undefined;
  private onCancelled: (() => void) | undefined;
  private done = false;
  private deadlineValue: Date | undefined | null = null;
  private traceparentValue: string | undefined | null = null;
  private tracestateValue: string | undefined | null = null;
  private digestValue: Uint8Array | undefined;
  private headersValue: CallHeaders | undefined;

  constructor(
    readonly method: string,
    private readonly call: ServerUnaryCall<Buffer, unknown>,
    readonly log: Logger,
    readonly principal: Principal,
    private readonly request: unknown,
    private readonly digestOf: (request: unknown) => Uint8Array,
  ) {}

  get headers(): CallHeaders {
    this.headersValue ??= new MetadataHeaders(this.call.metadata);
    return this.headersValue;
  }
  get deadline(): Date | undefined {
    if (this.deadlineValue === null) {
      const deadline = this.call.getDeadline();
      this.deadlineValue = deadline instanceof Date ? deadline : Number.isFinite(deadline) ? new Date(deadline) : undefined;
    }
    return this.deadlineValue;
  }
  get requestDigest(): Uint8Array {
    this.digestValue ??= this.digestOf(this.request);
    return this.digestValue;
  }
  get traceparent(): string | undefined {
    if (this.traceparentValue === null) this.traceparentValue = callTrace(this.call)?.traceparent ?? this.headers.get("traceparent");
    return this.traceparentValue;
  }
  get tracestate(): string | undefined {
    if (this.tracestateValue === null) {
      const traced = callTrace(this.call);
      this.tracestateValue = traced ? traced.tracestate : this.headers.get("tracestate");
    }
    return this.tracestateValue;
  }
  get signal(): AbortSignal {
    if (!this.controller) {
      const controller = (this.controller = new AbortController());
      // grpc-js also reports "cancelled" after a call completes; only a cancel before then aborts the signal.
      if (this.call.cancelled && !this.done) controller.abort(cancelReason());
      else if (!this.done) {
        this.onCancelled = () => {
          if (!this.done) controller.abort(cancelReason());
        };
        this.call.once("cancelled", this.onCancelled);
      }
    }
    return this.controller.signal;
  }
  /** The handler has settled: later cancellations are not the handler's concern. */
  end(): void {
    this.done = true;
    if (this.onCancelled) this.call.removeListener("cancelled", this.onCancelled);
  }
}

class MetadataHeaders implements CallHeaders {
  constructor(private readonly metadata: Metadata) {}
  get(name: string): string | undefined {
    const value = this.metadata.get(name.toLowerCase())[0];
    return typeof value === "string" ? value : undefined;
  }
}
