import { Client, credentials as grpcCredentials, Metadata, type CallOptions, type ChannelCredentials, type ServiceError } from "@grpc/grpc-js";
import { Code, StatusError } from "../errors/index.js";
import type { RequestOf, ResponseOf, ServiceDefinition } from "./bind-service.js";
import type { CallContext } from "./call-context.js";
import { clientSpanAttributes, traceClientCall } from "./call-tracing.js";
import { fromGrpcError } from "./grpc-status.js";
import { checkOptions, positiveInteger } from "../options/index.js";
import { addressListFamily } from "../config/index.js";


/**
 * Per-call settings. Passing the CallContext of the call being served
 * propagates its deadline, cancellation and trace context; `timeoutMs`
 * bounds this call on its own (the earlier deadline wins).
 */
export interface OutgoingCallOptions {
  readonly context?: Pick<CallContext, "deadline" | "signal" | "traceparent"> & Partial<Pick<CallContext, "tracestate">>;
  readonly timeoutMs?: number;
  /** Request headers (gRPC metadata), text values only. */
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * A generated service's client with one promise-returning method per RPC.
 * A failed call rejects with a StatusError: the server's code and message,
 * and its field violations decoded (`err.violations`).
 */
export type PromiseClient<D extends ServiceDefinition> = {
  [K in keyof D]: (request: RequestOf<D[K]>, options?: OutgoingCallOptions) => Promise<ResponseOf<D[K]>>;
} & { close(): void };

/** What the runtime knows of a method: the generated `<Service>Methods` (in `<file>_rpc.ts` under gen/ts) holds one per method. */
export interface MethodTraits {
  /** Declared NO_SIDE_EFFECTS or IDEMPOTENT in the contract (`idempotency_level`): repeating it is harmless. */
  readonly idempotent: boolean;
  /** The request property that carries a request id (AIP-155); a call that sets it may be repeated. */
  readonly requestIdField?: string;
}

export interface ClientOptions {
  /**
   * Where the service listens: `host:port`; several instances as a comma-separated
   * list of IPv4 (or IPv6) `host:port`s, or one `dns:///name:port` resolving to
   * them all. Calls go round robin over the instances that are up.
   */
  readonly address: string;
  /** Deadline of every call that sets none of its own. Default 5 s. */
  readonly defaultTimeoutMs?: number;
  /**
   * Attempts for a call that fails with UNAVAILABLE, when repeating it is
   * safe (see `methods`). Default 3; 1 turns retries off.
   */
  readonly maxAttempts?: number;
  /**
   * The service's method traits, the generated `<Service>Methods`. A call
   * that fails with UNAVAILABLE is tried again only when its method is
   * idempotent or the request carries a request id: anything else may have
   * taken effect before the connection failed. Without traits, only calls
   * whose request has a non-empty `requestId` are tried again.
   */
  readonly methods?: Readonly<Record<string, MethodTraits>>;
  /** TLS or mTLS credentials (`clientTlsCredentials`); plaintext when not given. */
  readonly credentials?: ChannelCredentials;
  /**
   * The bearer token sent with every call (`authorization: Bearer ...`),
   * asked for before each call so that it can be renewed before it expires.
   * A call whose headers carry an authorization of their own keeps that one.
   */
  readonly token?: () => string | Promise<string>;
  /**
   * Calls this client has in flight at most, over all its addresses; one
   * more fails at once with RESOURCE_EXHAUSTED, nothing sent, and may be
   * tried again shortly. Default 256 for each address given (a `dns:///`
   * name counts as one). A server takes as many streams on one connection
   * as its admission control holds calls, plus 64 (704 by default), and an
   * HTTP/2 client keeps the rest in a queue the server cannot see, where
   * they wait, however long, until their deadline: offered three times its
   * capacity, a quarter to a third of the order service's callers waited
   * 10 s to fail. Kept below that, the excess fails in a millisecond and
   * the server serves at its capacity what it was sent. Clients of one process with
   * the same address and options share a connection, so each one's bound
   * counts toward that connection's streams.
   */
  readonly maxInFlight?: number;
}

/** The comma-separated parts of a client address, trimmed (a DNS name is one part). */
const addressParts = (address: string): string[] =>
  address
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "");

/**
 * The grpc-js target for an address: one `host:port` as it is, several
 * comma-separated IP `host:port`s as an `ipv4:`/`ipv6:` list (round robin
 * over them), `dns:///name:port` as it is (round robin over what it
 * resolves to). Throws for several addresses that are not all IPs of one
 * family: a DNS name that resolves to all of them does that job.
 */
export function channelTarget(address: string): string {
  const parts = addressParts(address);
  if (parts.length <= 1) return address;
  const family = addressListFamily(parts);
  if (family !== undefined) return `${family}:${parts.join(",")}`;
  throw new Error(`createClient: several addresses must all be IPv4 or all IPv6 host:port (got ${address}); for host names use one DNS name that resolves to every instance, dns:///name:port`);
}

/** Pause before retry n (1-based): 50 ms doubling up to 1 s, with jitter. */
const retryDelayMs = (retry: number): number => Math.min(1_000, 50 * 2 ** (retry - 1)) * (0.5 + Math.random() / 2);

