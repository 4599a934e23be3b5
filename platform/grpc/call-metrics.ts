import type { ServerUnaryCall, sendUnaryData } from "@grpc/grpc-js";
import { Counter, Gauge, type Registry } from "prom-client";
import { Code, codeName } from "../errors/index.js";
import { counterFamily, type CounterChild, histogramFamily, type HistogramChild } from "../metrics/index.js";
import type { CallRefusal, RefusalObserver } from "./refusals.js";

/** Hears how each call ended: its method (`/package.Service/Method`), status code and duration. */
export interface CallObserver {
  observe(path: string, code: Code, seconds: number): void;
}

type UnaryHandler = (call: ServerUnaryCall<any, any>, callback: sendUnaryData<any>) => void;

/**
 * The step around a bound method that times it and tells `observer` the
 * status it ended with, whatever ended it (a refused request, the
 * implementation, UNAVAILABLE while not serving). Without an observer the
 * handler is returned as it is.
 */
export function observeCalls(path: string, handler: UnaryHandler, observer: CallObserver | undefined): UnaryHandler {
  if (!observer) return handler;
  return (call, callback) => {
    const started = performance.now();
    handler(call, (err, value, ...rest) => {
      const code = err ? ((err as { code?: number }).code ?? Code.UNKNOWN) : Code.OK;
      observer.observe(path, code as Code, (performance.now() - started) / 1000);
      callback(err, value, ...rest);
    });
  };
}

/** Buckets for calls that take from a tenth of a millisecond to seconds. */
const callBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * A CallObserver that counts calls by method and code
 * (`grpc_server_handled_total`) and records their latency by method
 * (`grpc_server_handling_seconds`), in `registry`. Names and labels follow
 * go-grpc-prometheus, so existing dashboards read them.
 */
export function grpcCallMetrics(registry: Registry): CallObserver {
  const handled = counterFamily(registry, {
    name: "grpc_server_handled_total",
    help: "gRPC calls completed on the server, by method and status code",
    labelNames: ["grpc_service", "grpc_method", "grpc_code"],
  });
  const latency = histogramFamily(registry, {
    name: "grpc_server_handling_seconds",
    help: "Time from a gRPC call's arrival to its response, by method",
    labelNames: ["grpc_service", "grpc_method"],
    buckets: callBuckets,
  });
  // The counters of each method, found once: the hot path does no label lookups.
  type Method = { readonly service: string; readonly name: string; readonly latency: HistogramChild; readonly codes: Map<Code, CounterChild> };
  const byPath = new Map<string, Method>();
  const methodOf = (path: string): Method => {
    let method = byPath.get(path);
    if (!method) {
      const [, service = "", name = path] = /^\/([^/]+)\/([^/]+)$/.exec(path) ?? [];
      method = { service, name, latency: latency({ grpc_service: service, grpc_method: name }), codes: new Map() };
      byPath.set(path, method);
    }
    return method;
  };
  return {
    observe(path, code, seconds) {
      const method = methodOf(path);
      let count = method.codes.get(code);
      if (!count) {
        count = handled({ grpc_service: method.service, grpc_method: method.name, grpc_code: codeName(code) });
        method.codes.set(code, count);
      }
      count.inc();
      method.latency.observe(seconds);
    },
  };
}

/** A method path's labels as go-grpc-prometheus has them; `unknown` for a method the server does not serve (the caller's made-up names are no labels). */
function methodLabels(path: string | undefined): { grpc_service: string; grpc_method: string } {
  const [, service, name] = (path && /^\/([^/]+)\/([^/]+)$/.exec(path)) || [];
  return service && name ? { grpc_service: service, grpc_method: name } : { grpc_service: "unknown", grpc_method: "unknown" };
}

/**
 * A RefusalObserver that counts what the server refuses before any handler
 * runs, in `registry`: `concord_grpc_refused_total` (calls, by method, code
 * and reason; apart from `grpc_server_handled_total`, which counts the calls
 * that reached their method's handler step),
 * `concord_grpc_connections_dropped_total` (by reason) and
 * `concord_grpc_timeouts_clamped_total` (by method). Only refusals pay for
 * the label lookups.
 */
