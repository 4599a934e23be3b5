import type { Http2SecureServer, Http2Server, ServerHttp2Session, ServerHttp2Stream } from "node:http2";
import { closeConnection } from "./close-connection.js";

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
  /** The streams each connection of the address holding the most may open at once now (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS), the least any is told. */
  readonly share: number;
}

/** An address's connections, and the share they were last told. */
interface Peer {
  readonly sessions: Set<ServerHttp2Session>;
  share: number;
}

/** The window over which the most addresses at once is kept: an address counts in the shares for 10 to 20 s after it went. */
const addressWindowMs = 10_000;

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
 * are few, else `max` shared among the peers' addresses and each
 * address's part among its connections, rounded down to a power of two
 * (at least one each), told again to an address's connections as the
 * count of addresses times its connections crosses a power of two: lowered
 * at once, raised only when a quarter more would still leave the higher
 * figure. Shared among the connections alone, one client's 4,096 idle
 * connections held every other caller's connection to 2. The addresses
 * are counted as the most there were in the last 10 to 20 s (a share is
 * raised for fewer at a connection's coming or going after that): counted
 * as they were, one address that came and went again and again had the
 * others' connections told a new share twice each time. Raised at
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
 * connections of one address, idle ones too, hold each other to a small
 * share (2 each at 4,096), and behind a proxy, where every connection has
 * the proxy's address, so do all; a proxy with a per-client limit is the
 * answer there. Per connection, the cost is a set entry; the addresses
 * are gone through when one comes or goes.
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
 * connections are many. `reset` hears each stream that closed with an
 * error code (see reset-floods.ts), from the listener that counts it.
 */
export function shareOpenStreams(max: number, perConnection: number, closed: (peer: string | undefined, streams: number) => void, reset?: (session: ServerHttp2Session) => void): OpenStreams {
  const listeners: Array<Http2Server | Http2SecureServer> = [];
  /** Each connection, and the share it was last told. */
  const sessions = new Map<ServerHttp2Session, number>();
  /** Each address's connections, and the share they were last told. */
  const peers = new Map<string, Peer>();
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
  // What a new connection is told first (the listener's figure), before its address's share is told: the share of
  // all connections alike, at most what one address of many would get.
  let share = shareOf(1);
  const close = (session: ServerHttp2Session): void => {
    const streams = held.get(session) ?? 0;
    held.delete(session);
    open -= streams;
    closed(session.socket?.remoteAddress, streams);
    closeConnection(session);
  };
  const tell = (session: ServerHttp2Session, streams: number): void => {
    if (session.destroyed || sessions.get(session) === streams) return;
    sessions.set(session, streams);
    session.settings({ maxConcurrentStreams: streams });
  };
  /** Lowered as soon as the count crosses a power of two; raised only once a quarter more would still leave the higher share (see above). */
  const nextShare = (current: number, connections: number): number => {
    const lower = shareOf(connections);
    return lower < current ? lower : Math.max(current, shareOf(connections + Math.floor(connections / 4)));
  };
  // The addresses the shares are made for: the most there were in this window or the one before. Counted as they are,
  // one address that connected and left again and again had another's 100 connections told a new share each time.
  let addressesNow = 0;
  let addressesBefore = 0;
  let windowStart = -Infinity;
  let addressesTold = 1;
  const addresses = (): number => {
    const now = performance.now();
    if (now - windowStart >= addressWindowMs) {
      addressesBefore = now - windowStart < 2 * addressWindowMs ? addressesNow : 0;
      addressesNow = 0;
      windowStart = now;
    }
    if (peers.size > addressesNow) addressesNow = peers.size;
    return Math.max(1, addressesNow, addressesBefore);
  };
  /** Tells the connections of one address their share: max shared among `count` addresses, each address's part among its connections. */
  const resharePeer = (peer: Peer, count: number): void => {
    const next = nextShare(peer.share, count * peer.sessions.size);
    if (next === peer.share) return;
    peer.share = next;
    for (const session of peer.sessions) tell(session, next);
  };
  /** After `peer`'s connections changed: its share, and every address's where the count of addresses changed. */
  const reshare = (peer: Peer): void => {
    const next = nextShare(share, sessions.size);
    if (next !== share) {
      share = next;
      for (const listener of listeners) listener.updateSettings({ maxConcurrentStreams: share });
    }
    const count = addresses();
    if (count !== addressesTold) {
      addressesTold = count;
      for (const each of peers.values()) resharePeer(each, count);
    }
    resharePeer(peer, count);
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
        // Made with the listener's figure; its address's share is told to it (and to the address's others) where it differs.
        sessions.set(session, share);
        const peer = session.socket?.remoteAddress;
        const key = peer ?? "";
        let own = peers.get(key);
        if (!own) peers.set(key, (own = { sessions: new Set(), share: perConnection }));
        const mine = own;
        mine.sessions.add(session);
        // Node closes a connection whose client has left ten SETTINGS unacknowledged (GOAWAY INTERNAL_ERROR).
        session.on("error", (err: NodeJS.ErrnoException) => {
          if (err.code === "ERR_HTTP2_MAX_PENDING_SETTINGS_ACK") closed(peer, held.get(session) ?? 0);
        });
        session.once("close", () => {
          sessions.delete(session);
          mine.sessions.delete(session);
          if (mine.sessions.size === 0 && peers.get(key) === mine) peers.delete(key);
          reshare(mine);
        });
        reshare(mine);
        tell(session, mine.share);
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
      stream.once("close", () => {
        release(session);
        if (stream.rstCode && reset) reset(session);
      });
      return true;
    },
    get open() {
      return open;
    },
    get share() {
      let least = shareOf(0);
      for (const peer of peers.values()) if (peer.share < least) least = peer.share;
      return least;
    },
  };
}
