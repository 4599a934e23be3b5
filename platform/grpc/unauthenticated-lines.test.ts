/**
 * Calls refused UNAUTHENTICATED cost their sender nothing, no token at all:
 * each wrote a log line, so anyone who could reach the port filled the log
 * at the server's call rate. They are logged as failed calls are, the first
 * 10 of a method's in 10 s one line each and the rest counted in one line.
 * PERMISSION_DENIED, whose caller holds a valid token, keeps a line each.
 */
import { createSecretKey, randomUUID } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { getProductOnly } from "../../test/support/get-product-only.js";
import { createTokenVerifier, signToken } from "../auth/index.js";
import { Code, StatusError } from "../errors/index.js";
import { createClient } from "./client.js";
import { createGrpcServer, type GrpcServer } from "./server.js";

describe("the log lines of calls refused for their credentials", () => {
  const key = createSecretKey(Buffer.alloc(32, 7));
  let server: GrpcServer | undefined;
  afterEach(async () => {
    await server?.shutdown();
    server = undefined;
  });

  const serve = async () => {
    const { lines, logger } = capturedLogger();
    server = createGrpcServer({ descriptorSet, logger, access: { verify: createTokenVerifier(key) } });
    server.addService(ProductServiceService, getProductOnly(async () => {
        throw new StatusError(Code.NOT_FOUND, "no such product");
      }),
    );
    const { port } = await server.start("127.0.0.1:0");
    const logged = () => lines.filter((l) => l.method === ProductServiceService.getProduct.path);
    return { port, logged };
  };

  it("logs the first 10 calls without a valid token in 10 s one line each, and the rest in one line with their peers when the window ends: 2,000 calls had written 2,000 lines", { timeout: 30_000 }, async () => {
    const { port, logged } = await serve();
    const none = createClient(ProductServiceService, { address: `127.0.0.1:${port}`, maxAttempts: 1 });
    const garbage = createClient(ProductServiceService, { address: `127.0.0.1:${port}`, maxAttempts: 1, token: async () => "garbage" });
    try {
      for (let i = 0; i < 25; i++) {
        await expect((i % 2 === 0 ? none : garbage).getProduct({ id: randomUUID() })).rejects.toMatchObject({ code: status.UNAUTHENTICATED });
      }
    } finally {
      none.close();
      garbage.close();
    }
    expect(logged()).toHaveLength(10);
    expect(logged().every((l) => l.msg === "call" && l.code === "UNAUTHENTICATED" && typeof l.reason === "string")).toBe(true);
    await expect.poll(() => logged().length, { timeout: 12_000, interval: 200 }).toBe(11);
    expect(logged()[10]).toMatchObject({
      level: "info",
      code: "UNAUTHENTICATED",
      unauthenticatedCalls: 15,
      peers: ["127.0.0.1"],
      msg: "15 more calls refused UNAUTHENTICATED, past the 10 logged one by one in 10 s (the lines above say why); grpc_server_handled_total counts them",
    });
  });

  it("logs each call refused PERMISSION_DENIED, whose caller holds a valid token and is named on its line", async () => {
    const { port, logged } = await serve();
    const token = await signToken(key, { subject: "stranger", roles: ["visitor"] }, 60);
    const client = createClient(ProductServiceService, { address: `127.0.0.1:${port}`, maxAttempts: 1, token: async () => token });
    try {
      for (let i = 0; i < 15; i++) await expect(client.getProduct({ id: randomUUID() })).rejects.toMatchObject({ code: status.PERMISSION_DENIED });
    } finally {
      client.close();
    }
    expect(logged()).toHaveLength(15);
    expect(logged().every((l) => l.code === "PERMISSION_DENIED" && /^stranger \(roles visitor\) may not call GetProduct/.test(String(l.reason)))).toBe(true);
  });
});
