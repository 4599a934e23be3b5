/**
 * Tracing with OpenTelemetry: W3C trace context carried by calls and
 * events, and spans exported over OTLP when the OTEL_* variables configure
 * an endpoint. The gRPC and event runtimes make the spans (a server span
 * per call, a client span per outgoing call, producer, send and consumer
 * spans per event); without an endpoint they pass the caller's trace
 * context on and record nothing.
 */
export { activeTracer, linksToParent, otlpEndpointProblem, parentContext, SpanKind, spanError, spanLogFields, type SpanLogFields, startTracing, traceHeadersOf, tracingSettingsProblem, tracingWanted, type Tracing, type TracingOptions } from "./tracing.js";
export { isTraceparent, newTraceparent, parseTraceparent, traceparentFrom, tracestateFrom, type TraceHeaders } from "./trace-context.js";
