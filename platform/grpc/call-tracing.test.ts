import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { startTraceReceiver, type TraceReceiver } from "../../tools/traces/otlp-receiver.js";
import { Code, StatusError } from "../errors/index.js";
import { createLogger } from "../log/index.js";
import { startTracing, type Tracing } from "../tracing/index.js";
import type { ServiceImpl } from "./bind-service.js";
import type { CallContext } from "./call-context.js";
import { serverAttributes } from "./call-tracing.js";
import { createClient, type PromiseClient } from "./client.js";
import { createGrpcServer, type GrpcServer } from "./server.js";
import { productServiceWith, sampleProduct as product } from "../../test/support/get-product-only.js";

/** The server's log lines, parsed. */
const lines: Array<Record<string, unknown>> = [];
const logger = createLogger({ service: "test", level: "warn", destination: { write: (line: string) => void lines.push(JSON.parse(line)) } });
const failing = "01890a5d-ac96-774b-bcce-b302099a8059";
const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";

/** A server and a client in this process, with tracing on and spans going to a receiver in the test. */
describe("gRPC call tracing", () => {
  let receiver: TraceReceiver;
  let tracing: Tracing;
  let server: GrpcServer;
  let client: PromiseClient<typeof ProductServiceService>;
  let port: number;
  const seen: CallContext[] = [];

  beforeAll(async () => {
    receiver = await startTraceReceiver();
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url;
    process.env.OTEL_BSP_SCHEDULE_DELAY = "50";
    tracing = await startTracing({ service: "grpc-test" });
    server = createGrpcServer({ descriptorSet, logger });
    const impl: ServiceImpl<typeof ProductServiceService> = productServiceWith({
      async getProduct(req, context) {
        seen.push(context);
        if (req.id === product.id) return { product };
        if (req.id === failing) throw new Error("the store broke");
        throw StatusError.notFound(`product ${req.id} does not exist`);
      },
    });
    server.addService(ProductServiceService, impl);
    ({ port } = await server.start("127.0.0.1:0"));
    client = createClient(ProductServiceService, { address: `127.0.0.1:${port}`, maxAttempts: 1 });
  });
  afterAll(async () => {
    client?.close();
    await server?.shutdown();
    await tracing?.shutdown();
    await receiver?.close();
    delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    delete process.env.OTEL_BSP_SCHEDULE_DELAY;
  });

  const spans = async (n: number) => {
    await expect.poll(() => receiver.spans().length, { timeout: 10_000 }).toBeGreaterThanOrEqual(n);
    return receiver.spans();
  };

  it("makes a client span child of the caller's context, the server span its child, and gives the handler the server span's context", async () => {
    const parent = { traceparent: `00-${traceId}-00f067aa0ba902b7-01`, tracestate: "vendor=abc", deadline: undefined, signal: new AbortController().signal };
    await client.getProduct({ id: product.id }, { context: parent });
    await expect(client.getProduct({ id: "01890a5d-ac96-774b-bcce-b302099a8058" }, { context: parent })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    const all = await spans(4);
    const clients = all.filter((s) => s.kind === "CLIENT");
    const servers = all.filter((s) => s.kind === "SERVER");
    expect(clients.map((s) => s.name)).toEqual(["shop.products.v1.ProductService/GetProduct", "shop.products.v1.ProductService/GetProduct"]);
    for (const [i, c] of clients.entries()) {
      expect(c).toMatchObject({ service: "grpc-test", traceId, parentSpanId: "00f067aa0ba902b7", attributes: { "rpc.system": "grpc", "rpc.service": "shop.products.v1.ProductService", "rpc.method": "GetProduct" } });
      const s = servers.find((x) => x.parentSpanId === c.spanId)!;
      expect(s).toMatchObject({ traceId, name: "shop.products.v1.ProductService/GetProduct" });
      expect(seen[i].traceparent).toBe(`00-${traceId}-${s.spanId}-01`);
      expect(seen[i].tracestate).toBe("vendor=abc");
    }
    // NOT_FOUND fails the client span; on the server side only codes that say the server failed do.
    expect(clients.map((c) => [c.attributes["rpc.grpc.status_code"], c.status.code])).toEqual([[0, 0], [Code.NOT_FOUND, 2]]);
    expect(servers.map((c) => [c.attributes["rpc.grpc.status_code"], c.status.code]).sort()).toEqual([[0, 0], [Code.NOT_FOUND, 0]]);
  });

  it("names the server on a client span (server.address, server.port) and the caller's address on the server span (network.peer.*)", async () => {
    const parent = { traceparent: `00-${"c".repeat(32)}-00f067aa0ba902b7-01`, deadline: undefined, signal: new AbortController().signal };
    await client.getProduct({ id: product.id }, { context: parent });
    await expect.poll(() => receiver.spans().filter((s) => s.traceId === "c".repeat(32)).length, { timeout: 10_000 }).toBe(2);
    const own = receiver.spans().filter((s) => s.traceId === "c".repeat(32));
    const clientSpan = own.find((s) => s.kind === "CLIENT")!;
    const serverSpan = own.find((s) => s.kind === "SERVER")!;
    expect(clientSpan.attributes).toMatchObject({ "server.address": "127.0.0.1", "server.port": port });
    expect(clientSpan.attributes).not.toHaveProperty("network.peer.address");
    expect(serverSpan.attributes).toMatchObject({ "network.peer.address": "127.0.0.1", "network.peer.port": expect.any(Number) });
    expect(serverSpan.attributes["network.peer.port"]).not.toBe(port);
    expect(serverSpan.attributes).not.toHaveProperty("server.address");
  });

  it("puts the server span's trace_id and span_id on the line of a call that failed, when its trace is sampled", async () => {
    const signal = new AbortController().signal;
    const sampled = "d".repeat(32);
    await expect(client.getProduct({ id: failing }, { context: { traceparent: `00-${sampled}-00f067aa0ba902b7-01`, deadline: undefined, signal } })).rejects.toMatchObject({ code: Code.INTERNAL });
    await expect.poll(() => receiver.spans().filter((s) => s.traceId === sampled && s.kind === "SERVER").length, { timeout: 10_000 }).toBe(1);
    const served = receiver.spans().find((s) => s.traceId === sampled && s.kind === "SERVER")!;
    const failed = lines.filter((l) => l.msg === "call failed");
    expect(failed.at(-1)).toMatchObject({ level: "error", code: "INTERNAL", trace_id: sampled, span_id: served.spanId, err: { message: "the store broke" } });
    // Unsampled, the span records nothing: ids that no trace holds would send a reader looking for nothing.
    await expect(client.getProduct({ id: failing }, { context: { traceparent: `00-${"e".repeat(32)}-00f067aa0ba902b7-00`, deadline: undefined, signal } })).rejects.toMatchObject({ code: Code.INTERNAL });
    const unsampled = lines.filter((l) => l.msg === "call failed").at(-1)!;
    expect(unsampled).not.toBe(failed.at(-1));
    expect(unsampled).not.toHaveProperty("trace_id");
    expect(unsampled).not.toHaveProperty("span_id");
  });

  it("records a call of an unsampled caller in no span, and passes the unsampled flag on", async () => {
    const before = receiver.spans().length;
    const unsampled = `00-${"a".repeat(32)}-00f067aa0ba902b7-00`;
    await client.getProduct({ id: product.id }, { context: { traceparent: unsampled, deadline: undefined, signal: new AbortController().signal } });
    expect(seen.at(-1)!.traceparent).toMatch(new RegExp(`^00-${"a".repeat(32)}-[0-9a-f]{16}-00$`));
    // A sampled call after it: once its spans are in, the unsampled call's would have been too.
    await client.getProduct({ id: product.id }, { context: { traceparent: `00-${"b".repeat(32)}-00f067aa0ba902b7-01`, deadline: undefined, signal: new AbortController().signal } });
    await expect.poll(() => receiver.spans().filter((s) => s.traceId === "b".repeat(32)).length, { timeout: 10_000 }).toBe(2);
    expect(receiver.spans().slice(before).filter((s) => s.traceId === "a".repeat(32))).toEqual([]);
  });
});

describe("serverAttributes", () => {
  it("takes the host and port a client's address names, whatever the resolver's scheme, and none from a list of several", () => {
    expect(serverAttributes("127.0.0.1:50051")).toEqual({ "server.address": "127.0.0.1", "server.port": 50051 });
    expect(serverAttributes("products:50052")).toEqual({ "server.address": "products", "server.port": 50052 });
    expect(serverAttributes("dns:///products.shop.svc:50052")).toEqual({ "server.address": "products.shop.svc", "server.port": 50052 });
    expect(serverAttributes("dns://10.0.0.2:53/products:50052")).toEqual({ "server.address": "products", "server.port": 50052 });
    expect(serverAttributes("[::1]:50051")).toEqual({ "server.address": "::1", "server.port": 50051 });
    expect(serverAttributes("ipv6:[::1]:50051")).toEqual({ "server.address": "::1", "server.port": 50051 });
    // grpc-js's port when none is given.
    expect(serverAttributes("products")).toEqual({ "server.address": "products", "server.port": 443 });
    expect(serverAttributes("::1")).toEqual({ "server.address": "::1", "server.port": 443 });
    expect(serverAttributes("unix:///run/products.sock")).toEqual({ "server.address": "/run/products.sock" });
    expect(serverAttributes("127.0.0.1:50051,127.0.0.2:50051")).toEqual({});
  });
});
