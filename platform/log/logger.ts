import pino from "pino";

export type Logger = pino.Logger;

export interface LoggerOptions {
  /** Service name, on every line as `service`. */
  readonly service: string;
  /** pino level; "silent" turns logging off. Default "info". */
  readonly level?: string;
  /** Where lines go; standard output by default. */
  readonly destination?: pino.DestinationStream;
}

/**
 * Structured JSON logs, one object per line. Nothing logs request or event
 * payloads, so no secret reaches a log line; top-level fields that commonly
 * carry secrets are redacted all the same (redaction at fixed paths is cheap,
 * wildcard paths would cost on every line).
 */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level ?? "info",
      base: { service: options.service },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: ["password", "token", "authorization"], censor: "[redacted]" },
    },
    options.destination ?? bufferedStdout(),
  );
}

/**
 * Standard output, written in blocks of at least 4 KiB (or every 200 ms)
 * rather than one write per line: under load a write per call costs more
 * than the call's own work. Flushed synchronously when the process exits.
 */
function bufferedStdout(): pino.DestinationStream {
  const stream = pino.destination({ dest: 1, sync: false, minLength: 4096 });
  const timer = setInterval(() => stream.flush(), 200).unref();
  process.once("exit", () => {
    clearInterval(timer);
    try {
      stream.flushSync();
    } catch {
      // Nothing sensible is left to do with a log line at exit.
    }
  });
  return stream;
}
