import { createLogger, type Logger } from "../../platform/log/index.js";

/** A logger whose lines are kept, parsed, in `lines`. */
export function capturedLogger(service = "test"): { readonly lines: Array<Record<string, unknown>>; readonly logger: Logger } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({ service, destination: { write: (chunk: string) => void lines.push(...chunk.split("\n").filter(Boolean).map((line) => JSON.parse(line))) } });
  return { lines, logger };
}
