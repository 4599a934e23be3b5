import { constants as http2Constants, type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { Code, StatusError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { checkOptions, positiveInteger } from "../options/index.js";

/** How long and how much answers may wait on connections whose callers take none of them; see `watchUnreadResponses`. */
export interface UnreadResponseOptions {
  /** How long a connection may hold answers while sending none of them before its calls are cancelled. Default 10 s. */
  readonly stallMs?: number;
  /** The most bytes of answers on stalled connections; past it, the calls of those stalled longest are cancelled. Default 32 MiB. */
  readonly maxBytes?: number;
  /** The most bytes of answers a stalled connection may hold; past it, its new calls are refused before they run. Default 8 MiB. */
  readonly maxBytesPerConnection?: number;
  /** How often connections are looked at. Default 250 ms. */
  readonly checkMs?: number;
}

export interface UnreadResponses {
  /** Follows one stream of the server until it closes. */
  watch(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void;
  /**
   * RESOURCE_EXHAUSTED when the connection `stream` came on was stalled at
   * the last look and holds more than maxBytesPerConnection of answers: a
   * call to refuse before its handler runs. Undefined otherwise.
   */
  refusal(stream: ServerHttp2Stream): StatusError | undefined;
  /** Bytes of answers waiting on stalled connections at the last look. */
  readonly stalledBytes: number;
  /** Calls cancelled so far because their connections sent nothing. */
  readonly cancelled: number;
  /** Stops looking (the server is shutting down). */
  stop(): void;
}

interface Connection {
  readonly session: Http2Session;
  /** Its open streams, oldest first, each with its method. */
  readonly streams: Map<ServerHttp2Stream, string>;
  /** The bytes its socket had written at the last look. */
  written: number;
  /** Since when it has held answers and sent nothing, as of the last look. */
  stalledSince: number | undefined;
  /** The looks in a row that found it so. */
  stalledLooks: number;
}

/**
 * The looks in a row a connection must be found sending nothing before it
 * counts as stalled (a second at the default `checkMs`): a caller that
 * pauses a moment (a collection, a busy machine) is not one that stopped.
 * Counted in looks, not time, so that a server whose own event loop was
 * held (and so could not send) does not blame its callers for it.
 */
const stalledAfterLooks = 4;

/**
 * Bounds the memory a server's answers hold while their callers take none
 * of them. HTTP/2 lets a caller stop reading (it sends no WINDOW_UPDATE),
 * and grpc-js then keeps the whole encoded answer of the call until the
 * caller reads or its deadline passes, outside V8's heap, where the heap's
 * own limit does not reach: a few hundred paused calls of 5 MB pages held
 * 2 GiB of a service. Admission control does not see it, as the handler has
 * returned.
 *
 * Node tells how much of each stream's answer is unsent, which is most of a
 * large answer for a caller reading at full speed too (HTTP/2 lets 64 KiB
 * go ahead of its reads), and how many bytes each connection's socket has
 * written. So a connection counts as stalled when it holds unsent answers
 * and wrote nothing over four looks in a row, `checkMs` apart (a second at
 * the default): a caller that reads, however slowly, is never stalled. A stalled connection's new calls
 * are refused before they run while it holds more than
 * `maxBytesPerConnection` (RESOURCE_EXHAUSTED, nothing done); its calls are
 * cancelled once it has sent nothing for `stallMs`, and, while answers on
 * stalled connections pass `maxBytes`, the calls of the connections stalled
 * longest are cancelled, oldest first. A cancelled call's work was done;
 * its caller, which was not reading, gets CANCELLED (RST_STREAM with
 * CANCEL) if it reads again. Not covered: one paused stream among others
 * its connection reads (a proxy's connection carrying a paused user), whose
 * answer waits for its deadline.
 */
export function watchUnreadResponses(logger: Logger, options: UnreadResponseOptions = {}): UnreadResponses {
  const factory = "unreadResponses";
  checkOptions(factory, options, ["stallMs", "maxBytes", "maxBytesPerConnection", "checkMs"]);
  const stallMs = positiveInteger(factory, "stallMs", options.stallMs, 10_000);
  const maxBytes = positiveInteger(factory, "maxBytes", options.maxBytes, 32 * 1024 * 1024);
  const maxBytesPerConnection = positiveInteger(factory, "maxBytesPerConnection", options.maxBytesPerConnection, 8 * 1024 * 1024);
  const checkMs = positiveInteger(factory, "checkMs", options.checkMs, 250);
  /** Connections with open streams. */
  const connections = new Map<Http2Session, Connection>();
  const streamConnection = new WeakMap<ServerHttp2Stream, Connection>();
  let timer: NodeJS.Timeout | undefined;
  let stalledBytes = 0;
  let cancelled = 0;

  const written = (session: Http2Session): number => session.socket?.bytesWritten ?? 0;
  const unsent = (connection: Connection): number => {
    let bytes = 0;
    for (const stream of connection.streams.keys()) bytes += stream.writableLength;
    return bytes;
  };
  // One listener for every stream ('close' comes once): no closure or once-wrapper per call.
  function closed(this: ServerHttp2Stream): void {
    const connection = streamConnection.get(this);
    if (!connection) return;
    connection.streams.delete(this);
    if (connection.streams.size === 0) connections.delete(connection.session);
  }

  const look = (): void => {
    const now = Date.now();
    const late: Connection[] = [];
    const stalled: Array<[Connection, number]> = [];
    let total = 0;
    for (const connection of connections.values()) {
      const pending = unsent(connection);
      const socketWritten = written(connection.session);
      if (pending === 0 || socketWritten !== connection.written) {
        connection.stalledSince = undefined;
        connection.stalledLooks = 0;
      } else {
        connection.stalledSince ??= now;
        connection.stalledLooks++;
      }
      connection.written = socketWritten;
      if (connection.stalledSince === undefined || connection.stalledLooks < stalledAfterLooks) continue;
      if (now - connection.stalledSince >= stallMs) late.push(connection);
      else {
        total += pending;
        stalled.push([connection, pending]);
      }
    }
    const dropped: Array<[ServerHttp2Stream, string]> = [];
    const drop = (connection: Connection, enough: () => boolean): void => {
      for (const [stream, method] of connection.streams) {
        if (enough()) return;
        const pending = stream.writableLength;
        if (pending === 0) continue;
        if (now - connection.stalledSince! < stallMs) total -= pending;
        dropped.push([stream, method]);
      }
    };
    for (const connection of late) drop(connection, () => false);
    const overBudget = dropped.length;
    if (total > maxBytes) {
      stalled.sort((a, b) => a[0].stalledSince! - b[0].stalledSince!);
      for (const [connection] of stalled) drop(connection, () => total <= maxBytes);
    }
    stalledBytes = Math.max(0, total);
    if (dropped.length > 0) {
      let bytes = 0;
      const methods = new Set<string>();
      for (const [stream, method] of dropped) {
        bytes += stream.writableLength;
        methods.add(method);
        if (!stream.closed) stream.close(http2Constants.NGHTTP2_CANCEL);
      }
      cancelled += dropped.length;
      logger.warn(
        { calls: dropped.length, stalledTooLong: overBudget, overBudget: dropped.length - overBudget, bytes, methods: [...methods], stallMs, maxBytes },
        "cancelled calls whose connections took none of their answers; their work was done",
      );
    }
    if (connections.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
  };

  return {
    watch(stream, headers) {
      const session = stream.session;
      if (!session) return;
      let connection = connections.get(session);
      if (!connection) connections.set(session, (connection = { session, streams: new Map(), written: written(session), stalledSince: undefined, stalledLooks: 0 }));
      const path = headers[":path"];
      connection.streams.set(stream, typeof path === "string" ? path : "");
      streamConnection.set(stream, connection);
      stream.on("close", closed);
      timer ??= setInterval(look, checkMs).unref();
    },
    refusal(stream) {
      const connection = streamConnection.get(stream);
      // A connection that sent some of its answers in the last looks, or held none, is read: nothing to count.
      if (connection === undefined || connection.stalledLooks < stalledAfterLooks) return undefined;
      const waiting = unsent(connection);
      if (waiting <= maxBytesPerConnection) return undefined;
      return new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `this connection holds ${(waiting / 1048576).toFixed(1)} MiB of answers its caller has not taken (at most ${(maxBytesPerConnection / 1048576).toFixed(1)} MiB while it takes none); nothing was done, read those first`,
      );
    },
    get stalledBytes() {
      return stalledBytes;
    },
    get cancelled() {
      return cancelled;
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      connections.clear();
    },
  };
}
