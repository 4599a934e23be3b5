import type { AddressInfo } from "node:net";
import { connect as connectHttp2, type ServerHttp2Stream } from "node:http2";
import { Server, ServerCredentials, type ServerUnaryCall } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { http2ServersOf, http2StreamOf } from "./grpc-internals.js";

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
    const server = new Server();
    const identity = (b: Buffer) => b;
    let found: ServerHttp2Stream | undefined;
    server.addService(
      { Echo: { path: "/test.Echo/Echo", requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity } },
      {
        Echo: (call: ServerUnaryCall<Buffer, Buffer>, callback: (err: null, value: Buffer) => void) => {
          found = http2StreamOf(call as ServerUnaryCall<unknown, unknown>);
          callback(null, call.request);
        },
      },
    );
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
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

  it("says where to look when grpc-js no longer keeps them there", () => {
    expect(() => http2ServersOf({} as Server)).toThrow(/grpc-internals\.ts/);
  });
});