/**
 * A client for a generated service. Every call has a deadline. A call that
 * fails with UNAVAILABLE is tried again with backoff, within its deadline,
 * when that is safe: its method is idempotent by its contract, or its
 * request carries a request id the server deduplicates (see
 * `ClientOptions.methods`). A server that went away is tried again every
 * 250 ms at most, so calls succeed again within a fraction of a second of
 * its return.
 */
export function createClient<D extends ServiceDefinition>(definition: D, options: ClientOptions): PromiseClient<D> {
  checkOptions("createClient", options, ["address", "defaultTimeoutMs", "maxAttempts", "credentials", "methods", "token", "maxInFlight"]);
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 5_000;
  const maxAttempts = options.maxAttempts ?? 3;
  const maxInFlight = positiveInteger("createClient", "maxInFlight", options.maxInFlight, 256 * Math.max(1, addressParts(options.address).length));
  if (!(defaultTimeoutMs > 0)) throw new Error(`createClient: defaultTimeoutMs must be positive, got ${defaultTimeoutMs}`);
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 5) throw new Error(`createClient: maxAttempts must be 1 to 5, got ${maxAttempts}`);

  const methods = Object.values(definition);
  const serviceName = methods[0]?.path.split("/")[1];
  if (!serviceName) throw new Error("createClient: the service definition has no methods");
  const serviceConfig = { loadBalancingConfig: [{ round_robin: {} }] };
  const client = new Client(channelTarget(options.address), options.credentials ?? grpcCredentials.createInsecure(), {
    "grpc.service_config": JSON.stringify(serviceConfig),
    // Retries are decided per call below, where the request is known.
    "grpc.enable_retries": 0,
    "grpc.keepalive_time_ms": 30_000,
    // grpc-js waits 1 s, then 1.6 times longer each time, up to 2 minutes, between attempts to reach
    // a server that is away; calls fail with UNAVAILABLE in between, so a client could keep failing
    // for seconds after its server is back. Services restart in seconds: keep trying every 100 to 250 ms.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 250,
    // A restarted server may come back under a new address: look a host name up again within a
    // second of a failure (by default at most every 30 s).
    "grpc.dns_min_time_between_resolutions_ms": 1_000,
    // Nothing serves channelz here; its per-call bookkeeping would be pure cost.
    "grpc.enable_channelz": 0,
  });

  let inFlight = 0;
  const out: Record<string, unknown> = { close: () => client.close() };
  for (const [name, method] of Object.entries(definition)) {
    const traits = options.methods?.[name];
    const spanAttributes = clientSpanAttributes(method.path, options.address);
    const requestIdField = traits?.requestIdField ?? "requestId";
    const repeatable = (request: unknown): boolean => {
      if (traits?.idempotent) return true;
      const id = (request as Record<string, unknown> | null)?.[requestIdField];
      return typeof id === "string" && id !== "";
    };
    const attempt = (request: unknown, metadata: Metadata, callOptions: CallOptions, signal: AbortSignal | undefined) =>
      new Promise((resolve, reject) => {
        if (signal?.aborted) return reject(new StatusError(Code.CANCELLED, "the call was cancelled before it was made", { cause: signal.reason }));
        if (inFlight >= maxInFlight) return reject(new StatusError(Code.RESOURCE_EXHAUSTED, `this client already has ${inFlight} calls in flight to ${serviceName}, its limit (maxInFlight); nothing was sent, try again shortly`));
        inFlight++;
        const onAbort = () => call.cancel();
        let call: ReturnType<Client["makeUnaryRequest"]>;
        try {
          call = client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, metadata, callOptions, (err: ServiceError | null, res?: unknown) => {
            inFlight--;
            signal?.removeEventListener("abort", onAbort);
            if (err) reject(fromGrpcError(err));
            else resolve(res);
          });
        } catch (err) {
          inFlight--;
          throw err;
        }
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    out[name] = async (request: unknown, call: OutgoingCallOptions = {}) => {
      const own = Date.now() + (call.timeoutMs ?? defaultTimeoutMs);
      const inherited = call.context?.deadline?.getTime();
      const deadline = inherited !== undefined && inherited < own ? inherited : own;
      const metadata = new Metadata();
      for (const [key, value] of Object.entries(call.headers ?? {})) metadata.set(key, value);
      if (options.token && metadata.get("authorization").length === 0) metadata.set("authorization", `Bearer ${await options.token()}`);
      const signal = call.context?.signal;
      const attempts = repeatable(request) ? maxAttempts : 1;
      return traceClientCall(method.path, call.context, metadata, async () => {
        for (let n = 1; ; n++) {
          try {
            return await attempt(request, metadata, { deadline }, signal);
          } catch (err) {
            const pause = retryDelayMs(n);
            if (n >= attempts || (err as StatusError).code !== Code.UNAVAILABLE || Date.now() + pause >= deadline || signal?.aborted) throw err;
            await new Promise((r) => setTimeout(r, pause));
          }
        }
      }, spanAttributes);
    };
  }
  return out as PromiseClient<D>;
}
