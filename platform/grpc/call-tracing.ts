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
import { isIP } from "node:net";
import type { Attributes, Span } from "@opentelemetry/api";
import { type Metadata, type sendUnaryData, type ServerUnaryCall, status } from "@grpc/grpc-js";
import { activeTracer, parentContext, SpanKind, spanError, traceHeadersOf, type TraceHeaders } from "../tracing/index.js";
import { http2StreamOf } from "./grpc-internals.js";

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

/** A peer's address and port, as a server span's network.peer.* attributes give them. */
interface Peer {
  readonly address: string;
  readonly port: number | undefined;
}

// Each connection's peer, read once: a call's session socket is a Proxy, read on each call of a connection otherwise.
const peers = new WeakMap<object, Peer | null>();

/** `"10.0.0.7:54012"`, `"::1:54012"` (grpc-js writes an IPv6 peer without brackets) or a socket path, as a Peer. */
function peerOf(text: string): Peer | undefined {
  const colon = text.lastIndexOf(":");
  const port = colon > 0 && /^\d{1,5}$/.test(text.slice(colon + 1)) ? Number(text.slice(colon + 1)) : undefined;
  const address = port === undefined ? text : text.slice(0, colon);
  return address === "" || address === "unknown" ? undefined : { address, port };
}

/** The peer that made `call`: its connection's remote address and port, or what grpc-js's getPeer says when its stream is out of reach. */
function callPeer(call: ServerUnaryCall<unknown, unknown>): Peer | undefined {
  const session = http2StreamOf(call)?.session;
  if (!session) return peerOf(call.getPeer());
  let peer = peers.get(session);
  if (peer === undefined) {
    const socket = session.socket;
    peer = socket?.remoteAddress ? { address: socket.remoteAddress, port: socket.remotePort } : null;
    // A socket not connected yet says nothing now; read again at the next call.
    if (peer) peers.set(session, peer);
  }
  return peer ?? undefined;
}

/** Sets `network.peer.address` and `network.peer.port` (RPC conventions, server spans) on `span`. */
function describePeer(span: Span, peer: Peer | undefined): void {
  if (!peer) return;
  span.setAttribute("network.peer.address", peer.address);
  if (peer.port !== undefined) span.setAttribute("network.peer.port", peer.port);
}

/**
 * Wraps a grpc-js handler of `path` in a server span while tracing is on;
 * returns it unchanged when tracing is off. The span names the method
 * (`rpc.*`) and the peer that called (`network.peer.address`/`.port`).
 */
export function traceServerCalls(path: string, handler: UnaryHandler): UnaryHandler {
  const tracer = activeTracer();
  if (!tracer) return handler;
  const attributes = rpcAttributes(path);
  return (call, callback) => {
    const parent = parentContext({ traceparent: first(call.metadata, "traceparent"), tracestate: first(call.metadata, "tracestate") });
    const span = tracer.startSpan(path.slice(1), { kind: SpanKind.SERVER, attributes }, parent);
    if (span.isRecording()) describePeer(span, callPeer(call));
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

/** grpc-js's port for a target that names none. */
const defaultGrpcPort = 443;

/**
 * The `server.address` and `server.port` of a client span (RPC
 * conventions) for a client of `address` (ClientOptions.address): the host
 * and port it names, `dns:///` or another resolver's scheme left off, a
 * socket's path with no port, 443 where it names no port (as grpc-js takes
 * it). None for a list of several addresses: its calls go round robin, so
 * no one of them is the call's server.
 */
export function serverAttributes(address: string): Attributes {
  const target = address.trim();
  if (target.includes(",")) return {};
  const unix = /^unix:(?:\/\/)?(.+)$/.exec(target);
  if (unix) return { "server.address": unix[1] };
  // dns:///host:port, dns://resolver/host:port, dns:host:port, ipv4:host:port, ipv6:[host]:port.
  const hostPort = target.replace(/^(?:dns|ipv4|ipv6):(?:\/\/[^/]*\/)?/, "");
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(hostPort);
  const plain = bracketed ? undefined : /^([^:]+)(?::(\d{1,5}))?$/.exec(hostPort);
  // An IPv6 address without brackets (it can carry no port) is all address.
  const [host, port] = bracketed ? [bracketed[1], bracketed[2]] : plain ? [plain[1], plain[2]] : isIP(hostPort) === 6 ? [hostPort, undefined] : [undefined, undefined];
  if (host === undefined || host === "") return {};
  return { "server.address": host, "server.port": port === undefined ? defaultGrpcPort : Number(port) };
}

/**
 * The attributes of the client spans of calls of `path` by a client of
 * `address`: `rpc.*` and serverAttributes. Worked out once per method:
 * merged at each call, they more than doubled the cost of a client span.
 */
export function clientSpanAttributes(path: string, address: string): Attributes {
  return { ...rpcAttributes(path), ...serverAttributes(address) };
}

/**
 * Runs one outgoing call of `path` (all its attempts): sets the trace
 * metadata, from a client span child of `trace` while tracing is on, or to
 * `trace` itself when it is off. A `traceparent` already in `metadata`
 * (set by the caller) is the parent instead of `trace`. `attributes` are
 * the span's (clientSpanAttributes; `rpc.*` alone by default).
 */
export async function traceClientCall<T>(path: string, trace: Partial<TraceHeaders> | undefined, metadata: Metadata, run: () => Promise<T>, attributes: Attributes = rpcAttributes(path)): Promise<T> {
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
  const span = tracer.startSpan(path.slice(1), { kind: SpanKind.CLIENT, attributes }, parentContext(parent));
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
