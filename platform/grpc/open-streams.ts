import { constants as http2Constants, type Http2SecureServer, type Http2Server, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";

/** A server's open streams, shared out among its connections; see `shareOpenStreams`. */
export interface OpenStreams {
  /** Follows the connections of one of the server's listeners. */
  attach(listener: Http2Server | Http2SecureServer): void;
  /**
   * Counts `stream` until it closes, closing first the connection that
   * holds the most open streams when the server already holds its bound.
   * False when the stream's own connection is gone (closed for room, or
   * before): nothing more is to be done with it.
   */
  admit(stream: ServerHttp2Stream): boolean;
  /** Streams open now, on all connections. */
  readonly open: number;
  /** The streams each connection may open at once now (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS). */
  readonly share: number;
}

/**
 * At most about `max` streams open at once over all of a server's
 * connections. A client may open as many streams on one connection as
 * HTTP/2's SETTINGS let it, and as many connections as `maxConnections`
 * (4,096). A stream the server refuses at once still lives until its
 * answer and reset are written, which a client that reads nothing never
 * lets happen, and Node makes every stream whose HEADERS arrive in one
 * turn of the event loop, on all connections, before any is let go: 600
 * TLS connections of 700 streams that each sent a length prefix, read
 * nothing, and sent it all at once took the product service's heap past
 * its 128 MiB limit (about 4.6 KiB a stream, 56,000 of them held), and
 * the process died, `npm start` with it. No bound the server checks
 * stream by stream reaches them: closing a connection lets its streams go
 * only at the loop's next turn.
 *
 * So each connection is told how many streams it may open
 * (SETTINGS_MAX_CONCURRENT_STREAMS): `perConnection` while the connections
 * are few, else `max` shared among them, rounded down to a power of two
 * (at least one each), told again to every connection as the count of
 * connections crosses a power of two: lowered at once, raised only when a
 * quarter more connections would still leave the higher figure. Raised at
 * once too, a client that opened and closed one connection across 2,048
 * had the server tell 2,048 others twice per turn: 308 turns in 20 s,
 * 678,000 SETTINGS frames, the product service at 93% of a core and a
 * GetProduct at 200 ms in place of 40; now the others are told once, and
 * again only after some 400 connections have gone. HTTP/2's own layer (nghttp2) turns a
 * stream past that away (RST_STREAM REFUSED_STREAM, which clients may
 * retry) before Node makes anything of it, from the moment the server has
 * sent the new figure, before the client acknowledges it; a client that
 * acknowledged it and opens more anyway has broken HTTP/2's rules, and
 * nghttp2 closes its connection. A well-behaved client holds its own calls
 * past that until some end, as clients do with any server's limit. The
 * 600 connections above now leave the heap at 48 MiB. The price: many
 * connections, idle ones too, hold every connection to a small share (2
 * each at 4,096), as many connections already keep new clients out; a
 * proxy with a per-client limit is the answer to both.
 *
 * A connection keeps the streams it opened under an earlier, higher
 * share, so the sum can pass `max` while connections come and go; then a
 * stream that comes while `max` are open closes the connection that holds
 * the most (GOAWAY ENHANCE_YOUR_CALM, then its socket; `closed` hears its
 * peer's address and how many streams it held), and is served as any
 * other unless it came on that connection. A client that leaves ten of
 * the server's SETTINGS unacknowledged is closed by Node (GOAWAY
 * INTERNAL_ERROR), and `closed` hears of it too. `max` is well above
 * what a server serves at once (admission's capacity, calls whose requests
 * are still coming in, reflection streams), so it binds only when the
 * connections are many.
 */
export function shareOpenStreams(max: number, perConnection: number, closed: (peer: string | undefined, streams: number) => void): OpenStreams {
  const listeners: Array<Http2Server | Http2SecureServer> = [];
  /** Each connection, and the share it was last told. */
  const sessions = new Map<ServerHttp2Session, number>();
  /** Open streams by connection; a connection closed for room is taken out at once, and its streams' closes are not counted again. */
  const held = new Map<ServerHttp2Session, number>();
  let open = 0;

  const shareOf = (connections: number): number => {
    const fair = Math.floor(max / Math.max(1, connections));
    if (fair >= perConnection) return perConnection;
    let power = 1;
    while (power * 2 <= fair) power *= 2;
    return power;
  };
  let share = shareOf(1);
  const close = (session: ServerHttp2Session): void => {
    const streams = held.get(session) ?? 0;
    held.delete(session);
    open -= streams;
    closed(session.socket?.remoteAddress, streams);
    if (!session.destroyed && !session.closed) session.goaway(http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
    session.destroy(undefined, http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
  };
  const tell = (session: ServerHttp2Session): void => {
    if (session.destroyed || sessions.get(session) === share) return;
    sessions.set(session, share);
    session.settings({ maxConcurrentStreams: share });
  };
  const reshare = (): void => {
    // Lowered as soon as the count crosses a power of two; raised only once a quarter more connections would still
    // leave the higher share (see above).
    const lower = shareOf(sessions.size);
    const next = lower < share ? lower : Math.max(share, shareOf(sessions.size + Math.floor(sessions.size / 4)));
    if (next === share) return;
    share = next;
    for (const listener of listeners) listener.updateSettings({ maxConcurrentStreams: share });
    for (const session of sessions.keys()) tell(session);
  };
  const release = (session: ServerHttp2Session): void => {
    const streams = held.get(session);
    if (streams === undefined) return;
    open--;
    if (streams === 1) held.delete(session);
    else held.set(session, streams - 1);
  };
  const heaviest = (): ServerHttp2Session | undefined => {
    let found: ServerHttp2Session | undefined;
    let most = 0;
    for (const [session, streams] of held) {
      if (streams > most) {
        found = session;
        most = streams;
      }
    }
    return found;
  };

  return {
    attach(listener) {
      listeners.push(listener);
      listener.updateSettings({ maxConcurrentStreams: share });
      listener.on("session", (session: ServerHttp2Session) => {
        // Made with the listener's figure, which the new count may lower: reshare() tells it, with the others, where it does.
        sessions.set(session, share);
        const peer = session.socket?.remoteAddress;
        // Node closes a connection whose client has left ten SETTINGS unacknowledged (GOAWAY INTERNAL_ERROR).
        session.on("error", (err: NodeJS.ErrnoException) => {
          if (err.code === "ERR_HTTP2_MAX_PENDING_SETTINGS_ACK") closed(peer, held.get(session) ?? 0);
        });
        session.once("close", () => {
          sessions.delete(session);
          reshare();
        });
        reshare();
      });
    },
    admit(stream) {
      const session = stream.session as ServerHttp2Session | undefined;
      if (!session || session.destroyed) return false;
      if (open >= max) {
        const most = heaviest();
        if (most) close(most);
        if (most === session) return false;
      }
      open++;
      held.set(session, (held.get(session) ?? 0) + 1);
      stream.once("close", () => release(session));
      return true;
    },
    get open() {
      return open;
    },
    get share() {
      return share;
    },
  };
}
