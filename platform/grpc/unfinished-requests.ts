import { constants as http2Constants, type ServerHttp2Stream } from "node:http2";
import { status } from "@grpc/grpc-js";
import { endWithStatus } from "./grpc-status.js";

/** Server reflection's calls are streams both ways: a client may keep one open, asking as it goes (grpcurl, an IDE). */
const reflectionPrefix = "/grpc.reflection.";

/** Bounds how long a call's request may take to arrive; see `watchUnfinishedRequests`. */
export interface UnfinishedRequests {
  /** Starts timing a new call's stream (of any method but reflection's). */
  watch(stream: ServerHttp2Stream, path: string | undefined): void;
  /** Whether `maxUnfinished` calls are waiting for their requests already (those found over meanwhile are let go first). */
  full(): boolean;
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
 * `onCancel` hears each call answered so (metrics, the log). `full` tells
 * when `maxUnfinished` calls wait so, for the server to refuse new ones.
 */
export function watchUnfinishedRequests(timeoutMs: number, maxUnfinished: number, onCancel: (stream: ServerHttp2Stream, path: string | undefined) => void): UnfinishedRequests {
  const started = new Map<ServerHttp2Stream, { readonly at: number; readonly path: string | undefined }>();
  const sweep = (): void => {
    const now = Date.now();
    for (const [stream, { at, path }] of started) {
      if (stream.readableEnded || stream.closed || stream.destroyed) {
        started.delete(stream);
        continue;
      }
      // Every entry each time, not only the oldest: a stream reset before its request ended is let go within a second.
      if (now - at < timeoutMs) continue;
      started.delete(stream);
      if (cancel(stream, timeoutMs)) onCancel(stream, path);
    }
  };
  // One listener for every stream ('end' comes once): no closure per call.
  function arrived(this: ServerHttp2Stream): void {
    started.delete(this);
  }
  const timer = setInterval(sweep, Math.min(1_000, Math.max(10, Math.floor(timeoutMs / 4)))).unref();
  return {
    watch(stream, path) {
      if (path?.startsWith(reflectionPrefix) || stream.readableEnded) return;
      started.set(stream, { at: Date.now(), path });
      // Let go once the request has arrived, so that no finished call's stream is held until the next sweep.
      stream.on("end", arrived);
    },
    full() {
      if (started.size < maxUnfinished) return false;
      // The oldest first: streams reset or ended since the last sweep are let go until one still waits.
      for (const [stream] of started) {
        if (!(stream.readableEnded || stream.closed || stream.destroyed)) break;
        started.delete(stream);
      }
      return started.size >= maxUnfinished;
    },
    stop() {
      clearInterval(timer);
      started.clear();
    },
  };
}

/** Ends the call of `stream`; true when that answered it (CANCELLED), false when it had been answered already. */
function cancel(stream: ServerHttp2Stream, timeoutMs: number): boolean {
  // grpc-js finds its call cancelled and reads no more of the request. One whose message had come whole it still
  // runs once Node ends the closed stream's request; bind-service leaves that alone, as answered here.
  if (stream.headersSent) {
    stream.close(http2Constants.NGHTTP2_CANCEL);
    return false;
  }
  endWithStatus(stream, status.CANCELLED, `the request did not arrive in full (half-closed) within ${timeoutMs} ms of the call's start; the server cancelled the call and nothing was done`);
  return true;
}
