import type { Server as NetServer, Socket } from "node:net";

/**
 * At most `max` connections open on `listener` at once, shared among the
 * peers' addresses. A connection costs the server about 6.5 KiB of heap
 * once its preface is in, with no call and no token: 14,000 idle clients
 * took the product service's heap to its 128 MiB limit and the process
 * died. With the bound alone, one client's 4,096 idle connections (from one
 * address, answering every PING) kept every other caller out (refused at
 * once) and took the service from 99 to 258 MB resident.
 *
 * So a connection that comes while `max` are open is let in when its
 * address holds fewer connections than the address holding the most, whose
 * newest connection is closed in its place; otherwise it is closed itself,
 * before its TLS handshake, as all were before. A server that is full of
 * one address's connections still takes a caller from another, and of
 * callers that each hold one, the newest is turned away as before. Behind
 * a proxy every connection has the proxy's address, and the bound is the
 * only limit, as without this. `dropped` hears each connection closed, with
 * its peer's address. Per connection, the cost is a map entry and a
 * listener; the scan over addresses is made only when the server is full.
 */
export function boundConnections(listener: NetServer, max: number, dropped: (peer: string | undefined) => void): void {
  const byPeer = new Map<string, Set<Socket>>();
  let open = 0;
  // One past the bound: net.Server closes a connection past its own bound before anyone sees it, and the one past
  // ours must be seen here to decide who gives way. Those that come before a closed one is gone are net's to close.
  listener.maxConnections = max + 1;
  listener.on("drop", (data?: { remoteAddress?: string }) => dropped(data?.remoteAddress));
  // Before the TLS or HTTP/2 listener, so that a connection closed here costs no handshake.
  listener.prependListener("connection", (socket: Socket) => {
    const peer = socket.remoteAddress ?? "";
    let own = byPeer.get(peer);
    if (!own) byPeer.set(peer, (own = new Set()));
    const held = own;
    held.add(socket);
    open++;
    socket.once("close", () => {
      open--;
      held.delete(socket);
      if (held.size === 0 && byPeer.get(peer) === held) byPeer.delete(peer);
    });
    if (open <= max) return;
    let most = held;
    let mostPeer = peer;
    for (const [address, sockets] of byPeer) {
      if (sockets.size > most.size) {
        most = sockets;
        mostPeer = address;
      }
    }
    // Sets keep their order of insertion: the last is the newest, the likeliest to carry no call yet.
    const closing = most === held ? socket : [...most].at(-1)!;
    dropped(mostPeer === "" ? undefined : mostPeer);
    closing.destroy();
  });
}
