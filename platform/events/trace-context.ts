// W3C trace context lives in platform/tracing; the event runtime's own modules import it from here.
export { isTraceparent, newTraceparent, traceparentFrom, tracestateFrom, type TraceHeaders } from "../tracing/trace-context.js";
