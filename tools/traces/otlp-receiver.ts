/**
 * A small OTLP/HTTP trace receiver: takes what OpenTelemetry's JSON
 * exporter (`@opentelemetry/exporter-trace-otlp-http`) posts to /v1/traces,
 * keeps each span flattened (service, ids, name, kind, times, attributes,
 * status), and appends it to a JSON-lines file when given one. For tests,
 * the bench and `tools/traces.ts serve`; a trace viewer does more.
 */
import { appendFileSync, closeSync, fchmodSync, openSync } from "node:fs";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";

/** OTLP span kinds (SpanKind in trace.proto). */
export const spanKinds = ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"] as const;

/** One span as received. Times are nanoseconds since the epoch, as decimal strings (they exceed 2^53). */
export interface ReceivedSpan {
  readonly service: string;
  readonly traceId: string;
  readonly spanId: string;
  /** Empty for a root span. */
  readonly parentSpanId: string;
  readonly name: string;
  /** SERVER, CLIENT, PRODUCER, CONSUMER or INTERNAL. */
  readonly kind: string;
  readonly startNs: string;
  readonly endNs: string;
  readonly attributes: Readonly<Record<string, string | number | boolean>>;
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  readonly status: { readonly code: number; readonly message?: string };
  readonly links: ReadonlyArray<{ readonly traceId: string; readonly spanId: string }>;
}

export interface TraceReceiver {
  /** The endpoint to give as OTEL_EXPORTER_OTLP_ENDPOINT, "http://127.0.0.1:<port>". */
  readonly url: string;
  /** Every span received so far (none kept with `keepSpans: false`). */
  spans(): ReceivedSpan[];
  /** How many spans were received. */
  count(): number;
  close(): Promise<void>;
}

export interface TraceReceiverOptions {
  /** Default 0, a free port. */
  readonly port?: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Appends each span to this file as one JSON line; the file is its owner's alone (mode 0600). */
  readonly file?: string;
  /** Keep the spans for `spans()`; default true. A long load keeps count only. */
  readonly keepSpans?: boolean;
  /** Hears each export's spans (to hand them on to a viewer). */
  readonly onSpans?: (spans: readonly ReceivedSpan[]) => void;
}

type AnyValue = { stringValue?: string; intValue?: string | number; doubleValue?: number; boolValue?: boolean; [other: string]: unknown };
type KeyValue = { key: string; value?: AnyValue };

const valueOf = (v: AnyValue | undefined): string | number | boolean => {
  if (!v) return "";
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  return JSON.stringify(v);
};
const attributesOf = (list: KeyValue[] | undefined): Record<string, string | number | boolean> => Object.fromEntries((list ?? []).map((kv) => [kv.key, valueOf(kv.value)]));
// OTLP/JSON gives ids as hex; accept base64 too, as some encoders send it.
const hexId = (id: unknown): string => (typeof id !== "string" || id === "" ? "" : /^[0-9a-fA-F]+$/.test(id) ? id.toLowerCase() : Buffer.from(id, "base64").toString("hex"));

/** The spans of one ExportTraceServiceRequest in its JSON encoding. */
export function spansOfExport(body: unknown): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of (body as { resourceSpans?: any[] }).resourceSpans ?? []) {
    const service = String(attributesOf(rs.resource?.attributes)["service.name"] ?? "");
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          service,
          traceId: hexId(s.traceId),
          spanId: hexId(s.spanId),
          parentSpanId: hexId(s.parentSpanId),
          name: String(s.name ?? ""),
          kind: spanKinds[Number(s.kind ?? 0)] ?? String(s.kind),
          startNs: String(s.startTimeUnixNano ?? "0"),
          endNs: String(s.endTimeUnixNano ?? "0"),
          attributes: attributesOf(s.attributes),
          status: { code: Number(s.status?.code ?? 0), ...(s.status?.message && { message: String(s.status.message) }) },
          links: (s.links ?? []).map((l: { traceId: unknown; spanId: unknown }) => ({ traceId: hexId(l.traceId), spanId: hexId(l.spanId) })),
        });
      }
    }
  }
  return out;
}

async function bodyOf(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  return req.headers["content-encoding"] === "gzip" ? gunzipSync(raw) : raw;
}

