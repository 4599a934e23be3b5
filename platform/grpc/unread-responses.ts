import { constants as http2Constants, type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { Code, StatusError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { checkOptions, positiveInteger } from "../options/index.js";

/** How long answers may wait for callers who do not take them, and how much of them; see `watchUnreadResponses`. */
export interface UnreadResponseOptions {
  /** How long an answer may wait, once written, for its caller to take all of it before its call is reset. Default 30 s. */
  readonly sendTimeoutMs?: number;
  /** The most bytes of answers waiting for their callers to take them; past it, the calls that have waited longest are reset. Default 32 MiB. */
  readonly maxBytes?: number;
  /** The most bytes of answers waiting on one connection; past it, its new calls are refused before they run. Default 8 MiB. */
  readonly maxBytesPerConnection?: number;
  /** How often the waiting responses are looked at. Default 250 ms. */
  readonly checkMs?: number;
}

export interface UnreadResponses {
  /** Follows one stream of the server until it closes. */
  watch(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void;
  /**
   * RESOURCE_EXHAUSTED when the connection `stream` came on holds more than
   * maxBytesPerConnection of answers its caller has not taken: a call to
   * refuse before its handler runs. Undefined otherwise.
   */
  refusal(stream: ServerHttp2Stream): StatusError | undefined;
  /** Bytes of answers waiting for their callers at the last look. */
  readonly waitingBytes: number;
  /** Calls reset so far because their callers did not take their answers. */
  readonly reset: number;
  /** Stops looking (the server is shutting down). */
  stop(): void;
}

interface Watched {
  readonly method: string;
  /** The streams open on its connection, itself included. */
  readonly connection: Set<ServerHttp2Stream> | undefined;
  /** Bytes the stream held unsent at the last look. */
  pending: number;
  /** When it was first seen holding unsent bytes, since it last held none. */
  since: number | undefined;
}

/**
 * Bounds the memory a server's answers hold while their callers do not take
 * them. HTTP/2 lets a caller stop reading (it sends no WINDOW_UPDATE), and
 * grpc-js then keeps the whole encoded answer of the call until the caller
 * reads or its deadline passes, outside V8's heap, where the heap's own
 * limit does not reach: a few hundred paused calls of 5 MB pages held 2 GiB
 * of a service. Admission control does not see it, as the handler has
 * returned.
 *
 * A call on a connection whose answers waiting pass `maxBytesPerConnection`
 * is refused before its handler runs (RESOURCE_EXHAUSTED, nothing done):
 * its caller is not taking what it asked for already, and the answer would
 * only wait with the others. Calls are reset: an answer its caller has not
 * taken all of `sendTimeoutMs` after it was written, and, while the answers
 * waiting on every connection pass `maxBytes`, those that have waited
 * longest. Node tells how much of a
 * stream's writes are unfinished, not how far into one the caller has read,
 * so a caller that reads slowly counts as waiting until it has the whole
 * answer: at the defaults, 1 MiB (a list's largest page) has to go at
 * 35 KB/s or more. The reset is RST_STREAM with ENHANCE_YOUR_CALM, which
 * gRPC clients report as RESOURCE_EXHAUSTED: the call's work is done (a
 * retry with the same request id gets the same answer), only its answer
 * was dropped.
 */
export function watchUnreadResponses(logger: Logger, options: UnreadResponseOptions = {}): UnreadResponses {
  const factory = "unreadResponses";
  checkOptions(factory, options, ["sendTimeoutMs", "maxBytes", "maxBytesPerConnection", "checkMs"]);
  const sendTimeoutMs = positiveInteger(factory, "sendTimeoutMs", options.sendTimeoutMs, 30_000);
  const maxBytes = positiveInteger(factory, "maxBytes", options.maxBytes, 32 * 1024 * 1024);
  const maxBytesPerConnection = positiveInteger(factory, "maxBytesPerConnection", options.maxBytesPerConnection, 8 * 1024 * 1024);
  const checkMs = positiveInteger(factory, "checkMs", options.checkMs, 250);
  const streams = new Map<ServerHttp2Stream, Watched>();
  /** The streams open on each connection. */
  const connections = new WeakMap<Http2Session, Set<ServerHttp2Stream>>();
  const forget = (stream: ServerHttp2Stream): void => {
    streams.get(stream)?.connection?.delete(stream);
    streams.delete(stream);
  };
  // One listener for every stream ('close' comes once): no closure or once-wrapper per call.
  function closed(this: ServerHttp2Stream): void {
    forget(this);
  }
  let timer: NodeJS.Timeout | undefined;
  let waitingBytes = 0;
  let reset = 0;

  const look = (): void => {
    const now = Date.now();
    const waiting: Array<[ServerHttp2Stream, Watched]> = [];
    const dropped: Array<[ServerHttp2Stream, Watched]> = [];
    let total = 0;
    for (const entry of streams) {
      const [stream, watched] = entry;
      const pending = stream.writableLength;
      watched.pending = pending;
      if (pending === 0) {
        watched.since = undefined;
        continue;
      }
      watched.since ??= now;
      if (now - watched.since >= sendTimeoutMs) dropped.push(entry);
      else {
        total += pending;
        waiting.push(entry);
      }
    }
    const late = dropped.length;
    if (total > maxBytes) {
      waiting.sort((a, b) => a[1].since! - b[1].since!);
      for (const entry of waiting) {
        if (total <= maxBytes) break;
        total -= entry[1].pending;
        dropped.push(entry);
      }
    }
    waitingBytes = total;
    if (dropped.length > 0) {
      let bytes = 0;
      const methods = new Set<string>();
      for (const [stream, watched] of dropped) {
        bytes += watched.pending;
        methods.add(watched.method);
        forget(stream);
        if (!stream.closed) stream.close(http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
      }
      reset += dropped.length;
      logger.warn(
        { calls: dropped.length, late, overBudget: dropped.length - late, bytes, methods: [...methods], sendTimeoutMs, maxBytes },
        "reset calls whose callers did not take their answers (RESOURCE_EXHAUSTED to them); their work was done",
      );
    }
    if (streams.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
  };

  return {
    watch(stream, headers) {
      const path = headers[":path"];
      const session = stream.session;
      let connection = session ? connections.get(session) : undefined;
      if (session && !connection) connections.set(session, (connection = new Set()));
      connection?.add(stream);
      streams.set(stream, { method: typeof path === "string" ? path : "", connection, pending: 0, since: undefined });
      stream.on("close", closed);
      timer ??= setInterval(look, checkMs).unref();
    },
    refusal(stream) {
      const open = streams.get(stream)?.connection;
      if (!open || open.size < 2) return undefined;
      let waiting = 0;
      for (const other of open) waiting += other.writableLength;
      if (waiting <= maxBytesPerConnection) return undefined;
      return new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `this connection holds ${(waiting / 1048576).toFixed(1)} MiB of answers its caller has not taken (at most ${(maxBytesPerConnection / 1048576).toFixed(1)} MiB); nothing was done, read those first`,
      );
    },
    get waitingBytes() {
      return waitingBytes;
    },
    get reset() {
      return reset;
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      for (const stream of [...streams.keys()]) forget(stream);
    },
  };
}
