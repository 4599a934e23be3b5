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
  /**
   * The most bytes of answers one connection may hold unsent, counting those
   * of its calls under way at their method's usual size: past it, its new
   * calls wait to run until its caller has taken some, and are refused
   * before they run while it takes none. Default 8 MiB.
   */
  readonly maxBytesPerConnection?: number;
  /** How often connections are looked at. Default 250 ms. */
  readonly checkMs?: number;
}

export interface UnreadResponses {
  /** Follows one stream of the server until it closes. */
  watch(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void;
  /**
   * Whether a call on `stream`, whose answer is expected to take about
   * `answerBytes`, may run: undefined when it may now; a promise that
   * resolves when it may, as its connection already holds or expects
   * maxBytesPerConnection of answers its caller has not taken (it rejects
   * with RESOURCE_EXHAUSTED should the connection stop reading, or should
   * running after two seconds of waiting take it past twice
   * maxBytesPerConnection, and with CANCELLED should the call end
   * meanwhile); RESOURCE_EXHAUSTED at once
   * when the connection was stalled at the last look and holds more than
   * maxBytesPerConnection. Once let in, the call counts at `answerBytes`
   * until `answered`.
   */
  admit(stream: ServerHttp2Stream, answerBytes: number): StatusError | Promise<void> | undefined;
  /** The call on `stream` has written its answer (now counted as unsent bytes, if its caller has not taken them). */
  answered(stream: ServerHttp2Stream): void;
  /** Bytes of answers waiting on stalled connections at the last look. */
  readonly stalledBytes: number;
  /** Calls cancelled so far because their connections sent nothing. */
  readonly cancelled: number;
  /** Stops looking (the server is shutting down). */
  stop(): void;
}

/** One open stream: its method, and the bytes its answer is expected to take while its call runs (0 once answered). */
interface Watched {
  readonly method: string;
  expected: number;
}

/** A call that waits for its connection's caller to take some answers. */
interface Waiter {
  readonly stream: ServerHttp2Stream;
  readonly answerBytes: number;
  /** The look it began waiting at, or last found its connection taking answers (see release). */
  since: number;
  /** The bytes its connection's socket had written then. */
  writtenAt: number;
  readonly resolve: () => void;
  readonly reject: (err: StatusError) => void;
}

interface Connection {
  readonly session: Http2Session;
  /** Its open streams, oldest first. */
  readonly streams: Map<ServerHttp2Stream, Watched>;
  /** The bytes the answers of its calls under way are expected to take. */
  expected: number;
  /** Its calls waiting to run, in the order they came. */
  readonly waiting: Waiter[];
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
 * The looks a call waits for room on a connection that is not stalled
 * before it runs anyway (two seconds at the default `checkMs`): twice
 * what finding a connection stalled takes, so that a caller that reads
 * none of its answers has its calls refused first, while one whose
 * connection is held by others' answers (a proxy's connection carrying a
 * paused user) waits a bounded time. It runs anyway only while the
 * connection's answers, with its own, stay within `overdueFactor` times
 * `maxBytesPerConnection`, and is refused past that: a connection counts
 * as sending whenever its socket writes anything (a PING's answer, a
 * trailer, a small answer read in full), so a caller that pings, or reads
 * its small answers and none of its large ones, is never found stalled,
 * and without that bound had every call it sent run after two seconds.
 * The bound counts calls under way at their expected size, so a caller
 * with more than that of slow calls under way has its later ones refused.
 * A call whose connection wrote at least its expected answer's worth over
 * those looks waits on instead, its looks counted again: its caller reads,
 * and the call waits its turn behind that caller's own answers (a burst
 * of large ones, a slow network), which neither running it past the bound
 * nor refusing it would serve.
 */
const waitLooks = 2 * stalledAfterLooks;

/** How far past `maxBytesPerConnection` a call that waited `waitLooks` may take its connection (see waitLooks). */
const overdueFactor = 2;

