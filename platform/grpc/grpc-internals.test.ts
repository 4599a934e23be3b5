import type { AddressInfo } from "node:net";
import { connect as connectHttp2, createServer as createHttp2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import { Server, ServerCredentials, status, type ServerUnaryCall } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { compressedFlagRefusal, http2ServersOf, http2StreamOf, refuseFlaggedUncompressedMessages, takeStreamListener, withHandshakeTimeout } from "./grpc-internals.js";
import { serverTlsCredentials } from "./tls.js";
import { ensureDevCredentials } from "../../tools/dev-credentials.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";

/** A grpc-js Server of one unary method, /test.Echo/Echo, that answers each request with its own bytes, listening on a free port; `onCall` hears each call. */
async function echoServer(onCall: (call: ServerUnaryCall<Buffer, Buffer>) => void): Promise<{ server: Server; port: number }> {
  const server = new Server();
  const identity = (b: Buffer) => b;
  server.addService(
    { Echo: { path: "/test.Echo/Echo", requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity } },
    {
      Echo: (call: ServerUnaryCall<Buffer, Buffer>, callback: (err: null, value: Buffer) => void) => {
        onCall(call);
        callback(null, call.request);
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { server, port };
}

// Canaries: what grpc-internals.ts reads of @grpc/grpc-js. A grpc-js upgrade that moves it fails here first.
describe("grpc-js internals", () => {
  it("finds the node:http2 server a grpc-js Server listens with, one per bound address", async () => {
    const server = new Server();
    try {
      expect(http2ServersOf(server)).toEqual([]);
      const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
      const [listener, ...others] = http2ServersOf(server);
      expect(others).toEqual([]);
      expect(listener.listening).toBe(true);
      expect((listener.address() as AddressInfo).port).toBe(port);
      expect(listener.listenerCount("stream")).toBeGreaterThan(0);
    } finally {
      server.forceShutdown();
    }
  });

  it("finds the node:http2 stream a unary call came on", async () => {
    let found: ServerHttp2Stream | undefined;
    const { server, port } = await echoServer((call) => (found = http2StreamOf(call as ServerUnaryCall<unknown, unknown>)));
    const [listener] = http2ServersOf(server);
    const streams: ServerHttp2Stream[] = [];
    listener.on("stream", (stream: ServerHttp2Stream) => streams.push(stream));
    const session = connectHttp2(`http://127.0.0.1:${port}`);
    try {
      const stream = session.request({ ":method": "POST", ":path": "/test.Echo/Echo", "content-type": "application/grpc", te: "trailers" });
      stream.end(Buffer.from([0, 0, 0, 0, 1, 7]));
      stream.resume();
      await new Promise((resolve) => stream.once("close", resolve));
      expect(found).toBeDefined();
      expect(found).toBe(streams[0]);
    } finally {
      session.destroy();
      server.forceShutdown();
    }
    expect(http2StreamOf({} as ServerUnaryCall<unknown, unknown>)).toBeUndefined();
  });

  it("makes grpc-js's server calls refuse a message flagged compressed when the call declared no compression, and take one whose flag is 0", async () => {
    expect(refuseFlaggedUncompressedMessages()).toBe(true);
    // Once per process: a second call wraps nothing again.
    expect(refuseFlaggedUncompressedMessages()).toBe(true);
    let ran = 0;
    const { server, port } = await echoServer(() => ran++);
    const session = connectHttp2(`http://127.0.0.1:${port}`);
    const call = async (flag: number) => {
      const stream = session.request({ ":method": "POST", ":path": "/test.Echo/Echo", "content-type": "application/grpc", te: "trailers" });
      const answer: IncomingHttpHeaders = {};
      stream.on("response", (h) => Object.assign(answer, h));
      stream.on("trailers", (h) => Object.assign(answer, h));
      stream.end(Buffer.from([flag, 0, 0, 0, 1, 7]));
      stream.resume();
      await new Promise((resolve) => stream.once("close", resolve));
      return [answer["grpc-status"], decodeURIComponent(String(answer["grpc-message"]))];
    };
    try {
      expect(await call(1)).toEqual([String(status.INTERNAL), compressedFlagRefusal]);
      expect(ran).toBe(0);
      expect(await call(0)).toEqual([String(status.OK), "OK"]);
      expect(ran).toBe(1);
    } finally {
      session.destroy();
      server.forceShutdown();
    }
  });

  it("takes grpc-js's 'stream' listener off its node:http2 server, which then answers only the streams it is given", async () => {
    let ran = 0;
    const { server, port } = await echoServer(() => ran++);
    const [listener] = http2ServersOf(server);
    const grpcJs = takeStreamListener(listener);
    expect(listener.listenerCount("stream")).toBe(0);
    // Streams with a "skip" header are answered here; grpc-js gets the others.
    listener.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
      if (headers.skip === undefined) return grpcJs(stream, headers, flags, rawHeaders);
      stream.respond({ ":status": 200, "content-type": "application/grpc+proto", "grpc-status": "12" }, { endStream: true });
    });
    const session = connectHttp2(`http://127.0.0.1:${port}`);
    const call = (headers: Record<string, string>) =>
      new Promise<unknown>((resolve) => {
        const stream = session.request({ ":method": "POST", ":path": "/test.Echo/Echo", "content-type": "application/grpc", te: "trailers", ...headers });
        let status: unknown;
        stream.on("response", (h) => (status ??= h["grpc-status"]));
        stream.on("trailers", (h) => (status = h["grpc-status"]));
        stream.end(Buffer.from([0, 0, 0, 0, 1, 7]));
        stream.resume();
        stream.once("close", () => resolve(status));
      });
    try {
      expect(await call({})).toBe("0");
      expect(await call({ skip: "1" })).toBe("12");
      expect(ran).toBe(1);
    } finally {
      session.destroy();
      server.forceShutdown();
    }
  });

  it("says where to look when grpc-js no longer keeps them there", () => {
    expect(() => http2ServersOf({} as Server)).toThrow(/grpc-internals\.ts/);
    // A node:http2 server with no 'stream' listener, or more than one.
    const bare = createHttp2Server();
    expect(() => takeStreamListener(bare)).toThrow(/grpc-internals\.ts/);
    bare.on("stream", () => {}).on("stream", () => {});
    expect(() => takeStreamListener(bare)).toThrow(/found 2/);
  });

  it("makes its node:http2 TLS server with the handshake timeout of credentials wrapped by withHandshakeTimeout", async () => {
    const made = ensureDevCredentials(tempDirForSuite("concord-internals-handshake-"), ["products"]);
    const server = new Server();
    try {
      const credentials = withHandshakeTimeout(serverTlsCredentials({ ...made.certs.products, caFile: made.caFile }), 250);
      await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", credentials, (err, p) => (err ? reject(err) : resolve(p))));
      const [listener] = http2ServersOf(server);
      // Node keeps it under a symbol of its own; what grpc-js passed is what every TLS connection is given.
      const timeouts = Object.getOwnPropertySymbols(listener).filter((s) => s.description === "handshake-timeout").map((s) => (listener as never)[s]);
      expect(timeouts).toEqual([250]);
      expect(withHandshakeTimeout(ServerCredentials.createInsecure(), 250)._isSecure()).toBe(false);
    } finally {
      server.forceShutdown();
    }
  });
});
