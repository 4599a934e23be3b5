// Types only: the OpenTelemetry API, like the SDK, is loaded by startTracing, so a process that does not trace loads neither.
import type { Context, DiagLogger, Link, Span, SpanKind as OtelSpanKind, SpanStatusCode, Tracer } from "@opentelemetry/api";
import { longestTimerMs } from "../options/index.js";
import { parseTraceparent, type TraceHeaders, tracestateFrom } from "./trace-context.js";

/** What ties a log line to the span it was written in: the span's trace id and its own, under the names W3C gives them. */
export interface SpanLogFields {
  readonly trace_id: string;
  readonly span_id: string;
}

type OtelApi = typeof import("@opentelemetry/api");

/** OpenTelemetry's span kinds and error status, as values that need no import of the API. */
export const SpanKind = { SERVER: 1 as OtelSpanKind, CLIENT: 2 as OtelSpanKind, PRODUCER: 3 as OtelSpanKind, CONSUMER: 4 as OtelSpanKind } as const;
export const spanError = 2 as SpanStatusCode;
const sampledFlag = 1;

/** A process's tracing, as `startTracing` left it. */
export interface Tracing {
  /** Whether spans are recorded and exported. */
  readonly enabled: boolean;
  /** Where the spans are sent, while they are. */
  readonly endpoint?: string;
  /** Exports the spans not sent yet, then stops; tracing is off afterwards. */
  shutdown(): Promise<void>;
}

export interface TracingOptions {
  /** `service.name` of the spans, unless OTEL_SERVICE_NAME says otherwise. */
  readonly service: string;
  /** `service.instance.id` of the spans (which process of the service made them), unless OTEL_RESOURCE_ATTRIBUTES says otherwise. Default: none. */
  readonly instance?: string;
  /** Where the OTEL_* variables are read; default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /**
   * Told what the SDK warns of, spans it could not export above all, each
   * kind at most once a minute (`left` of that kind not told since its
   * last); unset, they go unsaid.
   */
  readonly onProblem?: (message: string, left: number) => void;
}

/** How often onProblem is told at most: an unreachable collector fails every batch. */
const problemEveryMs = 60_000;

/**
 * What the SDK reports (through the API's diagnostic logger) as one line:
 * an export failure comes as its error in JSON, stack included, of which
 * the message is what says why.
 */
function problemLine(args: unknown[]): string {
  return args
    .map((arg) => {
      if (typeof arg !== "string") return arg instanceof Error ? arg.message : JSON.stringify(arg);
      try {
        const parsed: unknown = JSON.parse(arg);
        if (parsed && typeof parsed === "object" && typeof (parsed as { message?: unknown }).message === "string") return (parsed as { message: string }).message;
      } catch {
        // Not JSON: the SDK's own words.
      }
      return arg;
    })
    .join(" ")
    .replace(/\s*\n\s*/g, " ");
}

/**
 * A diagnostic logger that tells `onProblem` warnings and errors, each kind
 * (its words, numbers aside) at once and then at most once per
 * problemEveryMs, so that one kind (every batch failing) does not hide another.
 */
export function problemLogger(onProblem: NonNullable<TracingOptions["onProblem"]>, clock: () => number = Date.now): DiagLogger {
  const told = new Map<string, { at: number; left: number }>();
  const tell = (...args: unknown[]) => {
    const now = clock();
    const line = problemLine(args);
    const kind = line.replace(/\d+/g, "#");
    const last = told.get(kind);
    if (last && now - last.at < problemEveryMs) {
      last.left++;
      return;
    }
    // Kinds not seen for a minute are forgotten, so that numbers the SDK varies never pile up.
    for (const [k, { at }] of told) if (now - at >= problemEveryMs) told.delete(k);
    told.set(kind, { at: now, left: 0 });
    onProblem(line, last?.left ?? 0);
  };
  const quiet = () => {};
  return { error: tell, warn: tell, info: quiet, debug: quiet, verbose: quiet };
}

let tracer: Tracer | undefined;
let api: OtelApi | undefined;

/** The tracer of this process while tracing is on; undefined when it is off, and then nothing records spans. */
export function activeTracer(): Tracer | undefined {
  return tracer;
}

const isSet = (value: string | undefined): boolean => value !== undefined && value.trim() !== "";

/**
 * Whether the standard OpenTelemetry variables ask for traces: an OTLP
 * endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), OTEL_SDK_DISABLED is not `true` and
 * OTEL_TRACES_EXPORTER is not `none`.
 */