/**
 * Bounds the memory a server's answers hold while their callers take none
 * of them. HTTP/2 lets a caller stop reading (it sends no WINDOW_UPDATE),
 * and grpc-js then keeps the whole encoded answer of the call until the
 * caller reads or its deadline passes, outside V8's heap, where the heap's
 * own limit does not reach: a few hundred paused calls of 5 MB pages held
 * 2 GiB of a service. Admission control does not see it, as the handler has
 * returned.
 *
 * Backpressure first: a connection's new call waits to run while the
 * connection's unsent answers, with the answers its calls under way are
 * expected to write (each at the largest answer its method gave in the
 * last 10 to 20 seconds), would pass
 * `maxBytesPerConnection`; it runs as its caller takes answers. One call at
 * a time always runs, and a call that fits runs though others wait (a
 * small answer does not wait behind a large one). So a caller that asks
 * for many large answers at once gets them as fast as it reads them, and
 * one that reads none has at most about `maxBytesPerConnection` of answers
 * made for it, however many calls it sends in one burst. A call that has waited two seconds (at the
 * default `checkMs`) on a connection that is not stalled runs anyway, as
 * long as the connection then holds at most twice
 * `maxBytesPerConnection`, and is refused otherwise.
 *
 * Node tells how much of each stream's answer is unsent, which is most of a
 * large answer for a caller reading at full speed too (HTTP/2 lets 64 KiB
 * go ahead of its reads), and how many bytes each connection's socket has
 * written. So a connection counts as stalled when it holds unsent answers
 * and wrote nothing over four looks in a row, `checkMs` apart (a second at
 * the default): a caller that reads, however slowly, is never stalled. A
 * stalled connection's calls waiting to run, and its new calls while it
 * holds more than `maxBytesPerConnection`, are refused before they run
 * (RESOURCE_EXHAUSTED, nothing done); its calls are cancelled once it has
 * sent nothing for `stallMs`, and, while answers on stalled connections
 * pass `maxBytes`, the calls of the connections stalled longest are
 * cancelled, oldest first. A cancelled call's work was done; its caller,
 * which was not reading, gets CANCELLED (RST_STREAM with CANCEL) if it
 * reads again. Not covered: one paused stream among others its connection
 * reads (a proxy's connection carrying a paused user), whose answer waits
 * for its deadline; once such answers hold `maxBytesPerConnection`, the
 * connection's later calls wait, it then sends nothing and is found
 * stalled, and its calls are refused until those answers go.
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
  /** Looks so far. */
  let looks = 0;

  const written = (session: Http2Session): number => session.socket?.bytesWritten ?? 0;
  const unsent = (connection: Connection): number => {
    let bytes = 0;
    for (const stream of connection.streams.keys()) bytes += stream.writableLength;
    return bytes;
  };
  const isStalled = (connection: Connection): boolean => connection.stalledLooks >= stalledAfterLooks;
  const refusalFor = (waiting: number) =>
    new StatusError(
      Code.RESOURCE_EXHAUSTED,
      `this connection holds ${(waiting / 1048576).toFixed(1)} MiB of answers its caller has not taken, and has taken none for a second or more; nothing was done, read those first`,
    );
  const overdueRefusal = (waiting: number) =>
    new StatusError(
      Code.RESOURCE_EXHAUSTED,
      `this connection holds ${(waiting / 1048576).toFixed(1)} MiB of answers its callers have not taken, and the call waited ${waitLooks} looks for room (at most ${((overdueFactor * maxBytesPerConnection) / 1048576).toFixed(1)} MiB then); nothing was done, read those first`,
    );
  /** Whether a call expecting `answerBytes` fits beside `pending` unsent bytes: one call at a time always does. */
  const fits = (connection: Connection, pending: number, answerBytes: number): boolean =>
    (connection.expected === 0 && pending === 0) || pending + connection.expected + answerBytes <= maxBytesPerConnection;
  const start = (connection: Connection, stream: ServerHttp2Stream, answerBytes: number): void => {
    const watched = connection.streams.get(stream);
    if (!watched) return;
    watched.expected = answerBytes;
    connection.expected += answerBytes;
  };
  /**
   * Lets the calls waiting on `connection` run, oldest first, each that
   * fits (a small answer need not wait behind a large one, which would
   * leave the connection sending nothing, to be found stalled), or, once
   * it has waited `waitLooks`, that fits within `overdueFactor` times the
   * bound (refusing one that does not); refuses them all once it is
   * stalled.
   */
  const release = (connection: Connection, pending = connection.waiting.length === 0 ? 0 : unsent(connection)): void => {
    if (connection.waiting.length === 0) return;
    if (isStalled(connection) && pending > 0) {
      const refusal = refusalFor(pending);
      for (const waiter of connection.waiting.splice(0)) waiter.reject(refusal);
      return;
    }
    let at = 0;
    while (at < connection.waiting.length) {
      const next = connection.waiting[at];
      if (!fits(connection, pending, next.answerBytes)) {
        if (looks - next.since < waitLooks) {
          at++;
          continue;
        }
        // Its connection wrote at least an answer's worth meanwhile: a caller that reads, whose calls wait their turn
        // behind its own answers (many large ones at once, a slow network), so it waits on rather than run past the
        // bound or be refused. A caller that pings, or reads small answers, moves less than the large ones it waits for.
        const socketWritten = written(connection.session);
        if (socketWritten - next.writtenAt >= next.answerBytes) {
          next.since = looks;
          next.writtenAt = socketWritten;
          at++;
          continue;
        }
        if (pending + connection.expected + next.answerBytes > overdueFactor * maxBytesPerConnection) {
          connection.waiting.splice(at, 1);
          next.reject(overdueRefusal(pending));
          continue;
        }
      }
      connection.waiting.splice(at, 1);
      start(connection, next.stream, next.answerBytes);
      next.resolve();
    }
  };
  // One listener for every stream ('close' comes once): no closure or once-wrapper per call.
  function closed(this: ServerHttp2Stream): void {
    const connection = streamConnection.get(this);
    if (!connection) return;
    const watched = connection.streams.get(this);
    if (watched) connection.expected -= watched.expected;
    connection.streams.delete(this);
    const at = connection.waiting.findIndex((waiter) => waiter.stream === this);
    if (at >= 0) connection.waiting.splice(at, 1)[0].reject(new StatusError(Code.CANCELLED, "the call ended while it waited for its connection's caller to take answers; nothing was done"));
    if (connection.streams.size === 0) connections.delete(connection.session);
    else release(connection);
  }

  const look = (): void => {
    looks++;
    const now = Date.now();
    const late: Connection[] = [];
    const stalled: Connection[] = [];
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
      release(connection, pending);
      if (connection.stalledSince === undefined || !isStalled(connection)) continue;
      if (now - connection.stalledSince >= stallMs) late.push(connection);
      else {
        total += pending;
        stalled.push(connection);
      }
    }
    const dropped: Array<[ServerHttp2Stream, string]> = [];
    const drop = (connection: Connection, enough: () => boolean): void => {
      for (const [stream, { method }] of connection.streams) {
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
      stalled.sort((a, b) => a.stalledSince! - b.stalledSince!);
      for (const connection of stalled) drop(connection, () => total <= maxBytes);
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
      if (!connection) connections.set(session, (connection = { session, streams: new Map(), expected: 0, waiting: [], written: written(session), stalledSince: undefined, stalledLooks: 0 }));
      const path = headers[":path"];
      connection.streams.set(stream, { method: typeof path === "string" ? path : "", expected: 0 });
      streamConnection.set(stream, connection);
      stream.on("close", closed);
      timer ??= setInterval(look, checkMs).unref();
    },
    admit(stream, answerBytes) {
      const connection = streamConnection.get(stream);
      if (connection === undefined || stream.closed) return undefined;
      const pending = unsent(connection);
      if (isStalled(connection) && pending > maxBytesPerConnection) return refusalFor(pending);
      if (fits(connection, pending, answerBytes)) {
        start(connection, stream, answerBytes);
        return undefined;
      }
      return new Promise<void>((resolve, reject) => connection.waiting.push({ stream, answerBytes, since: looks, writtenAt: written(connection.session), resolve, reject }));
    },
    answered(stream) {
      const connection = streamConnection.get(stream);
      const watched = connection?.streams.get(stream);
      if (!connection || !watched || watched.expected === 0) return;
      connection.expected -= watched.expected;
      watched.expected = 0;
      release(connection);
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
