import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Socket } from "node:net";

/**
 * Holds `server` to `maxConnections` connections at once. One that comes
 * past them closes the oldest whose request is not being answered (idle
 * between requests, or still sending one), or is closed itself when every
 * one held is being answered. Node's own bound (`server.maxConnections`)
 * closes the newcomer, so that connections sending their request a byte at
 * a time kept every other out until their request timeout closed them.
 */
export function holdConnections(server: Server, maxConnections: number): void {
  // The connections held, oldest first, and how many requests each has being answered.
  const held = new Set<Socket>();
  const answering = new WeakMap<Socket, number>();
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    answering.set(socket, (answering.get(socket) ?? 0) + 1);
    res.once("close", () => answering.set(socket, (answering.get(socket) ?? 1) - 1));
  });
  server.on("connection", (socket: Socket) => {
    if (held.size >= maxConnections) {
      const idle = [...held].find((open) => !answering.get(open));
      if (!idle) return void socket.destroy();
      held.delete(idle);
      idle.destroy();
    }
    held.add(socket);
    socket.once("close", () => held.delete(socket));
  });
}