/** Starts a receiver; resolves once it listens. */
export async function startTraceReceiver(options: TraceReceiverOptions = {}): Promise<TraceReceiver> {
  const received: ReceivedSpan[] = [];
  let count = 0;
  const server = createServer((req, res) => {
    const reply = (status: number, body: object) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    if (req.method !== "POST" || req.url?.split("?")[0] !== "/v1/traces") return void reply(404, { message: "only POST /v1/traces is served" });
    if (!String(req.headers["content-type"] ?? "").startsWith("application/json")) {
      return void reply(415, { message: "only OTLP/JSON is read (the exporter of @opentelemetry/exporter-trace-otlp-http)" });
    }
    bodyOf(req).then(
      (body) => {
        let spans: ReceivedSpan[];
        try {
          spans = spansOfExport(JSON.parse(body.toString("utf8")));
        } catch (err) {
          return reply(400, { message: `not OTLP/JSON: ${(err as Error).message}` });
        }
        count += spans.length;
        if (options.keepSpans !== false) received.push(...spans);
        if (options.file && spans.length > 0) appendFileSync(options.file, spans.map((s) => JSON.stringify(s) + "\n").join(""));
        if (spans.length > 0) options.onSpans?.(spans);
        reply(200, {});
      },
      (err: Error) => reply(400, { message: err.message }),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve());
  });
  // Spans carry the callers' addresses and the services' refusals, which name customers: the file is its owner's
  // alone, as the services' logs would be, one an earlier run left readable too. Made once listening: a port
  // taken leaves nothing behind.
  if (options.file) {
    try {
      const fd = openSync(options.file, "a", 0o600);
      try {
        fchmodSync(fd, 0o600);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      server.close();
      throw err;
    }
  }
  const { address, port } = server.address() as AddressInfo;
  return {
    url: `http://${address.includes(":") ? `[${address}]` : address}:${port}`,
    spans: () => [...received],
    count: () => count,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/**
 * `text` with its control characters written as \u escapes, as JSON writes
 * them, for a terminal: a span's name and status come from what the
 * services were sent (a dead letter's reason names the subject an event
 * came on, which its publisher chose), and an escape sequence printed raw
 * would act on the operator's terminal.
 */
function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** `host:port`, an IPv6 host in brackets; the host alone without a port. */
function hostPort(address: string | number | boolean | undefined, port: string | number | boolean | undefined): string | undefined {
  if (typeof address !== "string" || address === "") return undefined;
  const host = address.includes(":") ? `[${address}]` : address;
  return typeof port === "number" ? `${host}:${port}` : address;
}

/** `  to 10.0.0.7:50051` for a client span of a call (server.*), `  from 10.0.0.9:41234` for a server span (network.peer.*); empty for other spans. */
function peerOf(span: ReceivedSpan): string {
  const a = span.attributes;
  const server = hostPort(a["server.address"], a["server.port"]);
  if (server !== undefined) return `  to ${printable(server)}`;
  const peer = hostPort(a["network.peer.address"], a["network.peer.port"]);
  return peer === undefined ? "" : `  from ${printable(peer)}`;
}

const settlements: Record<string, string> = { retry: "retried", deadLetter: "dead-lettered" };

/** ` (delivery 2, retried)` for a consumer's failed attempt: its spans' errors read alike whatever became of the event. */
function attemptOf(span: ReceivedSpan): string {
  const settled = settlements[String(span.attributes["concord.settlement"])];
  if (!settled) return "";
  const delivery = span.attributes["messaging.nats.delivery_count"];
  return typeof delivery === "number" ? ` (delivery ${delivery}, ${settled})` : ` (${settled})`;
}

/**
 * The traces that hold a span with an attribute value containing `text`
 * (an order id is in the subjects of its events), or whose id or trace id
 * is `text` (a log line's span_id or trace_id);
 * each as a tree, one line per span, children under their parent in start
 * order: name, service, kind, start offset and duration in ms, the server
 * a client span called (`to host:port`) or the peer that called a server
 * span (`from host:port`), and ERROR with the message for a failed span (a consumer's attempt saying its
 * delivery and whether it was retried or dead-lettered). Spans whose parent was not received
 * are shown at the top level.
 */
export function formatTraces(spans: readonly ReceivedSpan[], text: string): string {
  const traceIds = new Set(spans.filter((s) => s.traceId === text || s.spanId === text || Object.values(s.attributes).some((v) => typeof v === "string" && v.includes(text))).map((s) => s.traceId));
  const blocks: string[] = [];
  for (const traceId of traceIds) {
    const own = spans.filter((s) => s.traceId === traceId).sort((a, b) => (BigInt(a.startNs) < BigInt(b.startNs) ? -1 : 1));
    const ids = new Set(own.map((s) => s.spanId));
    const t0 = BigInt(own[0].startNs);
    const ms = (ns: bigint) => (Number(ns) / 1e6).toFixed(1);
    const lines = [`trace ${printable(traceId)} (${own.length} spans)`];
    const print = (span: ReceivedSpan, depth: number) => {
      const failed = span.status.code === 2 ? `  ERROR${attemptOf(span)}${span.status.message ? ` ${printable(span.status.message)}` : ""}` : "";
      lines.push(`${"  ".repeat(depth + 1)}${printable(span.name)}  [${printable(span.service)} ${printable(span.kind)}]  +${ms(BigInt(span.startNs) - t0)} ms  ${ms(BigInt(span.endNs) - BigInt(span.startNs))} ms${peerOf(span)}${failed}`);
      for (const child of own.filter((s) => s.parentSpanId === span.spanId)) print(child, depth + 1);
    };
    for (const root of own.filter((s) => !ids.has(s.parentSpanId))) print(root, 0);
    blocks.push(lines.join("\n"));
  }
  return blocks.join("\n\n");
}
