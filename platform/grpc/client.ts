import { Client, credentials as grpcCredentials, Metadata, type CallOptions, type ChannelCredentials, type ServiceError } from "@grpc/grpc-js";
import type { RequestOf, ResponseOf, ServiceDefinition } from "./bind-service.js";
import type { CallContext } from "./call-context.js";


/**
 * Per-call settings. Passing the CallContext of the call being served
 * propagates its deadline and cancellation; `timeoutMs` bounds this call on
 * its own (the earlier of the two wins).
 */
export interface OutgoingCallOptions {
  readonly context?: CallContext;
  readonly timeoutMs?: number;
  readonly metadata?: Metadata;
}

/** A generated service's client with one promise-returning method per RPC. Rejects with grpc-js ServiceError. */
export type PromiseClient<D extends ServiceDefinition> = {
  [K in keyof D]: (request: RequestOf<D[K]>, options?: OutgoingCallOptions) => Promise<ResponseOf<D[K]>>;
} & { close(): void };

export interface ClientOptions {
  /** `host:port` of the service. */
  readonly address: string;
  /** Deadline of every call that sets none of its own. Default 5 s. */
  readonly defaultTimeoutMs?: number;
  /** Attempts for a call that fails with UNAVAILABLE (service config retryPolicy). Default 3; 1 turns retries off. */
  readonly maxAttempts?: number;
  /** TLS or mTLS credentials; plaintext by default. */
  readonly credentials?: ChannelCredentials;
}

/**
 * A client for a generated service. Every call has a deadline; UNAVAILABLE
 * is retried with backoff by grpc-js itself, through the service config, and
 * never once response headers have arrived. A server that went away is tried
 * again every 250 ms at most, so calls succeed again within a fraction of a
 * second of its return.
 */
export function createClient<D extends ServiceDefinition>(definition: D, options: ClientOptions): PromiseClient<D> {
  const known = new Set(["address", "defaultTimeoutMs", "maxAttempts", "credentials"]);
  for (const key of Object.keys(options)) if (!known.has(key)) throw new Error(`createClient: unknown option ${key}`);
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 5_000;
  const maxAttempts = options.maxAttempts ?? 3;
  if (!(defaultTimeoutMs > 0)) throw new Error(`createClient: defaultTimeoutMs must be positive, got ${defaultTimeoutMs}`);
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 5) throw new Error(`createClient: maxAttempts must be 1 to 5, got ${maxAttempts}`);

  const methods = Object.values(definition);
  const serviceName = methods[0]?.path.split("/")[1];
  if (!serviceName) throw new Error("createClient: the service definition has no methods");
  const serviceConfig = {
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: [
      {
        name: [{ service: serviceName }],
        ...(maxAttempts > 1 && {
          retryPolicy: { maxAttempts, initialBackoff: "0.05s", maxBackoff: "1s", backoffMultiplier: 2, retryableStatusCodes: ["UNAVAILABLE"] },
        }),
      },
    ],
  };
  const client = new Client(options.address, options.credentials ?? grpcCredentials.createInsecure(), {
    "grpc.service_config": JSON.stringify(serviceConfig),
    "grpc.enable_retries": maxAttempts > 1 ? 1 : 0,
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

  const out: Record<string, unknown> = { close: () => client.close() };
  for (const [name, method] of Object.entries(definition)) {
    out[name] = (request: unknown, call: OutgoingCallOptions = {}) =>
      new Promise((resolve, reject) => {
        const callOptions: CallOptions = { deadline: Date.now() + (call.timeoutMs ?? defaultTimeoutMs) };
        if (call.context?.parentCall) callOptions.parent = call.context.parentCall;
        const metadata = call.metadata ?? new Metadata();
        if (call.context?.traceparent && metadata.get("traceparent").length === 0) metadata.set("traceparent", call.context.traceparent);
        client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, metadata, callOptions, (err: ServiceError | null, res?: unknown) =>
          err ? reject(err) : resolve(res),
        );
      });
  }
  return out as PromiseClient<D>;
}
