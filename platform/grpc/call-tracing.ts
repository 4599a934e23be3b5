/*
 * Tracing of gRPC calls, kept to this one wrapper step: a server span per
 * call served, continuing the caller's W3C trace context (its sampled flag
 * included), and a client span per outgoing call, whose context goes out in
 * the `traceparent`/`tracestate` metadata. These are the platform's own
 * spans rather than @opentelemetry/instrumentation-grpc's: that one patches
 * grpc-js through require hooks, which do not see ESM imports, and costs the
 * patching whether tracing is on or off. With tracing off, servers get no
 * wrapper at all and clients pass the caller's trace context on unchanged.
 */
import { type Metadata, type sendUnaryData, type ServerUnaryCall, status } from "@grpc/grpc-js";
import { activeTracer, parentContext, SpanKind, spanError, traceHeadersOf, type TraceHeaders } from "../tracing/index.js";

type UnaryHandler = (call: ServerUnaryCall<any, any>, callback: sendUnaryData<any>) => void;

// The trace context each call being served continues (its server span's); read by its CallContext.
const callTraces = new WeakMap<object, TraceHeaders>();

/** The server span's trace context of `call` while tracing is on; undefined when it is off. */
export function callTrace(call: object): TraceHeaders | undefined {
  return callTraces.get(call);
}

/** The first text value of a metadata key. */
const first = (metadata: Metadata, key: string): string | undefined => {
  const value = metadata.get(key)[0];
  return typeof value === "string" ? value : undefined;
};

/** `rpc.*` attributes of a method path "/package.Service/Method". */
const rpcAttributes = (path: string) => {
  const slash = path.lastIndexOf("/");
  return { "rpc.system": "grpc", "rpc.service": path.slice(1, slash), "rpc.method": path.slice(slash + 1) };
};

// The semantic conventions mark a server span failed only for codes that say the server failed.
const serverFailures = new Set<number>([status.UNKNOWN, status.DEADLINE_EXCEEDED, status.UNIMPLEMENTED, status.INTERNAL, status.UNAVAILABLE, status.DATA_LOSS]);

/**
 * Wraps a grpc-js handler of `path` in a server span while tracing is on;
 * returns it unchanged when tracing is off.
 */
export function traceServerCalls(path: string, handler: UnaryHandler): UnaryHandler {
  const tracer = activeTracer();
  if (!tracer) return handler;
  const attributes = rpcAttributes(path);
  return (call, callback) => {
    const parent = parentContext({ traceparent: first(call.metadata, "traceparent"), tracestate: first(call.metadata, "tracestate") });
    const span = tracer.startSpan(path.slice(1), { kind: SpanKind.SERVER, attributes }, parent);
    callTraces.set(call, traceHeadersOf(span));
    handler(call, (err, ...rest) => {
      const code = err ? (err.code ?? status.UNKNOWN) : status.OK;
      span.setAttribute("rpc.grpc.status_code", code);
      if (serverFailures.has(code)) span.setStatus({ code: spanError, message: err?.details });
      span.end();
      callback(err, ...rest);
    });
  };
}

/**
 * Runs one outgoing call of `path` (all its attempts): sets the trace
 * metadata, from a client span child of `trace` while tracing is on, or to
 * `trace` itself when it is off. A `traceparent` already in `metadata`
 * (set by the caller) is the parent instead of `trace`.
 */
export async function traceClientCall<T>(path: string, trace: Partial<TraceHeaders> | undefined, metadata: Metadata, run: () => Promise<T>): Promise<T> {
  const given = first(metadata, "traceparent");
  const parent = given !== undefined ? { traceparent: given, tracestate: first(metadata, "tracestate") } : trace;
  const tracer = activeTracer();
  if (!tracer) {
    if (given === undefined && parent?.traceparent) {
      metadata.set("traceparent", parent.traceparent);
      if (parent.tracestate) metadata.set("tracestate", parent.tracestate);
    }
    return run();
  }
  const span = tracer.startSpan(path.slice(1), { kind: SpanKind.CLIENT, attributes: rpcAttributes(path) }, parentContext(parent));
  const headers = traceHeadersOf(span);
  metadata.set("traceparent", headers.traceparent);
  if (headers.tracestate) metadata.set("tracestate", headers.tracestate);
  else metadata.remove("tracestate");
  try {
    const result = await run();
    span.setAttribute("rpc.grpc.status_code", status.OK);
    return result;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    span.setAttribute("rpc.grpc.status_code", typeof code === "number" ? code : status.UNKNOWN);
    span.setStatus({ code: spanError, message: (err as Error).message });
    throw err;
  } finally {
    span.end();
  }
}
