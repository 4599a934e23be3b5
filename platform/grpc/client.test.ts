import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { ProductServiceMethods } from "../../gen/ts/shop/products/v1/product_service_rpc.js";
import { createLogger } from "../log/index.js";
import type { ServiceImpl } from "./bind-service.js";
import { createClient } from "./client.js";
import { createGrpcServer, type GrpcServer } from "./server.js";
import { Code, StatusError } from "../errors/index.js";
import { productServiceWith, sampleProduct as product } from "../../test/support/get-product-only.js";

const logger = createLogger({ service: "client-test", level: "silent" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const request = { name: "x", description: "", price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 0 };

/** A product service whose every method fails with UNAVAILABLE the first `failures` times it is called. */
function flaky(failures: number) {
  const calls = { createProduct: 0, getProduct: 0 };
  const fail = (method: keyof typeof calls) => {
    if (++calls[method] <= failures) throw StatusError.unavailable("not yet");
  };
  const impl: ServiceImpl<typeof ProductServiceService> = productServiceWith({
    async createProduct() {
      fail("createProduct");
      return { product };
    },
    async getProduct() {
      fail("getProduct");
      return { product };
    },
  });
  return { calls, impl };
}

describe("createClient", () => {
  let server: GrpcServer | undefined;
  const extra: GrpcServer[] = [];
  afterEach(async () => {
    await server?.shutdown();
    server = undefined;
    for (const s of extra.splice(0)) await s.shutdown();
  });
  const serve = async (impl: ServiceImpl<typeof ProductServiceService>) => {
    server = createGrpcServer({ descriptorSet, logger });
    server.addService(ProductServiceService, impl);
    return `127.0.0.1:${(await server.start("127.0.0.1:0")).port}`;
  };

  it("repeats a failed call only when that is safe: an idempotent method, or a request with a request id", async () => {
    const { calls, impl } = flaky(1);
    const client = createClient(ProductServiceService, { address: await serve(impl), methods: ProductServiceMethods });
    // A create without a request id may have taken effect: it is not repeated, the caller sees UNAVAILABLE.
    await expect(client.createProduct(request)).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect(calls.createProduct).toBe(1);
    calls.createProduct = 0;
    expect((await client.createProduct({ ...request, requestId: "01890a5d-ac96-774b-bcce-b302099a9001" })).product?.id).toBe(product.id);
    expect(calls.createProduct).toBe(2);
    // GetProduct is NO_SIDE_EFFECTS in its contract.
    expect((await client.getProduct({ id: product.id })).product?.id).toBe(product.id);
    expect(calls.getProduct).toBe(2);
    client.close();
  });

  it("spreads calls over every instance given, comma-separated, and refuses host names in a list", async () => {
    const served = [0, 0];
    const addresses: string[] = [];
    for (const i of [0, 1]) {
      const { impl } = flaky(0);
      const server = createGrpcServer({ descriptorSet, logger });
      server.addService(ProductServiceService, { ...impl, getProduct: async () => (served[i]++, { product }) });
      extra.push(server);
      addresses.push(`127.0.0.1:${(await server.start("127.0.0.1:0")).port}`);
    }
    const client = createClient(ProductServiceService, { address: addresses.join(","), methods: ProductServiceMethods });
    for (let i = 0; i < 20; i++) await client.getProduct({ id: product.id });
    expect(served[0] + served[1]).toBe(20);
    expect(Math.min(...served)).toBeGreaterThanOrEqual(5);
    client.close();
    expect(() => createClient(ProductServiceService, { address: "products-1:50051,products-2:50051" })).toThrow(/dns:\/\/\/name:port/);
  });

  it("repeats nothing without the method traits, save requests with a request id, and stops at maxAttempts", async () => {
    const { calls, impl } = flaky(5);
    const address = await serve(impl);
    const bare = createClient(ProductServiceService, { address });
    await expect(bare.getProduct({ id: product.id })).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect(calls.getProduct).toBe(1);
    await expect(bare.createProduct({ ...request, requestId: "01890a5d-ac96-774b-bcce-b302099a9002" })).rejects.toMatchObject({ code: status.UNAVAILABLE });
    expect(calls.createProduct).toBe(3);
    bare.close();
  });
});

function productServer(): GrpcServer {
  const server = createGrpcServer({ descriptorSet, logger, shutdownTimeoutMs: 100 });
  const impl = productServiceWith({ getProduct: async () => ({ product }) });
  server.addService(ProductServiceService, impl);
  return server;
}

describe("createClient's bound on calls in flight", () => {
  let server: GrpcServer | undefined;
  afterEach(async () => {
    await server?.shutdown();
    server = undefined;
  });

  /** A product service whose GetProduct waits until `open` is called; counts the calls it saw. */
  const gated = async () => {
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const seen = { calls: 0 };
    // Room for every call the client may send: the server's own bound is not what is tested.
    server = createGrpcServer({ descriptorSet, logger, admission: { maxInFlight: 512 } });
    server.addService(
      ProductServiceService,
      productServiceWith({
        async getProduct() {
          seen.calls++;
          await gate;
          return { product };
        },
      }),
    );
    const address = `127.0.0.1:${(await server.start("127.0.0.1:0")).port}`;
    return { address, seen, open: () => open() };
  };

  it("fails a call past maxInFlight at once with RESOURCE_EXHAUSTED, sending nothing, and takes calls again as they finish", async () => {
    const { address, seen, open } = await gated();
    const client = createClient(ProductServiceService, { address, maxInFlight: 2 });
    try {
      const held = [client.getProduct({ id: product.id }), client.getProduct({ id: product.id })];
      await expect.poll(() => seen.calls).toBe(2);
      const started = performance.now();
      const refused = await client.getProduct({ id: product.id }).catch((e: unknown) => e);
      expect(performance.now() - started).toBeLessThan(1_000);
      expect(refused).toBeInstanceOf(StatusError);
      expect((refused as StatusError).code).toBe(Code.RESOURCE_EXHAUSTED);
      expect((refused as StatusError).message).toMatch(/2 calls in flight to shop\.products\.v1\.ProductService.*nothing was sent/);
      open();
      await Promise.all(held);
      await client.getProduct({ id: product.id });
      expect(seen.calls).toBe(3);
    } finally {
      client.close();
    }
  });

  it("holds 256 calls in flight per address by default, and refuses a maxInFlight that is not a whole number above 0", async () => {
    const { address, seen, open } = await gated();
    const client = createClient(ProductServiceService, { address });
    try {
      const held = Array.from({ length: 256 }, () => client.getProduct({ id: product.id }));
      await expect.poll(() => seen.calls, { timeout: 10_000 }).toBe(256);
      await expect(client.getProduct({ id: product.id })).rejects.toMatchObject({ code: Code.RESOURCE_EXHAUSTED });
      open();
      await Promise.all(held);
      expect(seen.calls).toBe(256);
    } finally {
      client.close();
    }
    for (const maxInFlight of [0, -1, 1.5]) expect(() => createClient(ProductServiceService, { address, maxInFlight })).toThrow(/createClient: invalid maxInFlight/);
  });

  it("counts a bound given as the whole client's, over all its addresses, and a call's slot is free again once it failed", async () => {
    const { address, seen, open } = await gated();
    // The same server twice: two addresses, so by default 512 calls, but a bound given is the client's total.
    const client = createClient(ProductServiceService, { address: `${address},${address}`, maxInFlight: 3 });
    try {
      const held = [1, 2, 3].map(() => client.getProduct({ id: product.id }));
      await expect.poll(() => seen.calls).toBe(3);
      await expect(client.getProduct({ id: product.id })).rejects.toMatchObject({ code: Code.RESOURCE_EXHAUSTED });
      open();
      await Promise.all(held);
      // Failed calls (an invalid request, a deadline that passed) give their slots back.
      for (let i = 0; i < 5; i++) await expect(client.getProduct({ id: "not-a-uuid" })).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });
      await Promise.all([1, 2, 3].map(() => client.getProduct({ id: product.id })));
    } finally {
      client.close();
    }
  });
});

