import { Code, StatusError } from "./status-error.js";

/**
 * `err` and the errors it wraps, outermost first, at most `depth` of them:
 * each one's `cause`, or, where it has none, nats.js's `chainedError`.
 */
export function* causeChain(err: unknown, depth = 4): Generator<object> {
  for (let e = err, i = 0; typeof e === "object" && e !== null && i < depth; i++) {
    yield e;
    const wrapped = e as { cause?: unknown; chainedError?: unknown };
    e = wrapped.cause ?? wrapped.chainedError;
  }
}

/** An error's message followed by its causes', joined as the log's error serialiser joins them ("the database is unavailable; try again shortly: connect ECONNREFUSED ..."). */
export function messageWithCauses(err: unknown, depth = 5): string {
  return Array.from(causeChain(err, depth), (e) => (e instanceof Error ? e.message : String(e))).join(": ");
}

/**
 * The fields a log line gives `err`: an UNAVAILABLE StatusError (a database or
 * another dependency away, which is expected operation and is tried again) by
 * its message and its causes' alone, as `error`, since its stack would only
 * point into the driver; any other error whole, stack and all, as `err`.
 */
export function errorLogFields(err: unknown): { readonly error: string } | { readonly err: unknown } {
  return err instanceof StatusError && err.code === Code.UNAVAILABLE ? { error: messageWithCauses(err) } : { err };
}
