/**
 * Every read of @grpc/grpc-js internals, in one file with its canary tests
 * beside it (grpc-internals.test.ts), so that an upgrade of grpc-js is this
 * file's work. Today: the node:http2 servers a grpc-js Server listens with,
 * which it keeps in a private map, the listener it answers their streams
 * with, the HTTP/2 stream of a unary call, the options grpc-js makes a
 * TLS server with, and how its server calls read a message's compressed flag.
 */
import { createRequire } from "node:module";
import type { Http2SecureServer, Http2Server, IncomingHttpHeaders, SecureServerOptions, ServerHttp2Stream } from "node:http2";
import type { SecureContextOptions } from "node:tls";
import { ServerCredentials, status, type Server, type ServerInterceptor, type ServerUnaryCall } from "@grpc/grpc-js";

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

/**
 * Credentials as `credentials`, whose connections must end their TLS
 * handshake within `timeoutMs` of being accepted: Node's tls.Server takes
 * that (`handshakeTimeout`, 120 s unless set) only when it is made, and
 * grpc-js makes its node:http2 server from the `_getConstructorOptions` of
 * the credentials it is given, with no other way in. Every other method is
 * the given credentials'; insecure ones are returned as they are.
 */
export function withHandshakeTimeout(credentials: ServerCredentials, timeoutMs: number): ServerCredentials {
  if (!credentials._isSecure()) return credentials;
  return new HandshakeTimeoutCredentials(credentials, timeoutMs);
}

type SecureContextWatcher = Parameters<ServerCredentials["_addWatcher"]>[0];

class HandshakeTimeoutCredentials extends ServerCredentials {
  constructor(
    readonly inner: ServerCredentials,
    readonly timeoutMs: number,
  ) {
    super(inner._getConstructorOptions(), inner._getSecureContextOptions() ?? undefined);
  }
  override _isSecure(): boolean {
    return this.inner._isSecure();
  }
  override _getConstructorOptions(): SecureServerOptions | null {
    const options = this.inner._getConstructorOptions();
    return options && { ...options, handshakeTimeout: this.timeoutMs };
  }
  override _getSecureContextOptions(): SecureContextOptions | null {
    return this.inner._getSecureContextOptions();
  }
  override _addWatcher(watcher: SecureContextWatcher): void {
    this.inner._addWatcher(watcher);
  }
  override _removeWatcher(watcher: SecureContextWatcher): void {
    this.inner._removeWatcher(watcher);
  }
  override _getInterceptors(): ServerInterceptor[] {
    return this.inner._getInterceptors();
  }
  _equals(other: ServerCredentials): boolean {
    return other instanceof HandshakeTimeoutCredentials && other.timeoutMs === this.timeoutMs && this.inner._equals(other.inner);
  }
}

/** What a refused call is told. */
export const compressedFlagRefusal = 'a message\'s compressed flag is not 0, and the call declared no compression (grpc-encoding missing or "identity"): send it uncompressed, with the flag 0';

/**
 * Makes grpc-js's server calls refuse with INTERNAL a message whose
 * compressed flag is not 0 when the call declared no compression
 * (grpc-encoding missing or "identity"), as gRPC's protocol has it
 * (PROTOCOL-HTTP2.md: without Message-Encoding the Compressed-Flag must be
 * 0; compression.md: a compressed message under identity is INTERNAL).
 * grpc-js decoded it as uncompressed, and ran its handler: a client that
 * compressed and left out the header got INVALID_ARGUMENT for its bytes,
 * or its call served. A call of a declared encoding is refused before
 * grpc-js sees it (see the server). Wraps BaseServerInterceptingCall's
 * decompressMessage, once per process; false, with grpc-js as it is, when
 * that is gone (the canary test fails then).
 */
export function refuseFlaggedUncompressedMessages(): boolean {
  let prototype: { decompressMessage?: DecompressMessage; [wrapped]?: true } | undefined;
  try {
    // The module grpc-js's own import of it loads: the package has no exports map, and one instance of each file.
    prototype = createRequire(import.meta.url)("@grpc/grpc-js/build/src/server-interceptors.js").BaseServerInterceptingCall?.prototype;
  } catch {
    return false;
  }
  const original = prototype?.decompressMessage;
  if (typeof original !== "function") return false;
  if (prototype![wrapped]) return true;
  prototype!.decompressMessage = function (this: unknown, message: Buffer, encoding: string) {
    // grpc-js passes "identity" for a flag of 0, and for any flag when the call declared no encoding. The
    // server counts the refusal as it counts grpc-js's own (malformed, under INTERNAL).
    if (encoding === "identity" && message[0] !== 0) return Promise.reject({ code: status.INTERNAL, details: compressedFlagRefusal });
    return original.call(this, message, encoding);
  };
  prototype![wrapped] = true;
  return true;
}

type DecompressMessage = (message: Buffer, encoding: string) => Buffer | Promise<Buffer>;
const wrapped = Symbol("concord.refusesFlaggedUncompressed");
