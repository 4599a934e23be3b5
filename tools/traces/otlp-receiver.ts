/**
 * A small OTLP/HTTP trace receiver: takes what OpenTelemetry's JSON
 * exporter (`@opentelemetry/exporter-trace-otlp-http`) posts to /v1/traces,
 * keeps each span flattened (service and instance, ids, name, kind, times,
 * attributes, status), and appends it to a JSON-lines file when given one. For tests,
 * the bench and `tools/traces.ts serve`; a trace viewer does more.
 */
import { appendFileSync, closeSync, fchmodSync, openSync } from "node:fs";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";
import { holdConnections } from "../../platform/runtime/held-connections.js";

/** OTLP span kinds (SpanKind in trace.proto). */
export const spanKinds = ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"] as const;

/** One span as received. Times are nanoseconds since the epoch, as decimal strings (they exceed 2^53). */
export interface ReceivedSpan {
  readonly service: string;
  /** Which process of the service sent it (its resource's `service.instance.id`), when the exporter said. */
  readonly instance?: string;
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
  /** Largest export taken, as sent and once inflated (413 past it); default 16 MiB, where an exporter's batch of 512 spans is well under 1 MiB. */
  readonly maxBodyBytes?: number;
  /**
   * Connections held at once (default 32: each service's exporter keeps one or two): one that comes past them closes the
   * oldest whose export is not being taken (idle, or still sending its request), or is closed itself when all are, as the
   * services' metrics endpoints do. Each may hold an export of up to `maxBodyBytes` in memory.
   */
  readonly maxConnections?: number;
  /** How long a connection has to send a whole export, headers and body (408 and closed up to 5 s after it); default 10 s, where Node gave it 300 s and held the connection meanwhile. */
  readonly requestTimeoutMs?: number;
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

/** A span's time as the receiver keeps it: decimal nanoseconds, as a fixed64 holds them. */
export const isWholeNanos = (value: unknown): value is string => typeof value === "string" && /^\d{1,20}$/.test(value);

/** A span's time as decimal nanoseconds; anything else (`"soon"`, `1e21`) throws, as `traces show` could not place the span. */
function nanosOf(value: unknown, field: string): string {
  // A number (some encoders send one, past 2^53 rounded) is taken when it is a whole one a fixed64 holds.
  const text = typeof value === "number" && Number.isInteger(value) && value >= 0 && value < 2 ** 64 ? BigInt(value).toString() : value ?? "0";
  if (!isWholeNanos(text)) throw new Error(`a span's ${field} is not a whole number of nanoseconds: ${JSON.stringify(value)?.slice(0, 40)}`);
  return text;
}

/** The spans of one ExportTraceServiceRequest in its JSON encoding; throws on a span whose times are not whole nanoseconds. */
export function spansOfExport(body: unknown): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of (body as { resourceSpans?: any[] }).resourceSpans ?? []) {
    const resource = attributesOf(rs.resource?.attributes);
    const service = String(resource["service.name"] ?? "");
    const instance = resource["service.instance.id"];
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          service,
          ...(instance !== undefined && { instance: String(instance) }),
          traceId: hexId(s.traceId),
          spanId: hexId(s.spanId),
          parentSpanId: hexId(s.parentSpanId),
          name: String(s.name ?? ""),
          kind: spanKinds[Number(s.kind ?? 0)] ?? String(s.kind),
          startNs: nanosOf(s.startTimeUnixNano, "startTimeUnixNano"),
          endNs: nanosOf(s.endTimeUnixNano, "endTimeUnixNano"),
          attributes: attributesOf(s.attributes),
          status: { code: Number(s.status?.code ?? 0), ...(s.status?.message && { message: String(s.status.message) }) },
          links: (s.links ?? []).map((l: { traceId: unknown; spanId: unknown }) => ({ traceId: hexId(l.traceId), spanId: hexId(l.spanId) })),
        });
      }
    }
  }
  return out;
}

/** An export past the receiver's size, as sent or once inflated. */
class TooLarge extends Error {}

/** The request's body, inflated when gzip: at most `max` bytes either way, past which it rejects with TooLarge, reading or inflating no more. */
async function bodyOf(req: IncomingMessage, max: number): Promise<Buffer> {
  const tooLarge = () => new TooLarge(`an export may hold at most ${max} bytes, sent or inflated`);
  const chunks = await new Promise<Buffer[]>((resolve, reject) => {
    if (Number(req.headers["content-length"] ?? 0) > max) return reject(tooLarge());
    const read: Buffer[] = [];
    let size = 0;
    const take = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= max) return void read.push(chunk);
      // Paused rather than destroyed, which would reset the connection before the 413 went out.
      req.off("data", take).pause();
      reject(tooLarge());
    };
    req.on("data", take).once("end", () => resolve(read)).once("error", reject);
  });
  const raw = Buffer.concat(chunks);
  if (req.headers["content-encoding"] !== "gzip") return raw;
  try {
    return gunzipSync(raw, { maxOutputLength: max });
  } catch (err) {
    // A gzip bomb of 500 KB inflated to 500 MB held 1.6 GB of the receiver before it failed to parse.
    throw (err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE" ? tooLarge() : err;
  }
}

