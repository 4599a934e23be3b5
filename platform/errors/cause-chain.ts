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
