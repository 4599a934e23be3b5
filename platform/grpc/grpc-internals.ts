/**
 * Every read of @grpc/grpc-js internals, in one file with its canary tests
 * beside it (grpc-internals.test.ts), so that an upgrade of grpc-js is this
 * file's work. Today: the node:http2 servers a grpc-js Server listens with,
 * which it keeps in a private map, the listener it answers their streams
 * with, and the HTTP/2 stream of a unary call.
 */
import type { Http2SecureServer, Http2Server, IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import type { Server, ServerUnaryCall } from "@grpc/grpc-js";

/** The node:http2 servers of a grpc-js Server, one per bound address; call after bindAsync. */
export function http2ServersOf(server: Server): Array<Http2Server | Http2SecureServer> {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) throw new Error("@grpc/grpc-js no longer keeps its node:http2 servers in `http2Servers`; see platform/grpc/grpc-internals.ts");
  return [...servers.keys()] as Array<Http2Server | Http2SecureServer>;
}

/** A node:http2 server's 'stream' listener: a new stream, its headers, their flags and raw headers. */
export type StreamListener = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void;

/**
 * Takes grpc-js's 'stream' listener off one of its node:http2 servers (see
 * `http2ServersOf`) and returns it, for a listener of the caller's to run:
 * a stream that listener answers itself grpc-js then never sees. grpc-js
 * adds it in bindAsync, the only 'stream' listener there; throws when there
 * is not exactly one.
 */
export function takeStreamListener(listener: Http2Server | Http2SecureServer): StreamListener {
  const listeners = listener.listeners("stream");
  if (listeners.length !== 1) throw new Error(`@grpc/grpc-js no longer answers streams with one 'stream' listener on its node:http2 server (found ${listeners.length}); see platform/grpc/grpc-internals.ts`);
  const [grpcJs] = listeners as StreamListener[];
  listener.removeListener("stream", grpcJs);
  return grpcJs;
}

/**
 * The node:http2 stream a unary call came on (`ServerUnaryCallImpl.call`, a
 * server without interceptors' `BaseServerInterceptingCall`, and its
 * `stream`); undefined when grpc-js no longer keeps it there.
 */
export function http2StreamOf(call: ServerUnaryCall<unknown, unknown>): ServerHttp2Stream | undefined {
  const stream = (call as unknown as { call?: { stream?: { session?: unknown; writableLength?: unknown } } }).call?.stream;
  return stream !== undefined && typeof stream.writableLength === "number" && typeof stream.session === "object" ? (stream as ServerHttp2Stream) : undefined;
}