/** Starts a receiver; resolves once it listens. */
export async function startTraceReceiver(options: TraceReceiverOptions = {}): Promise<TraceReceiver> {
  const received: ReceivedSpan[] = [];
  let count = 0;
  const maxBodyBytes = options.maxBodyBytes ?? 16 * 1024 * 1024;
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  // Node looks at the connections' timeouts every 30 s by default.
  const server = createServer({ connectionsCheckingInterval: Math.min(5_000, requestTimeoutMs), headersTimeout: requestTimeoutMs, requestTimeout: requestTimeoutMs }, (req, res) => {
    const reply = (status: number, body: object) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    if (req.method !== "POST" || req.url?.split("?")[0] !== "/v1/traces") return void reply(404, { message: "only POST /v1/traces is served" });
    if (!String(req.headers["content-type"] ?? "").startsWith("application/json")) {
      return void reply(415, { message: "only OTLP/JSON is read (the exporter of @opentelemetry/exporter-trace-otlp-http)" });
    }
    bodyOf(req, maxBodyBytes).then(
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
      (err: Error) => {
        if (!(err instanceof TooLarge)) return reply(400, { message: err.message });
        // Closed once answered, so the rest of the upload is not read.
        res.setHeader("connection", "close");
        reply(413, { message: err.message });
      },
    );
  });
  // Unbounded, connections that sent nothing were held, each a descriptor, as many as came (and an export of 16 MiB each).
  holdConnections(server, options.maxConnections ?? 32);
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
 * order (one span an id, the first received; spans whose parents go round in
 * a circle at the top level): name, service, kind, start offset and duration in ms, the server
 * a client span called (`to host:port`) or the peer that called a server
 * span (`from host:port`), and ERROR with the message for a failed span (a consumer's attempt saying its
 * delivery and whether it was retried or dead-lettered). Spans whose parent was not received
 * are shown at the top level.
 */
export function formatTraces(spans: readonly ReceivedSpan[], text: string): string {
  const traceIds = new Set(spans.filter((s) => s.traceId === text || s.spanId === text || Object.values(s.attributes).some((v) => typeof v === "string" && v.includes(text))).map((s) => s.traceId));
  const blocks: string[] = [];
  for (const traceId of traceIds) {
    // One span an id: a batch the exporter sent again (or a sender reusing an id) printed each child under every copy of its parent, and a copy naming itself its parent for ever.
    const byId = new Map<string, ReceivedSpan>();
    for (const s of spans) if (s.traceId === traceId && !byId.has(s.spanId)) byId.set(s.spanId, s);
    const own = [...byId.values()].sort((a, b) => (BigInt(a.startNs) < BigInt(b.startNs) ? -1 : 1));
    const ids = new Set(byId.keys());
    const printed = new Set<string>();
    const t0 = BigInt(own[0].startNs);
    const ms = (ns: bigint) => (Number(ns) / 1e6).toFixed(1);
    const lines = [`trace ${printable(traceId)} (${own.length} spans)`];
    const print = (span: ReceivedSpan, depth: number) => {
      if (printed.has(span.spanId)) return;
      printed.add(span.spanId);
      const failed = span.status.code === 2 ? `  ERROR${attemptOf(span)}${span.status.message ? ` ${printable(span.status.message)}` : ""}` : "";
      lines.push(`${"  ".repeat(depth + 1)}${printable(span.name)}  [${printable(span.service)} ${printable(span.kind)}]  +${ms(BigInt(span.startNs) - t0)} ms  ${ms(BigInt(span.endNs) - BigInt(span.startNs))} ms${peerOf(span)}${failed}`);
      for (const child of own.filter((s) => s.parentSpanId === span.spanId)) print(child, depth + 1);
    };
    for (const root of own.filter((s) => !ids.has(s.parentSpanId))) print(root, 0);
    // Spans whose parents lead round in a circle reach no root: shown at the top level too, each once.
    for (const span of own) print(span, 0);
    blocks.push(lines.join("\n"));
  }
  return blocks.join("\n\n");
}
