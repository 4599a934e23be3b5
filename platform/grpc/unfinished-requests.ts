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

/** Why a call was answered before its request had arrived in full: its time ran out, or what the waiting calls held. */
export type UnfinishedRefusal = "request_timeout" | "unfinished_bytes";

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
 * when `limits.count` calls wait so, for the server to refuse new ones.
 * What those calls have received so far is counted too: a call whose
 * request takes the sum past `limits.bytes` is answered RESOURCE_EXHAUSTED
 * at once (`unfinished_bytes`). Without it, a count of calls that each
 * hold up to the receive cap could hold a GiB: 1,000 of 200 KB each held
 * 226 MB of a service's memory for the 30 s they may wait.
 */
export function watchUnfinishedRequests(
  timeoutMs: number,
  limits: { readonly count: number; readonly bytes: number },
  onCancel: (stream: ServerHttp2Stream, path: string | undefined, reason: UnfinishedRefusal) => void,
): UnfinishedRequests {
  const started = new Map<ServerHttp2Stream, { readonly at: number; readonly path: string | undefined; bytes: number }>();
  let heldBytes = 0;
  const forget = (stream: ServerHttp2Stream): void => {
    const entry = started.get(stream);
    if (!entry) return;
    heldBytes -= entry.bytes;
    started.delete(stream);
  };
  const sweep = (): void => {
    const now = Date.now();
    for (const [stream, { at, path }] of started) {
      if (stream.readableEnded || stream.closed || stream.destroyed) {
        forget(stream);
        continue;
      }
      // Every entry each time, not only the oldest: a stream reset before its request ended is let go within a second.
      if (now - at < timeoutMs) continue;
      forget(stream);
      if (cancel(stream, status.CANCELLED, `the request did not arrive in full (half-closed) within ${timeoutMs} ms of the call's start; the server cancelled the call and nothing was done`)) {
        onCancel(stream, path, "request_timeout");
      }
    }
  };
  // One listener of each for every stream ('end' comes once): no closure per call.
  function arrived(this: ServerHttp2Stream): void {
    forget(this);
  }
  function received(this: ServerHttp2Stream, chunk: Buffer): void {
    const entry = started.get(this);
    if (!entry) return;
    entry.bytes += chunk.length;
    heldBytes += chunk.length;
    if (heldBytes <= limits.bytes) return;
    forget(this);
    const message = `the server holds ${limits.bytes} bytes of requests that have not arrived in full; nothing was done, try again shortly`;
    if (cancel(this, status.RESOURCE_EXHAUSTED, message)) onCancel(this, entry.path, "unfinished_bytes");
  }
  const timer = setInterval(sweep, Math.min(1_000, Math.max(10, Math.floor(timeoutMs / 4)))).unref();
  return {
    watch(stream, path) {
      if (path?.startsWith(reflectionPrefix) || stream.readableEnded) return;
      started.set(stream, { at: Date.now(), path, bytes: 0 });
      // Let go once the request has arrived, so that no finished call's stream is held until the next sweep.
      stream.on("end", arrived);
      stream.on("data", received);
    },
    full() {
      if (started.size < limits.count) return false;
      // The oldest first: streams reset or ended since the last sweep are let go until one still waits.
      for (const [stream] of started) {
        if (!(stream.readableEnded || stream.closed || stream.destroyed)) break;
        forget(stream);
      }
      return started.size >= limits.count;
    },
    stop() {
      clearInterval(timer);
      started.clear();
      heldBytes = 0;
    },
  };
}

/** Ends the call of `stream`; true when that answered it (with `code`), false when it had been answered already. */
function cancel(stream: ServerHttp2Stream, code: status, message: string): boolean {
  // grpc-js finds its call cancelled and reads no more of the request. One whose message had come whole it still
  // runs once Node ends the closed stream's request; bind-service leaves that alone, as answered here.
  if (stream.headersSent) {
    stream.close(http2Constants.NGHTTP2_CANCEL);
    return false;
  }
  endWithStatus(stream, code, message);
  return true;
}
