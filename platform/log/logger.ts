import pino from "pino";

export type Logger = pino.Logger;

export interface LoggerOptions {
  /** Service name, on every line as `service`. */
  readonly service: string;
  /** Which process of the service this is, on every line as `instance`: instances of one service write lines alike. Default none. */
  readonly instance?: string;
  /** pino level; "silent" turns logging off. Default "info". */
  readonly level?: string;
  /** Where lines go; standard output by default. */
  readonly destination?: pino.DestinationStream;
}

/**
 * What names a process of `service` where one name must say both the
 * service and the instance (the `instance` of its log lines): its NATS
 * connection's, a refusal it prints before it logs. `products (products#2)`,
 * `orders (shop-7f9c:50052)`; the service alone when the instance is not known.
 */
export function processName(service: string, instance: string | undefined): string {
  return instance === undefined ? service : `${service} (${instance})`;
}

/**
 * Structured JSON logs, one object per line. Nothing logs request or event
 * payloads, so no secret reaches a log line; top-level fields that commonly
 * carry secrets are redacted all the same (redaction at fixed paths is cheap,
 * wildcard paths would cost on every line). An error logged as `err` keeps
 * its message, code, constraint, table and column but not the fields that
 * quote rows (see errorFields).
 */
export function createLogger(options: LoggerOptions): Logger {
  const logger = pino(
    {
      level: options.level ?? "info",
      base: { service: options.service, ...(options.instance !== undefined && { instance: options.instance }) },
      timestamp: isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: ["password", "token", "authorization"], censor: "[redacted]" },
      serializers: { err: errorFields },
    },
    options.destination ?? bufferedStdout(),
  );
  // Children see it through their prototype: their lines have this shape too.
  Object.defineProperty(logger, linesOfConcordShape, { value: true });
  return logger;
}

const linesOfConcordShape = Symbol("concord.log.shape");

/**
 * Fields of a database error that quote the data it was about: PostgreSQL's
 * `detail` ("Key (email)=(a@b.c) already exists.", "Failing row contains
 * (...)"), `where` (a COPY's line, a function's arguments) and
 * `internalQuery`, and the parameters or values a wrapper may attach.
 * SQLite's errors carry only a code and a message naming the constraint.
 */
const rowQuotingFields = ["detail", "where", "internalQuery", "parameters", "values"];

/**
 * pino's error serialiser (type, message with its causes', stack, own
 * fields), less the fields that quote rows, in the error and in the errors
 * serialised inside it. Only lines that log an `err` pay for it.
 */
export function errorFields(err: unknown): unknown {
  return withoutRowQuotes(pino.stdSerializers.err(err as Error), 0);
}

function withoutRowQuotes(value: unknown, depth: number): unknown {
  if (typeof value !== "object" || value === null || depth > 8) return value;
  if (Array.isArray(value)) {
    for (const item of value) withoutRowQuotes(item, depth + 1);
    return value;
  }
  const fields = value as Record<string, unknown>;
  // Only what the serialiser made of an error (its message is always there): other objects are the caller's own.
  if (typeof fields.message !== "string") return value;
  for (const key of rowQuotingFields) delete fields[key];
  for (const key of Object.keys(fields)) withoutRowQuotes(fields[key], depth + 1);
  return value;
}

let lastMs = -1;
let lastTime = "";
/** `,"time":"<ISO 8601>"` as pino writes it, worked out once per millisecond: a busy service logs several lines in each. */
function isoTime(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastTime = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTime;
}

/**
 * A writer of one kind of info line for a hot path (the line every gRPC call
 * logs): the same JSON as `logger.info({ ...fields }, msg)` from a logger of
 * createLogger, with its bindings and message fixed once instead of
 * serialised per line. `rawFields` are JSON members written as given
 * (`"code":"OK","ms":1.5`), so pass only numbers and constant strings.
 * Other loggers get `logger.info`.
 */
export function infoLineWriter(logger: Logger, msg: string): (rawFields: string) => void {
  if (!(logger as unknown as Record<symbol, unknown>)[linesOfConcordShape]) return (raw) => logger.info(JSON.parse(`{${raw}}`), msg);
  const stream = (logger as unknown as Record<symbol, { write(line: string): void }>)[pino.symbols.streamSym];
  const bindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym];
  const end = `,"msg":${JSON.stringify(msg)}}\n`;
  return (raw) => {
    if (logger.isLevelEnabled("info")) stream.write(`{"level":"info"${isoTime()}${bindings},${raw}${end}`);
  };
}

/**
 * Standard output, written in blocks of at least 4 KiB (or 200 ms after a
 * line came) rather than one write per line: under load a write per call
 * costs more than the call's own work. Lines are gathered here and handed
 * to pino's asynchronous writer a block at a time, which keeps its
 * per-write bookkeeping (it measures what it holds on every write) off the
 * per-line path. Flushed synchronously when the process exits. Shared by
 * all the loggers of a process, so lines from several stay whole and in
 * order.
 */
function bufferedStdout(): pino.DestinationStream {
  // One per process: every logger writing to standard output shares it (and its exit hook).
  if (stdout) return stdout;
  const out = pino.destination({ dest: 1, sync: false });
  const stream = (stdout = new LineBlocks(out, 4096, 200));
  process.once("exit", () => {
    try {
      stream.flushSync();
    } catch {
      // Nothing sensible is left to do with a log line at exit.
    }
  });
  return stream;
}
let stdout: LineBlocks | undefined;

/**
 * Gathers lines and passes them on joined, once at least `minLength`
 * characters wait, or (given `maxDelayMs`) once the first of them has
 * waited that long. The timer runs only while lines wait: a process that
 * logs nothing is not woken for it.
 */
export class LineBlocks implements pino.DestinationStream {
  private lines: string[] = [];
  private length = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly out: { write(block: string): unknown; flushSync?(): void },
    private readonly minLength: number,
    private readonly maxDelayMs?: number,
  ) {}

  write(line: string): void {
    this.lines.push(line);
    this.length += line.length;
    if (this.length >= this.minLength) this.flush();
    else if (this.timer === undefined && this.maxDelayMs !== undefined) {
      // Left to run after a flush by size: it passes on what came since, and is not set again until a line waits.
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, this.maxDelayMs).unref();
    }
  }

  /** Passes on what waits, however little. */
  flush(): void {
    if (this.lines.length === 0) return;
    const block = this.lines.length === 1 ? this.lines[0] : this.lines.join("");
    this.lines = [];
    this.length = 0;
    this.out.write(block);
  }

  flushSync(): void {
    this.flush();
    this.out.flushSync?.();
  }
}