describe("createClient reconnecting", () => {
  const servers: GrpcServer[] = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) await server.shutdown();
  });

  it("calls a server again within a fraction of a second of its return after an outage of seconds", async () => {
    const first = productServer();
    servers.push(first);
    const { port } = await first.start("127.0.0.1:0");
    const address = `127.0.0.1:${port}`;
    const client = createClient(ProductServiceService, { address, maxAttempts: 1, defaultTimeoutMs: 1_000 });
    try {
      await client.getProduct({ id: product.id });
      await first.shutdown();
      // A caller that keeps calling throughout, as a service calls another.
      let lastOk = 0;
      let failures = 0;
      let calling = true;
      const caller = (async () => {
        while (calling) {
          await client.getProduct({ id: product.id }).then(
            () => void (lastOk = performance.now()),
            () => void failures++,
          );
          await sleep(10);
        }
      })();
      // grpc-js's own backoff would have tried at about 0, 1 and 2.3-2.9 s by now, and next at 3.9 s or later.
      await sleep(3_000);
      const second = productServer();
      servers.push(second);
      await second.start(address);
      const back = performance.now();
      while (lastOk < back && performance.now() - back < 10_000) await sleep(5);
      calling = false;
      await caller;
      const gapMs = lastOk - back;
      console.log(`createClient: calls succeeded again ${gapMs.toFixed(0)} ms after the server returned (${failures} calls failed during the 3 s outage)`);
      expect(lastOk).toBeGreaterThan(back);
      expect(failures).toBeGreaterThan(0);
      expect(gapMs).toBeLessThan(750);
    } finally {
      client.close();
    }
  });
});
