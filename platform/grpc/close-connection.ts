import { constants as http2Constants, type Http2Session } from "node:http2";

/**
 * Closes a connection at once, telling its client why: GOAWAY with `code`
 * (ENHANCE_YOUR_CALM unless given), then the session, which closes its
 * socket and every stream on it. A session destroyed already is left be.
 */
export function closeConnection(session: Http2Session, code: number = http2Constants.NGHTTP2_ENHANCE_YOUR_CALM): void {
  if (session.destroyed) return;
  if (!session.closed) session.goaway(code);
  session.destroy(undefined, code);
}