export function tracingWanted(env: Readonly<Record<string, string | undefined>> = process.env): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return false;
  if (env.OTEL_TRACES_EXPORTER?.trim().toLowerCase() === "none") return false;
  return isSet(env.OTEL_EXPORTER_OTLP_ENDPOINT) || isSet(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/** The OTLP endpoint variables, the traces' own first: the exporter sends to it as given, or else to the other with /v1/traces added. */
const endpointVariables = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"] as const;

/** `value` as an http or https URL with a host, or undefined when it is not one. */
function httpUrl(value: string): URL | undefined {
  if (!URL.canParse(value)) return undefined;
  const url = new URL(value);
  return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "" ? url : undefined;
}

/**
 * Why the OTLP endpoint the variables name cannot be used, while tracing is
 * wanted; undefined when it can. The exporter takes a value that is not a
 * URL (`127.0.0.1:4318`, its scheme left out) for none, with a warning no
 * one hears, and sends the spans to http://localhost:4318, and one read as
 * another scheme (`localhost:4318`) nowhere: the service said it exported
 * traces while they went elsewhere or were lost.
 */
export function otlpEndpointProblem(env: Readonly<Record<string, string | undefined>> = process.env): string | undefined {
  if (!tracingWanted(env)) return undefined;
  for (const name of endpointVariables) {
    const value = env[name]?.trim();
    if (value && !httpUrl(value)) {
      return `${name}=${JSON.stringify(env[name])} is not an http:// or https:// URL, which the OTLP exporter needs (it would send the spans elsewhere or nowhere, saying nothing): write it whole, as http://127.0.0.1:4318`;
    }
  }
  return undefined;
}

/** The OTEL_* variables the SDK waits out with a timer, in milliseconds. */
const timerVariables = ["OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"] as const;

/**
 * Why one of the OTEL_* waits the SDK reads (as any number, 3e9 included)
 * cannot be used, while tracing is wanted; undefined when all can. Over
 * 2^31 - 1 ms Node.js fires a timer after 1 ms: a batch delay of 30 days
 * exported every span at once, and an export timeout of 30 days gave up on
 * every export (the HTTP request's own timeout is cut to 2^31 - 1 ms).
 */
function otelTimerProblem(env: Readonly<Record<string, string | undefined>>): string | undefined {
  if (!tracingWanted(env)) return undefined;
  for (const name of timerVariables) {
    const value = env[name];
    if (value === undefined || value.trim() === "") continue;
    if (Number(value) > longestTimerMs) {
      return `${name}=${JSON.stringify(value)} is more than ${longestTimerMs} ms (about 24.8 days), the longest a Node.js timer waits: give at most ${longestTimerMs} (24d is 2073600000)`;
    }
  }
  return undefined;
}

/** Why the OTEL_* variables cannot be used as they are, while tracing is wanted (see otlpEndpointProblem, otelTimerProblem); undefined when they can. */
export function tracingSettingsProblem(env: Readonly<Record<string, string | undefined>> = process.env): string | undefined {
  return otlpEndpointProblem(env) ?? otelTimerProblem(env);
}

/** The URL the spans are sent to, as the exporter makes it from the variables (which otlpEndpointProblem found good). */
function otlpTracesUrl(env: Readonly<Record<string, string | undefined>>): string {
  const own = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  if (own) return httpUrl(own)!.href;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT!.trim();
  return `${base.endsWith("/") ? base : `${base}/`}v1/traces`;
}

/**
 * Turns tracing on when the OTEL_* variables ask for it: loads the
 * OpenTelemetry SDK, which exports spans in batches over OTLP/HTTP to the
 * configured endpoint and samples as OTEL_TRACES_SAMPLER says (by default
 * it follows the caller's sampled flag). Otherwise the SDK is not even
 * loaded and tracing costs nothing. Throws when tracing is on already.
 */
export async function startTracing(options: TracingOptions): Promise<Tracing> {
  const env = options.env ?? process.env;
  if (!tracingWanted(env)) return { enabled: false, shutdown: async () => {} };
  if (tracer) throw new Error("startTracing: tracing is on already in this process");
  const problem = tracingSettingsProblem(env);
  if (problem) throw new Error(problem);
  const [otel, { createTracerProvider }] = await Promise.all([import("@opentelemetry/api"), import("./sdk.js")]);
  if (options.onProblem) otel.diag.setLogger(problemLogger(options.onProblem), otel.DiagLogLevel.WARN);
  const provider = createTracerProvider(options.service, options.instance);
  otel.trace.setGlobalTracerProvider(provider);
  api = otel;
  tracer = provider.getTracer("concord");
  return {
    enabled: true,
    endpoint: otlpTracesUrl(env),
    async shutdown() {
      tracer = undefined;
      otel.trace.disable();
      otel.diag.disable();
      await provider.shutdown();
    },
  };
}

/**
 * The OpenTelemetry context whose remote parent is `headers` (a new trace
 * when absent or malformed). Only while tracing is on; throws otherwise.
 */
export function parentContext(headers: Partial<TraceHeaders> | undefined): Context {
  if (!api) throw new Error("parentContext: tracing is off");
  const parent = headers?.traceparent === undefined ? undefined : parseTraceparent(headers.traceparent);
  if (!parent) return api.ROOT_CONTEXT;
  const tracestate = tracestateFrom(headers?.tracestate);
  return api.trace.setSpanContext(api.ROOT_CONTEXT, {
    traceId: parent.traceId,
    spanId: parent.spanId,
    traceFlags: parent.flags & sampledFlag,
    isRemote: true,
    ...(tracestate !== undefined && { traceState: api.createTraceState(tracestate) }),
  });
}

/** A link to the remote parent of `context` (from parentContext), or none when it starts a new trace. Only while tracing is on. */
export function linksToParent(context: Context): Link[] {
  const parent = api?.trace.getSpanContext(context);
  return parent ? [{ context: parent }] : [];
}

/** The W3C headers that make a receiver's spans children of `span`; its sampled flag goes with them. */
export function traceHeadersOf(span: Span): TraceHeaders {
  const c = span.spanContext();
  const traceparent = `00-${c.traceId}-${c.spanId}-${c.traceFlags & sampledFlag ? "01" : "00"}`;
  const tracestate = c.traceState?.serialize();
  return tracestate ? { traceparent, tracestate } : { traceparent };
}

/**
 * `trace_id` and `span_id` of the span whose context is `trace` (from
 * traceHeadersOf), for the log lines written about its work: undefined
 * while tracing is off, when there is no such span, and when its trace is
 * not sampled, as its span then records nothing and no trace holds it.
 */
export function spanLogFields(trace: Partial<TraceHeaders> | undefined): SpanLogFields | undefined {
  if (!tracer || trace?.traceparent === undefined) return undefined;
  const parsed = parseTraceparent(trace.traceparent);
  return parsed && parsed.flags & sampledFlag ? { trace_id: parsed.traceId, span_id: parsed.spanId } : undefined;
}
