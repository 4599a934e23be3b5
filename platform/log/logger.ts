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
    options.destination ?? pino.destination({ sync: false }),
  );
}