export function grpcRefusalMetrics(registry: Registry): RefusalObserver {
  const refused = counterFamily(registry, {
    name: "concord_grpc_refused_total",
    help: "gRPC calls the server answered before any handler ran (not in grpc_server_handled_total), by method, status code and reason",
    labelNames: ["grpc_service", "grpc_method", "grpc_code", "reason"],
  });
  const dropped = counterFamily(registry, {
    name: "concord_grpc_connections_dropped_total",
    help: "Connections the gRPC server dropped to protect itself (before they carried a call, or holding the most open streams while it held its bound), by reason",
    labelNames: ["reason"],
  });
  const clamped = counterFamily(registry, {
    name: "concord_grpc_timeouts_clamped_total",
    help: "gRPC calls whose grpc-timeout was longer than grpc-js holds (about 24.8 days) and was taken as that, by method",
    labelNames: ["grpc_service", "grpc_method"],
  });
  // Shown at 0 from the start, so that an alert on its rate has a series to read.
  dropped({ reason: "no_preface" });
  dropped({ reason: "no_tls_handshake" });
  dropped({ reason: "too_many_connections" });
  dropped({ reason: "too_many_streams" });
  dropped({ reason: "no_ping_answer" });
  return {
    callRefused(method, code, reason: CallRefusal) {
      refused({ ...methodLabels(method), grpc_code: codeName(code), reason }).inc();
    },
    connectionDropped(reason) {
      dropped({ reason }).inc();
    },
    timeoutClamped(method) {
      clamped(methodLabels(method)).inc();
    },
  };
}

/**
 * The server's answers its callers take none of, at each scrape:
 * `concord_grpc_stalled_answer_bytes` (unsent answers on connections that
 * sent nothing since the last look) and
 * `concord_grpc_calls_cancelled_unread_total` (calls cancelled because
 * their connection took none of their answers; their work was done, and
 * `grpc_server_handled_total` counted them by the code their handler
 * returned).
 */
export function unreadAnswerMetrics(registry: Registry, answers: { readonly stalledBytes: number; readonly cancelled: number }): void {
  new Gauge({
    name: "concord_grpc_stalled_answer_bytes",
    help: "Bytes of gRPC answers waiting on connections that take none of them",
    registers: [registry],
    collect() {
      this.set(answers.stalledBytes);
    },
  });
  let counted = 0;
  new Counter({
    name: "concord_grpc_calls_cancelled_unread_total",
    help: "gRPC calls cancelled after their work was done, as their connection took none of their answers",
    registers: [registry],
    collect() {
      const now = answers.cancelled;
      if (now > counted) this.inc(now - counted);
      counted = now;
    },
  });
}

/**
 * `concord_grpc_serving`: 1 while the server's health reports SERVING, 0
 * while it reports NOT_SERVING (its readiness check failing, as with the
 * database away; waiting for NATS at start; stopping), read at each scrape.
 * Health was seen only by asking grpc.health.v1, not in the metrics. And
 * `concord_grpc_open_streams` and `concord_grpc_connection_stream_share`:
 * the streams open on all connections, and how many each connection of
 * the address holding the most may open at once now, which falls as its
 * connections grow many (see shareOpenStreams): a client held to a few
 * streams by a crowd of its own connections shows here.
 */
export function grpcServingMetrics(registry: Registry, server: { servingStatus(): string; readonly openStreams: { readonly open: number; readonly share: number } }): void {
  new Gauge({
    name: "concord_grpc_serving",
    help: "1 while the server's grpc.health.v1 status is SERVING, 0 while it is NOT_SERVING",
    registers: [registry],
    collect() {
      this.set(server.servingStatus() === "SERVING" ? 1 : 0);
    },
  });
  new Gauge({
    name: "concord_grpc_open_streams",
    help: "HTTP/2 streams open on all of the gRPC server's connections",
    registers: [registry],
    collect() {
      this.set(server.openStreams.open);
    },
  });
  new Gauge({
    name: "concord_grpc_connection_stream_share",
    help: "Streams each connection of the address holding the most may open at once now (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS), the least any is told: maxOpenStreams shared among the addresses, then among each address's connections, once they are many",
    registers: [registry],
    collect() {
      this.set(server.openStreams.share);
    },
  });
}
