/**
 * Zipkin as the trace viewer one can start on this machine: its server is
 * one executable jar on Maven Central (the web UI inside), run with Java 17
 * or newer, keeping spans in memory. It takes spans in its own JSON format,
 * so the OTLP receiver of `tools/traces.ts serve --zipkin` hands on what it
 * gets, converted by `zipkinSpansOf`.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReceivedSpan } from "./otlp-receiver.js";

/** The pinned Zipkin server: version, where it comes from, and the SHA-256 of the jar. */
export const pinnedZipkin = {
  version: "3.6.1",
  url: "https://repo1.maven.org/maven2/io/zipkin/zipkin-server/3.6.1/zipkin-server-3.6.1-exec.jar",
  sha256: "d8326e0ed4f43855dba81228f688554706e52578a7c782d9a90b73f8680654a1",
} as const;

/** Where the jar is kept once fetched. */
export const zipkinJarPath = join(".tools", "zipkin", `zipkin-server-${pinnedZipkin.version}-exec.jar`);

/** One span in Zipkin's v2 JSON (POST /api/v2/spans). Times are microseconds. */
export interface ZipkinSpan {
  readonly traceId: string;
  readonly id: string;
  readonly parentId?: string;
  readonly name: string;
  readonly kind?: "SERVER" | "CLIENT" | "PRODUCER" | "CONSUMER";
  readonly timestamp: number;
  readonly duration: number;
  readonly localEndpoint: { readonly serviceName: string };
  readonly tags: Readonly<Record<string, string>>;
}

const zipkinKinds = new Set(["SERVER", "CLIENT", "PRODUCER", "CONSUMER"]);

/**
 * The spans as Zipkin takes them: ids as they are, times in microseconds
 * (at least 1 µs long, which Zipkin needs to show a span), attributes as
 * string tags, a failed span tagged `error` with its message, and a link (a
 * consumer's to its producer) as a `link` tag, which Zipkin has no field for.
 */
export function zipkinSpansOf(spans: readonly ReceivedSpan[]): ZipkinSpan[] {
  return spans.map((s) => {
    const start = BigInt(s.startNs);
    const end = BigInt(s.endNs);
    const tags: Record<string, string> = {};
    for (const [key, value] of Object.entries(s.attributes)) tags[key] = String(value);
    if (s.status.code === 2) tags.error = s.status.message ?? "error";
    if (s.links.length > 0) tags.link = s.links.map((l) => `${l.traceId}/${l.spanId}`).join(" ");
    return {
      traceId: s.traceId,
      id: s.spanId,
      ...(s.parentSpanId !== "" && { parentId: s.parentSpanId }),
      name: s.name,
      ...(zipkinKinds.has(s.kind) && { kind: s.kind as ZipkinSpan["kind"] }),
      timestamp: Number(start / 1000n),
      duration: Math.max(1, Number((end - start) / 1000n)),
      localEndpoint: { serviceName: s.service || "unknown" },
      tags,
    };
  });
}

const sha256Of = (file: string): string => createHash("sha256").update(readFileSync(file)).digest("hex");

/**
 * The path of the pinned Zipkin jar, fetched from Maven Central into
 * `.tools/zipkin` the first time (about 135 MB) and checked against its
 * SHA-256; `progress` hears what happens.
 */
export async function ensureZipkin(progress: (line: string) => void = () => undefined, jar = zipkinJarPath): Promise<string> {
  if (existsSync(jar)) return jar;
  mkdirSync(dirname(jar), { recursive: true });
  progress(`fetching Zipkin ${pinnedZipkin.version} (about 135 MB) from ${pinnedZipkin.url}`);
  const response = await fetch(pinnedZipkin.url);
  if (!response.ok || !response.body) throw new Error(`fetching ${pinnedZipkin.url} failed: HTTP ${response.status}`);
  const partial = `${jar}.partial`;
  try {
    await pipeline(Readable.fromWeb(response.body as import("node:stream/web").ReadableStream), createWriteStream(partial));
    const sum = sha256Of(partial);
    if (sum !== pinnedZipkin.sha256) throw new Error(`${pinnedZipkin.url} has SHA-256 ${sum}, not the pinned ${pinnedZipkin.sha256}; nothing kept`);
    renameSync(partial, jar);
  } finally {
    rmSync(partial, { force: true });
  }
  return jar;
}

/** Java's major version, or undefined when there is no `java` on PATH. */
function javaMajorVersion(): number | undefined {
  const run = spawnSync("java", ["-version"], { encoding: "utf8" });
  if (run.error) return undefined;
  const match = /version "(\d+)(?:\.(\d+))?/.exec(`${run.stderr}${run.stdout}`);
  if (!match) return undefined;
  // "1.8.0" is Java 8; "17.0.15" is 17.
  return match[1] === "1" ? Number(match[2]) : Number(match[1]);
}

export interface RunningZipkin {
  /** The UI and API, "http://127.0.0.1:<port>"; the UI is under /zipkin/. */
  readonly url: string;
  /** Hands spans to Zipkin; resolves when it took them. */
  send(spans: readonly ReceivedSpan[]): Promise<void>;
  stop(): Promise<void>;
}

export interface ZipkinOptions {
  /** Default 9411, Zipkin's own. */
  readonly port?: number;
  /** How long to wait for it to answer /health. Default 120 s (it starts in 5 to 30 s). */
  readonly startTimeoutMs?: number;
  /** Where its output goes; default nowhere. */
  readonly logFile?: string;
  readonly progress?: (line: string) => void;
}

/** Starts Zipkin on loopback (spans kept in memory), fetching it first if need be; resolves once it answers. */
export async function startZipkin(options: ZipkinOptions = {}): Promise<RunningZipkin> {
  const java = javaMajorVersion();
  if (java === undefined) throw new Error("Zipkin runs on Java 17 or newer, and there is no `java` on PATH (Debian: apt-get install openjdk-17-jre-headless)");
  if (java < 17) throw new Error(`Zipkin runs on Java 17 or newer; \`java\` on PATH is Java ${java}`);
  const jar = await ensureZipkin(options.progress);
  const port = options.port ?? 9411;
  const url = `http://127.0.0.1:${port}`;
  const log = options.logFile ? createWriteStream(options.logFile, { flags: "a" }) : undefined;
  const child: ChildProcess = spawn(
    "java",
    ["-Xms64m", "-Xmx512m", "-jar", jar, `--armeria.ports[0].ip=127.0.0.1`, `--armeria.ports[0].port=${port}`, "--armeria.ports[0].protocols=http"],
    { env: { ...process.env, STORAGE_TYPE: "mem", QUERY_PORT: String(port) }, stdio: ["ignore", log ? "pipe" : "ignore", log ? "pipe" : "ignore"] },
  );
  if (log) {
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
  }
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(killer);
    log?.end();
  };
  const deadline = Date.now() + (options.startTimeoutMs ?? 120_000);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`Zipkin exited at start (code ${child.exitCode})${options.logFile ? `; see ${options.logFile}` : ""}; is port ${port} in use?`);
    const healthy = await fetch(`${url}/health`).then((r) => r.ok, () => false);
    if (healthy) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`Zipkin did not answer on ${url} within ${options.startTimeoutMs ?? 120_000} ms`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return {
    url,
    async send(spans) {
      if (spans.length === 0) return;
      const response = await fetch(`${url}/api/v2/spans`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(zipkinSpansOf(spans)) });
      if (!response.ok) throw new Error(`Zipkin refused ${spans.length} spans: HTTP ${response.status} ${(await response.text()).slice(0, 200)}`);
    },
    stop,
  };
}
