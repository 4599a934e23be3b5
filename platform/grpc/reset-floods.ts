import type { ServerHttp2Session } from "node:http2";
import { closeConnection } from "./close-connection.js";

/** What nghttp2 lets a client reset before it ends the connection: a burst of 1,000 streams, then 33 a second (Node's streamResetBurst and streamResetRate). */
const resetRatePerSecond = 33;
/** Streams reset beyond that rate, on one connection, past which each reset has the connection PINGed. */
const probeAfterResets = 100;

/** Hears the streams whose clients reset them; see `closeResetFloods`. */
export interface ResetFloods {
  /** A stream of `session` closed with an error code (RST_STREAM), its client's or the server's. */
  reset(session: ServerHttp2Session): void;
}

/**
 * Closes a connection that nghttp2 gave up on for a flood of resets
 * (HTTP/2's rapid reset: HEADERS, then RST_STREAM, again and again), within
 * `graceMs`. Past 1,000 resets, or 33 a second after, nghttp2 sends GOAWAY
 * and then neither reads the connection nor tells Node, whose session
 * stays open, unread, with its socket: a file descriptor, about 50 KB and
 * one of maxConnections' places each, until the PING check (30 to 60 s)
 * closes it. So once a connection's resets pass that rate by 100, each
 * reset while no PING is out PINGs it, and one that has not answered
 * within `graceMs` is closed (`dropped` hears its peer's address). nghttp2
 * answers a PING as it reads, so a client that resets many calls and
 * whose connection is read is left alone. Resets of streams closed already
 * reach nghttp2's count and not this one; a connection ended by those is
 * left to the PING check. Per stream, the cost is a subtraction; the
 * connections whose streams are never reset cost nothing.
 */
export function closeResetFloods(graceMs: number, dropped: (peer: string | undefined) => void): ResetFloods {
  /** Each connection's resets beyond the rate, when last counted, and whether a PING is out for them. */
  const counted = new WeakMap<ServerHttp2Session, { beyond: number; at: number; probing: boolean }>();
  const probe = (session: ServerHttp2Session, state: { probing: boolean }): void => {
    state.probing = true;
    const timer = setTimeout(() => {
      if (session.destroyed) return;
      dropped(session.socket?.remoteAddress);
      closeConnection(session);
    }, graceMs).unref();
    try {
      // False when ten PINGs are out already: the timer closes it.
      session.ping((err) => {
        if (err && !session.destroyed) return;
        clearTimeout(timer);
        state.probing = false;
      });
    } catch {
      // Closing already.
      clearTimeout(timer);
    }
  };
  return {
    reset(session) {
      const now = performance.now();
      let state = counted.get(session);
      if (!state) counted.set(session, (state = { beyond: 0, at: now, probing: false }));
      state.beyond = Math.max(0, state.beyond - ((now - state.at) / 1000) * resetRatePerSecond) + 1;
      state.at = now;
      if (state.beyond >= probeAfterResets && !state.probing && !session.destroyed) probe(session, state);
    },
  };
}
