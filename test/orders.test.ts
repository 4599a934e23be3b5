import { Server, ServerCredentials, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { type NatsServerHandle, startNatsServer } from "./support/nats-server.js";
import { address, grpcError, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";

const eur = (amountMinor: number) => ({ currencyCode: "EUR", amountMinor });
const unknownId = "01890a5d-ac96-774b-bcce-b302099a8057";

describe("OrderService", () => {
  const dir = tempDir();
  let nats: NatsServerHandle;
  let products: RunningProducts;
  let orders: RunningOrders;
  let teapot: string;
  let cup: string;
  beforeAll(async () => {
    nats = await startNatsServer();
    products = await startTestProducts(dir.path, nats.url);
    orders = await startTestOrders(dir.path, products.service.address, nats.url);
    teapot = (await products.client.createProduct({ name: "Teapot", description: "", price: eur(1999), initialStock: 100 })).product!.id;
    cup = (await products.client.createProduct({ name: "Cup", description: "", price: eur(450), initialStock: 100 })).product!.id;
  });
  afterAll(async () => {
    await orders.stop();
    await products.stop();
    await nats.stop();
    dir.remove();
  });

  it("prices every line from the product service and stores the order as PENDING", async () => {
    const { order } = await orders.client.createOrder({ customerId: "c-1", lines: [{ productId: teapot, quantity: 2 }, { productId: cup, quantity: 3 }], shippingAddress: address });
    expect(order).toMatchObject({
      customerId: "c-1",
      state: OrderState.ORDER_STATE_PENDING,
      total: eur(2 * 1999 + 3 * 450),
      version: 1,
      lines: [
        { productId: teapot, productName: "Teapot", quantity: 2, unitPrice: eur(1999), lineTotal: eur(3998) },
        { productId: cup, productName: "Cup", quantity: 3, unitPrice: eur(450), lineTotal: eur(1350) },
      ],
    });
    // The saga settles it right after: stock is reserved and the order confirmed.
    await expect.poll(async () => (await orders.client.getOrder({ id: order!.id })).order!.state).toBe(OrderState.ORDER_STATE_CONFIRMED);
    expect((await orders.client.getOrder({ id: order!.id })).order).toMatchObject({ lines: order!.lines, total: order!.total, version: 2 });
  });

  it("names every bad field: empty customer, no lines, zero and negative quantities, duplicate products, malformed ids", async () => {
    const empty = await grpcError(orders.client.createOrder({ customerId: "", lines: [], shippingAddress: undefined }));
    expect(empty.code).toBe(status.INVALID_ARGUMENT);
    expect(empty.violations.map((v) => v.field).sort()).toEqual(["customer_id", "lines", "shipping_address"]);
    const bad = await grpcError(
      orders.client.createOrder({
        customerId: "c".repeat(65),
        lines: [{ productId: teapot, quantity: 0 }, { productId: cup, quantity: -1 }, { productId: "nope", quantity: 1 }],
        shippingAddress: { ...address, countryCode: "gbr", city: "" },
      }),
    );
    expect(bad.violations.map((v) => v.field).sort()).toEqual([
      "customer_id",
      "lines[0].quantity",
      "lines[1].quantity",
      "lines[2].product_id",
      "shipping_address.city",
      "shipping_address.country_code",
    ]);
    const duplicate = await grpcError(orders.client.createOrder({ customerId: "c-1", lines: [{ productId: cup, quantity: 1 }, { productId: cup, quantity: 2 }], shippingAddress: address }));
    expect(duplicate.violations.map((v) => v.field)).toEqual(["lines"]);
    expect((await orders.client.listOrders({ customerId: "c".repeat(64), pageSize: 0, pageToken: "" })).orders).toEqual([]);
  });

  it("answers NOT_FOUND for an unknown product and stores nothing", async () => {
    const err = await grpcError(orders.client.createOrder({ customerId: "c-unknown", lines: [{ productId: cup, quantity: 1 }, { productId: unknownId, quantity: 1 }], shippingAddress: address }));
    expect(err.code).toBe(status.NOT_FOUND);
    expect(err.details).toContain("lines[1].product_id");
    expect((await orders.client.listOrders({ customerId: "c-unknown", pageSize: 0, pageToken: "" })).orders).toEqual([]);
    expect((await grpcError(orders.client.getOrder({ id: unknownId }))).code).toBe(status.NOT_FOUND);
  });

  it("refuses products priced in different currencies", async () => {
    const usd = (await products.client.createProduct({ name: "Spoon", description: "", price: { currencyCode: "USD", amountMinor: 100 }, initialStock: 5 })).product!.id;
    const err = await grpcError(orders.client.createOrder({ customerId: "c-fx", lines: [{ productId: usd, quantity: 1 }, { productId: cup, quantity: 1 }], shippingAddress: address }));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
  });

  it("updates the address and lines of a PENDING order, refusing stale versions", async () => {
    // With NATS down the order stays PENDING (its OrderPlaced waits in the outbox).
    await nats.stopForRestart();
    const { order } = await orders.client.createOrder({ customerId: "c-2", lines: [{ productId: cup, quantity: 1 }], shippingAddress: address });
    const { order: moved } = await orders.client.updateOrder({ id: order!.id, expectedVersion: 1, updateMask: ["shipping_address", "lines"], shippingAddress: { ...address, city: "Paris", countryCode: "FR" }, lines: [{ productId: teapot, quantity: 1 }] });
    expect(moved).toMatchObject({ version: 2, shippingAddress: { city: "Paris" }, total: eur(1999), lines: [{ productId: teapot, quantity: 1 }] });
    const stale = await grpcError(orders.client.updateOrder({ id: order!.id, expectedVersion: 1, updateMask: ["shipping_address"], shippingAddress: address, lines: [] }));
    expect(stale.code).toBe(status.ABORTED);
    const noAddress = await grpcError(orders.client.updateOrder({ id: order!.id, expectedVersion: 2, updateMask: ["shipping_address"], shippingAddress: undefined, lines: [] }));
    expect(noAddress.violations.map((v) => v.field)).toEqual(["shipping_address"]);
    // Back up: the product service reserves for the new lines, and only that answer settles the order.
    await nats.restart();
    await expect.poll(async () => (await orders.client.getOrder({ id: order!.id })).order!.state, { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    expect((await orders.client.getOrder({ id: order!.id })).order!.lines).toMatchObject([{ productId: teapot, quantity: 1 }]);
    const confirmed = (await orders.client.getOrder({ id: order!.id })).order!;
    const late = await grpcError(orders.client.updateOrder({ id: order!.id, expectedVersion: confirmed.version, updateMask: ["shipping_address"], shippingAddress: address, lines: [] }));
    expect(late.code).toBe(status.FAILED_PRECONDITION);
  });

  it("cancels an order once; a cancelled order cannot change", async () => {
    const { order } = await orders.client.createOrder({ customerId: "c-3", lines: [{ productId: cup, quantity: 1 }], shippingAddress: address });
    const { order: cancelled } = await orders.client.cancelOrder({ id: order!.id, reason: "changed my mind" });
    expect(cancelled!.state).toBe(OrderState.ORDER_STATE_CANCELLED);
    expect(cancelled!.version).toBeGreaterThan(order!.version);
    expect((await orders.client.cancelOrder({ id: order!.id, reason: "" })).order).toEqual(cancelled);
    const err = await grpcError(orders.client.updateOrder({ id: order!.id, expectedVersion: cancelled!.version, updateMask: ["shipping_address"], shippingAddress: address, lines: [] }));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect((await grpcError(orders.client.cancelOrder({ id: unknownId, reason: "" }))).code).toBe(status.NOT_FOUND);
  });

  it("lists one customer's orders across pages", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await orders.client.createOrder({ customerId: "c-list", lines: [{ productId: cup, quantity: 1 }], shippingAddress: address })).order!.id);
    await orders.client.createOrder({ customerId: "someone-else", lines: [{ productId: cup, quantity: 1 }], shippingAddress: address });
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await orders.client.listOrders({ customerId: "c-list", pageSize: 2, pageToken });
      seen.push(...page.orders.map((o) => o.id));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(seen).toEqual(ids);
  });
});

describe("OrderService when the product service misbehaves", () => {
  const dir = tempDir();
  let nats: NatsServerHandle;
  beforeAll(async () => {
    nats = await startNatsServer();
  });
  afterAll(async () => {
    await nats.stop();
    dir.remove();
  });

  it("answers UNAVAILABLE when the product service is down, and stores no order", async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const s = new Server();
      s.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (_e, port) => s.tryShutdown(() => resolve(port)));
    });
    const orders = await startTestOrders(dir.path, `127.0.0.1:${closedPort}`, nats.url);
    try {
      const err = await grpcError(orders.client.createOrder({ customerId: "c-down", lines: [{ productId: unknownId, quantity: 1 }], shippingAddress: address }));
      expect(err.code).toBe(status.UNAVAILABLE);
      expect((await orders.client.listOrders({ customerId: "c-down", pageSize: 0, pageToken: "" })).orders).toEqual([]);
    } finally {
      await orders.stop();
    }
  });

  it("answers DEADLINE_EXCEEDED when the product service is slow, and stores no order", async () => {
    // A real gRPC server implementing ProductService that answers too late.
    const slow = new Server();
    let cancelledUpstream = 0;
    slow.addService(ProductServiceService, {
      batchGetProducts: (call: { on(e: string, f: () => void): void }, cb: (e: null, r: unknown) => void) => {
        call.on("cancelled", () => cancelledUpstream++);
        setTimeout(() => cb(null, { products: [{ id: unknownId, name: "Slow", price: eur(1) }] }), 1_500);
      },
    } as never);
    const port = await new Promise<number>((resolve) => slow.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (_e, p) => resolve(p)));
    const orders = await startTestOrders(dir.path, `127.0.0.1:${port}`, nats.url, { productsTimeoutMs: 200, databasePath: `${dir.path}/slow-orders.db` });
    try {
      const err = await grpcError(orders.client.createOrder({ customerId: "c-slow", lines: [{ productId: unknownId, quantity: 1 }], shippingAddress: address }));
      expect(err.code).toBe(status.DEADLINE_EXCEEDED);
      expect((await orders.client.listOrders({ customerId: "c-slow", pageSize: 0, pageToken: "" })).orders).toEqual([]);
      // The caller's own, shorter deadline travels to the product lookup, which is cancelled with it.
      const before = cancelledUpstream;
      const propagated = await grpcError(orders.client.createOrder({ customerId: "c-slow", lines: [{ productId: unknownId, quantity: 1 }], shippingAddress: address }, { timeoutMs: 100 }));
      expect(propagated.code).toBe(status.DEADLINE_EXCEEDED);
      await expect.poll(() => cancelledUpstream).toBeGreaterThan(before);
    } finally {
      await orders.stop();
      slow.forceShutdown();
    }
  });
});
