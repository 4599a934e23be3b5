import { constants as http2Constants, type ServerHttp2Stream } from "node:http2";

/** Stops the requests of answered calls; see `stopUnreadRequests`. */
export interface UnreadRequests {
  /** Watches a new call's stream (`path`, its method): answered while its request is still coming in, it is reset once the answer is out. */
  watch(stream: ServerHttp2Stream, path: string | undefined): void;
  /** The server has just answered `stream` itself (grpc-js never saw it): reset once the answer is out, unless its request has ended by then. */
  resetWhenWritten(stream: ServerHttp2Stream): void;
  /** Stops the checks (at shutdown); streams still waiting are left as they are. */
  stop(): void;
}

/** The longest wait between two checks of answers still queued (a connection whose caller reads nothing). */
const longestCheckMs = 100;

/**
 * When a call's answer is complete while its request is still coming in (a
 * request refused from its length prefix, larger than the receive limit, or
 * a second message on a unary method), the client is told to stop sending
 * it: RST_STREAM with NO_ERROR after the answer, as HTTP/2 allows (RFC 9113,
 * section 8.1). Without it the client sent the whole request, which the
 * server read only to drop: a flood of 4 MB requests cost the order service
 * 40 MiB of buffers waiting for the collector.
 *
 * The reset waits until the answer has left nghttp2's queue: Node ends the
 * stream ('finish') when the answer is queued, and a reset that reaches
 * nghttp2 before the answer is written discards it (Node holds the reset
 * while a write is under way, as TLS writes are, but sends it at once when
 * the request's end arrives meanwhile). Over TLS, 8 in 100 calls sending a
 * second message in one DATA frame with their end got the reset and no
 * status. Until then the stream is paused, so that no more of the request
 * is taken than one flow-control window. The waiting streams are checked
 * together, on the next turn of the event loop and then less and less
 * often while none goes out, never with a timer per call; a call whose
 * request ends before its answer costs one 'finish' listener.
 * `answeredEarly` hears each such call as it is answered (grpc-js refused
 * it: see the server). A call the server answers itself before grpc-js sees
 * it (a compressed request) is held the same way, its request ended or not,
 * since its answer is only queued; one whose request had ended is closed
 * once the answer is out and needs no reset. Sent as soon as the answer was
 * queued, the reset lost 8 in 400 such answers to whole requests over TLS.
 * `answeredLate` hears each watched call answered after its request ended,
 * as its answer is queued (grpc-js's refusal of a unary call whose request
 * held no message, among the answers of handlers: see the server).
 */
export function stopUnreadRequests(
  answeredEarly: (stream: ServerHttp2Stream, path: string | undefined) => void,
  answeredLate: (stream: ServerHttp2Stream, path: string | undefined) => void = () => {},
): UnreadRequests {
  const waiting = new Set<ServerHttp2Stream>();
  let scheduled: { readonly cancel: () => void } | undefined;
  let idleChecks = 0;
  const check = (): void => {
    scheduled = undefined;
    let sent = false;
    for (const stream of waiting) {
      const done = stream.closed || stream.destroyed || stream.readableEnded;
      if (!done && !answerWritten(stream)) continue;
      waiting.delete(stream);
      if (!done) {
        stream.close(http2Constants.NGHTTP2_NO_ERROR);
        sent = true;
      }
      // What was held while paused goes on to be dropped (the call has been answered): a stream whose readable side
      // never ends is never destroyed, nor is its connection once closed.
      if (!stream.destroyed) stream.resume();
    }
    idleChecks = sent || waiting.size === 0 ? 0 : idleChecks + 1;
    if (waiting.size > 0) {
      const timer = setTimeout(check, Math.min(longestCheckMs, 2 ** Math.min(idleChecks, 7))).unref();
      scheduled = { cancel: () => clearTimeout(timer) };
    }
  };
  const hold = (stream: ServerHttp2Stream): void => {
    stream.pause();
    waiting.add(stream);
    if (scheduled !== undefined) return;
    const immediate = setImmediate(check);
    scheduled = { cancel: () => clearImmediate(immediate) };
  };
  const stopWhenWritten = (stream: ServerHttp2Stream, path: string | undefined): void => {
    if (stream.destroyed) return;
    if (stream.readableEnded) return answeredLate(stream, path);
    if (stream.closed) return;
    answeredEarly(stream, path);
    hold(stream);
  };
  return {
    watch(stream, path) {
      stream.once("finish", () => stopWhenWritten(stream, path));
    },
    resetWhenWritten(stream) {
      if (!stream.closed && !stream.destroyed) hold(stream);
    },
    stop() {
      scheduled?.cancel();
      scheduled = undefined;
      waiting.clear();
    },
  };
}

/** Whether the stream's end (its answer's last frame) has left nghttp2's queue for the connection's socket. */
function answerWritten(stream: ServerHttp2Stream): boolean {
  return stream.state.localClose === 1;
}
