import { createServer as createHttp2Server, type ServerHttp2Stream } from "node:http2";
import type { Socket } from "node:net";
import type { Server as TlsServer } from "node:tls";
import { status } from "@grpc/grpc-js";
import { respondWithStatus } from "./grpc-status.js";

/** What a plaintext client of a TLS server's calls are answered with, unless the server is given its own words. */
export const plaintextClientMessage = "this port takes gRPC over TLS, and this connection is plaintext: connect with TLS, trusting the CA that issued the server's certificate";

// The first bytes of every HTTP/2 client's connection (RFC 9113, 3.4); a TLS connection's are a handshake record, 0x16.
const http2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const tlsHandshakeRecord = 0x16;

/**
 * Answers a plaintext HTTP/2 client of `listener`, a TLS server, in
 * plaintext HTTP/2: each call it makes gets UNAVAILABLE with `message` and
 * its connection is closed (GOAWAY) once that is out, where the TLS
 * handshake failed on its preface and the client saw the connection reset
 * ("EOF" in grpcurl -plaintext, "No connection established. Last error:
 * Failed to connect" in grpc-js). Those calls go to an HTTP/2 server of
 * their own, which answers nothing else: none reaches the TLS server's
 * streams or a handler.
 *
 * Each connection's first bytes are looked at once, before the TLS server
 * takes the connection (the server's 'connection' listeners, run with them
 * put back): a TLS handshake record, or anything but HTTP/2's
 * preface, goes to it as before. A connection that sends nothing within
 * `timeoutMs` is dropped (`dropped` hears it), as the TLS server drops one
 * whose handshake has not ended by then; a plaintext one that makes no
 * call within `timeoutMs` is closed.
 */
export function answerPlaintextClients(listener: TlsServer, message: string, timeoutMs: number, dropped: (socket: Socket) => void): void {
  // tls.Server's own, which starts the handshake, and grpc-js's before it (which drops a connection while its credentials are not loaded).
  const tlsListeners = listener.listeners("connection") as Array<(socket: Socket) => void>;
  if (tlsListeners.length === 0) throw new Error("node:tls no longer takes a connection with a 'connection' listener on its server; see platform/grpc/plaintext-clients.ts");
  listener.removeAllListeners("connection");
  const plaintext = createHttp2Server({ settings: { maxConcurrentStreams: 8 } });
  plaintext.on("session", (session) => session.setTimeout(timeoutMs, () => session.destroy()));
  plaintext.on("stream", (stream: ServerHttp2Stream) => {
    stream.on("error", () => {});
    respondWithStatus(stream, status.UNAVAILABLE, message);
    stream.session?.close();
  });
  listener.once("close", () => plaintext.close());
  listener.on("connection", (socket: Socket) => {
    const quiet = () => {};
    // Its peer may reset it before it sends anything: no one else listens for that yet.
    socket.on("error", quiet);
    const timer = setTimeout(() => {
      dropped(socket);
      socket.destroy();
    }, timeoutMs).unref();
    const ended = () => {
      clearTimeout(timer);
      socket.destroy();
    };
    socket.once("end", ended);
    const firstBytes = () => {
      const chunk = socket.read() as Buffer | null;
      if (chunk === null) return;
      clearTimeout(timer);
      socket.removeListener("readable", firstBytes);
      socket.removeListener("end", ended);
      socket.removeListener("error", quiet);
      socket.unshift(chunk);
      const preface = chunk[0] !== tlsHandshakeRecord && chunk.subarray(0, http2Preface.length).equals(http2Preface.subarray(0, Math.min(chunk.length, http2Preface.length)));
      if (preface) plaintext.emit("connection", socket);
      else for (const take of tlsListeners) take.call(listener, socket);
    };
    socket.on("readable", firstBytes);
  });
}
