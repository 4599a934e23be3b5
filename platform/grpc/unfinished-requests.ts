import { constants as http2Constants, type ServerHttp2Stream } from "node:http2";
import { status } from "@grpc/grpc-js";
import { endWithStatus } from "./grpc-status.js";

/** Server reflection's calls are streams both ways: a client may keep one open, asking as it goes (grpcurl, an IDE). */
const reflectionPrefix = "/grpc.reflection.";

/** Bounds how long a call's request may take to arrive; see `watchUnfinishedRequests`. */
export interface UnfinishedRequests {
  /** Starts timing a new call's stream (of any method but reflection's). */
  watch(stream: ServerHttp2Stream, path: string | undefined): void;
  /** Stops the sweep (at shutdown). */
  stop(): void;
}

/**
 * Every call but reflection's must have its whole request, half-closed,
 * within `timeoutMs` of its start, or it is answered CANCELLED and its
 * stream closed (RST_STREAM NO_ERROR after the answer), before any handler
 * runs. grpc-js runs a unary call only once its request has ended, and
 * until then holds what came of it, up to the receive cap (256 KiB), with
 * no time limit of its own: 700 requests of 262,000 bytes each, never ended,
 * held 161 MiB of a server for as long as their connection stayed open
 * (one connection may hold that many streams, and connections are not
 * counted). A sweep every second, not a timer per call, so that a call
 * whose request arrives in time costs a map entry, dropped as it arrives.
 */
export function watchUnfinishedRequests(timeoutMs: number): UnfinishedRequests {
  const started = new Map<ServerHttp2Stream, number>();
  const sweep = (): void => {
    const now = Date.now();
    for (const [stream, at] of started) {
      if (stream.readableEnded || stream.closed || stream.destroyed) {
        started.delete(stream);
        continue;
      }
      // Every entry each time, not only the oldest: a stream reset before its request ended is let go within a second.
      if (now - at < timeoutMs) continue;
      started.delete(stream);
      cancel(stream, timeoutMs);
    }
  };
  const timer = setInterval(sweep, Math.min(1_000, Math.max(10, Math.floor(timeoutMs / 4)))).unref();
  return {
    watch(stream, path) {
      if (path?.startsWith(reflectionPrefix) || stream.readableEnded) return;
      started.set(stream, Date.now());
      // Let go once the request has arrived, so that no finished call's stream is held until the next sweep.
      stream.once("end", () => started.delete(stream));
    },
    stop() {
      clearInterval(timer);
      started.clear();
    },
  };
}

function cancel(stream: ServerHttp2Stream, timeoutMs: number): void {
  // grpc-js finds its call cancelled: it reads no more of the request and never runs the handler.
  if (stream.headersSent) return void stream.close(http2Constants.NGHTTP2_CANCEL);
  endWithStatus(stream, status.CANCELLED, `the request did not arrive in full (half-closed) within ${timeoutMs} ms of the call's start; the server cancelled the call and nothing was done`);
}
