import type { AddressInfo } from "node:net";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { http2ServersOf } from "./grpc-internals.js";

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

  it("says where to look when grpc-js no longer keeps them there", () => {
    expect(() => http2ServersOf({} as Server)).toThrow(/grpc-internals\.ts/);
  });
});
