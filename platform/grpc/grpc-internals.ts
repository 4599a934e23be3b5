/**
 * Every read of @grpc/grpc-js internals, in one file with its canary tests
 * beside it (grpc-internals.test.ts), so that an upgrade of grpc-js is this
 * file's work. Today: the node:http2 servers a grpc-js Server listens with,
 * which it keeps in a private map, and the HTTP/2 stream of a unary call.
 */
import type { Http2SecureServer, Http2Server, ServerHttp2Stream } from "node:http2";
import type { Server, ServerUnaryCall } from "@grpc/grpc-js";

/** The node:http2 servers of a grpc-js Server, one per bound address; call after bindAsync. */
export function http2ServersOf(server: Server): Array<Http2Server | Http2SecureServer> {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) throw new Error("@grpc/grpc-js no longer keeps its node:http2 servers in `http2Servers`; see platform/grpc/grpc-internals.ts");
  return [...servers.keys()] as Array<Http2Server | Http2SecureServer>;
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
