import { join } from "node:path";
import { Server, ServerCredentials, status } from "@grpc/grpc-js";
import BetterSqlite3 from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { Address, CreateOrderRequest, CreateOrderResponse, LineItem, OrderServiceService, OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { uuidv7 } from "../platform/ids/index.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { startNatsServer, useNatsServer } from "./support/nats-server.js";
import { address, grpcError, quietLogger, rawCall, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";
import { eventually, readStream } from "./support/streams.js";

const eur = (amountMinor: number) => ({ currencyCode: "EUR", amountMinor });
const unknownId = "01890a5d-ac96-774b-bcce-b302099a8057";

describe("OrderService", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const nats = useNatsServer();
  let products: RunningProducts;
  let orders: RunningOrders;
  let teapot: string;
  let cup: string;
  beforeAll(async () => {
    products = await startTestProducts(dir.path, nats().url);
    orders = await startTestOrders(dir.path, products.service.address, nats().url);
    teapot = (await products.client.createProduct({ name: "Teapot", description: "", price: eur(1999), initialStock: 100 })).product!.id;
    cup = (await products.client.createProduct({ name: "Cup", description: "", price: eur(450), initialStock: 100 })).product!.id;
  });
  afterAll(async () => {
    await orders.stop();
    await products.stop();
  });

  it("prices every line at its product's current price and stores the order as PENDING", async () => {
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

  it("places one order per request_id: a repeat after a timeout returns the first order, a different request with the same id is refused", async () => {
    const customerId = `c-once-${uuidv7()}`;
    const request = (requestId: string) => ({ customerId, lines: [{ productId: teapot, quantity: 1 }], shippingAddress: address, requestId });
    // 20 calls that give up after 1 ms: some orders were placed, some not; the caller cannot tell which.
    const ids = Array.from({ length: 20 }, () => uuidv7());
    const outcomes = await Promise.allSettled(ids.map((id) => orders.client.createOrder(request(id), { timeoutMs: 1 })));
    expect(outcomes.some((o) => o.status === "rejected" && (o.reason as { code: number }).code === status.DEADLINE_EXCEEDED)).toBe(true);
    // Retrying each with its request id places exactly one order per id.
    const placed = await Promise.all(ids.map((id) => orders.client.createOrder(request(id)).then((r) => r.order!)));
    const again = await Promise.all(ids.map((id) => orders.client.createOrder(request(id)).then((r) => r.order!)));
    expect(again.map((o) => o.id)).toEqual(placed.map((o) => o.id));
    expect(again[0]).toEqual(placed[0]);
    const listed = (await orders.client.listOrders({ customerId, pageSize: 500, pageToken: "" })).orders;
    expect(listed.map((o) => o.id).sort()).toEqual(placed.map((o) => o.id).sort());
    const reused = await grpcError(orders.client.createOrder({ ...request(ids[0]), lines: [{ productId: cup, quantity: 1 }] }));
    expect(reused.code).toBe(status.ALREADY_EXISTS);
    expect(reused.violations.map((v) => v.field)).toEqual(["request_id"]);
    expect((await orders.client.listOrders({ customerId, pageSize: 500, pageToken: "" })).orders).toHaveLength(20);
  });

  it("takes a request id in any letter case, and a request encoded in another field order, as the same request; a different one with the same id is still refused", async () => {
    const customerId = `c-case-${uuidv7()}`;
    const requestId = uuidv7();
    const request = { customerId, lines: [{ productId: teapot, quantity: 2 }, { productId: cup, quantity: 1 }], shippingAddress: address, requestId };
    const first = (await orders.client.createOrder(request)).order!;
    // RFC 9562: UUIDs compare case-insensitively; the contract's uuid rule takes upper case.
    const upper = (await orders.client.createOrder({ ...request, requestId: requestId.toUpperCase() })).order!;
    expect(upper).toEqual(first);
    // The same message with every field, the address's too, written last to first: valid protobuf, as another SDK or a proxy may send it.
    const reversed = new BinaryWriter();
    reversed.uint32(34).string(requestId.toUpperCase());
    const addressFields = (Object.keys(address) as (keyof typeof address)[]).map((key) => Address.encode({ ...Address.fromPartial({}), [key]: address[key] }).finish());
    reversed.uint32(26).bytes(Buffer.concat(addressFields.reverse()));
    for (const line of request.lines) {
      const bytes = LineItem.encode(line).finish();
      // quantity (2) before product_id (1): 0x10 <varint>, then 0x0a <len> <id>.
      const idLength = 2 + line.productId.length;
      reversed.uint32(18).bytes(Buffer.concat([bytes.subarray(idLength), bytes.subarray(0, idLength)]));
    }
    reversed.uint32(10).string(customerId);
    const bytes = Buffer.from(reversed.finish());
    expect(CreateOrderRequest.decode(bytes)).toEqual({ ...request, requestId: requestId.toUpperCase() });
    expect(bytes.equals(Buffer.from(CreateOrderRequest.encode({ ...request, requestId: requestId.toUpperCase() }).finish()))).toBe(false);
    const again = CreateOrderResponse.decode(await rawCall(orders.service.address, OrderServiceService.createOrder.path, bytes)).order!;
    expect(again).toEqual(first);
    expect((await orders.client.listOrders({ customerId, pageSize: 500, pageToken: "" })).orders.map((o) => o.id)).toEqual([first.id]);
    const changed = await grpcError(orders.client.createOrder({ ...request, requestId: requestId.toUpperCase(), lines: [{ productId: teapot, quantity: 3 }, { productId: cup, quantity: 1 }] }));
    expect(changed.code).toBe(status.ALREADY_EXISTS);
    expect(changed.violations.map((v) => v.field)).toEqual(["request_id"]);
    expect((await orders.client.listOrders({ customerId, pageSize: 500, pageToken: "" })).orders).toHaveLength(1);
  });

  it("takes product and order ids in upper case as the ids they are, and one product named in both cases as one product twice", async () => {
    const { order } = await orders.client.createOrder({ customerId: "c-9", lines: [{ productId: teapot.toUpperCase(), quantity: 1 }], shippingAddress: address });
    expect(order!.lines.map((l) => l.productId)).toEqual([teapot]);
    expect((await orders.client.getOrder({ id: order!.id.toUpperCase() })).order!.id).toBe(order!.id);
    const twice = await grpcError(orders.client.createOrder({ customerId: "c-9", lines: [{ productId: teapot.toUpperCase(), quantity: 1 }, { productId: teapot, quantity: 1 }], shippingAddress: address }));
    expect(twice.violations.map((v) => v.field)).toEqual(["lines"]);
    // UpdateOrder's rules are checked by protovalidate: on the ids as lowered too.
    const settled = await orders.client.getOrder({ id: order!.id });
    const updated = await grpcError(
      orders.client.updateOrder({ id: order!.id.toUpperCase(), expectedVersion: settled.order!.version, updateMask: ["lines"], shippingAddress: undefined, lines: [{ productId: cup.toUpperCase(), quantity: 1 }, { productId: cup, quantity: 2 }] }),
    );
    expect(updated.violations.map((v) => v.field)).toEqual(["lines"]);
  });

  it("refuses a NUL character in a nested or repeated string with INVALID_ARGUMENT naming the field, and places nothing", async () => {
    const nul = "must not contain the NUL character (U+0000)";
    const customerId = `c-nul-${uuidv7()}`;
    const inAddress = await grpcError(orders.client.createOrder({ customerId, lines: [{ productId: teapot, quantity: 1 }], shippingAddress: { ...address, line2: "Flat 1\u0000" } }));
    expect(inAddress.code).toBe(status.INVALID_ARGUMENT);
    expect(inAddress.violations).toEqual([{ field: "shipping_address.line2", description: nul }]);
    // A product id with a NUL is no UUID either: both are named.
    const inLine = await grpcError(orders.client.createOrder({ customerId, lines: [{ productId: cup, quantity: 1 }, { productId: `${teapot}\u0000`, quantity: 1 }], shippingAddress: address }));
    expect(inLine.violations).toContainEqual({ field: "lines[1].product_id", description: nul });
    const asCustomer = await grpcError(orders.client.createOrder({ customerId: "c\u0000", lines: [{ productId: teapot, quantity: 1 }], shippingAddress: address }));
    expect(asCustomer.violations).toEqual([{ field: "customer_id", description: nul }]);
    const listed = await grpcError(orders.client.listOrders({ customerId: "c\u0000", pageSize: 0, pageToken: "" }));
    expect(listed.violations).toEqual([{ field: "customer_id", description: nul }]);
    expect((await orders.client.listOrders({ customerId, pageSize: 500, pageToken: "" })).orders).toEqual([]);
    const db = new BetterSqlite3(orders.databasePath, { readonly: true });
    try {
      expect(db.prepare("SELECT count(*) AS n FROM orders WHERE customer_id IN (?, ?)").get(customerId, "c\u0000")).toEqual({ n: 0 });
    } finally {
      db.close();
    }
  });

  it("refuses thousands of lines as INVALID_ARGUMENT naming lines, and megabytes before decoding them, and keeps serving", async () => {
    const lines = (n: number, productId = "") => Array.from({ length: n }, () => ({ productId, quantity: 1 }));
    // 6,000 lines used to overflow the stack of the uniqueness rule and answer INTERNAL.
    const many = await grpcError(orders.client.createOrder({ customerId: "c-many", lines: lines(6_000), shippingAddress: address }));
    expect(many.code).toBe(status.INVALID_ARGUMENT);
    expect(many.violations).toEqual([{ field: "lines", description: "must contain no more than 50 item(s)" }]);
    // 40,000 lines (about 160 KB, under the 256 KiB grpc-js takes): refused on its size, not decoded to count them.
    const more = await grpcError(orders.client.createOrder({ customerId: "c-more", lines: lines(40_000), shippingAddress: address }));
    expect(more.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(more.message).toMatch(/CreateOrder request may have at most \d+ bytes; this one has \d+/);
    // 4 MB: over what grpc-js takes for this server, refused before it is decoded.
    const huge = Buffer.from(CreateOrderRequest.encode({ customerId: "c-huge", lines: lines(100_000, teapot), shippingAddress: address }).finish());
    expect(huge.byteLength).toBeGreaterThan(4_000_000);
    const floods = Array.from({ length: 24 }, () => grpcError(rawCall(orders.service.address, OrderServiceService.createOrder.path, huge)));
    const normal = await orders.client.createOrder({ customerId: "c-normal", lines: [{ productId: teapot, quantity: 1 }], shippingAddress: address });
    expect(normal.order?.customerId).toBe("c-normal");
    for (const flood of await Promise.all(floods)) expect(flood.code).toBe(status.RESOURCE_EXHAUSTED);
    // Over CreateOrder's own limit (a few KiB, from its contract's bounds) though under the server's.
    const overLimit = Buffer.from(CreateOrderRequest.encode({ customerId: "c".repeat(20_000), lines: lines(1, teapot), shippingAddress: address }).finish());
    const over = await grpcError(rawCall(orders.service.address, OrderServiceService.createOrder.path, overLimit));
    expect(over.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(over.message).toMatch(/CreateOrder request may have at most \d+ bytes; this one has \d+/);
  });

  it("refuses an update_mask of thousands of paths as INVALID_ARGUMENT naming update_mask, and 60,000 (180 KB) on its size", async () => {
    const id = "01890a5d-ac96-774b-bcce-b302099a8057";
    const paths = (n: number) => Array.from({ length: n }, () => "a");
    // 3,000 paths fit UpdateOrder's limit: counted before any CEL rule looks through them (27 ms of CPU for 60,000).
    const many = await grpcError(orders.client.updateOrder({ id, expectedVersion: 1, updateMask: paths(3_000), shippingAddress: undefined, lines: [] }));
    expect(many.code).toBe(status.INVALID_ARGUMENT);
    expect(many.violations).toEqual([{ field: "update_mask", description: "paths must be one or more of shipping_address, lines, each once" }]);
    // Its contract bounds the mask (2 paths of the names it lists), so UpdateOrder's limit is a few KiB, not the server's 256.
    const more = await grpcError(orders.client.updateOrder({ id, expectedVersion: 1, updateMask: paths(60_000), shippingAddress: undefined, lines: [] }));
    expect(more.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(more.message).toMatch(/UpdateOrder request may have at most \d+ bytes; this one has 1800\d\d/);
  });

  it("answers NOT_FOUND for an unknown product and stores nothing", async () => {
    const err = await grpcError(orders.client.createOrder({ customerId: "c-unknown", lines: [{ productId: cup, quantity: 1 }, { productId: unknownId, quantity: 1 }], shippingAddress: address }));
    expect(err.code).toBe(status.NOT_FOUND);
    expect(err.message).toContain("lines[1].product_id");
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
    await nats().stopForRestart();
    const { order } = await orders.client.createOrder({ customerId: "c-2", lines: [{ productId: cup, quantity: 1 }], shippingAddress: address });
    const { order: moved } = await orders.client.updateOrder({ id: order!.id, expectedVersion: 1, updateMask: ["shipping_address", "lines"], shippingAddress: { ...address, city: "Paris", countryCode: "FR" }, lines: [{ productId: teapot, quantity: 1 }] });
    expect(moved).toMatchObject({ version: 2, shippingAddress: { city: "Paris" }, total: eur(1999), lines: [{ productId: teapot, quantity: 1 }] });
    const stale = await grpcError(orders.client.updateOrder({ id: order!.id, expectedVersion: 1, updateMask: ["shipping_address"], shippingAddress: address, lines: [] }));
    expect(stale.code).toBe(status.ABORTED);
    const noAddress = await grpcError(orders.client.updateOrder({ id: order!.id, expectedVersion: 2, updateMask: ["shipping_address"], shippingAddress: undefined, lines: [] }));
    expect(noAddress.violations.map((v) => v.field)).toEqual(["shipping_address"]);
    // Back up: the product service reserves for the new lines, and only that answer settles the order.
    await nats().restart();
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
    expect(order!.cancellationReason).toBe("");
    expect(cancelled!.cancellationReason).toBe("changed my mind");
    // Cancelled again, for another reason: the first stands.
    expect((await orders.client.cancelOrder({ id: order!.id, reason: "" })).order).toEqual(cancelled);
    expect((await orders.client.getOrder({ id: order!.id })).order).toEqual(cancelled);
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
  afterAll(() => dir.remove());
  const nats = useNatsServer();

  it("answers UNAVAILABLE when the product service is down, and stores no order", async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const s = new Server();
      s.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (_e, port) => s.tryShutdown(() => resolve(port)));
    });
    const orders = await startTestOrders(dir.path, `127.0.0.1:${closedPort}`, nats().url);
    try {
      const err = await grpcError(orders.client.createOrder({ customerId: "c-down", lines: [{ productId: unknownId, quantity: 1 }], shippingAddress: address }));
      expect(err.code).toBe(status.UNAVAILABLE);
      expect((await orders.client.listOrders({ customerId: "c-down", pageSize: 0, pageToken: "" })).orders).toEqual([]);
    } finally {
      await orders.stop();
    }
  });

  it("answers RESOURCE_EXHAUSTED, not INTERNAL, when the product service is at capacity, and stores no order", async () => {
    const full = new Server();
    full.addService(ProductServiceService, {
      batchGetProducts: (_call: unknown, cb: (e: { code: number; details: string }) => void) => cb({ code: status.RESOURCE_EXHAUSTED, details: "the server is at capacity" }),
    } as never);
    const port = await new Promise<number>((resolve) => full.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (_e, p) => resolve(p)));
    const orders = await startTestOrders(dir.path, `127.0.0.1:${port}`, nats().url, { database: `${dir.path}/full-orders.db` });
    try {
      const err = await grpcError(orders.client.createOrder({ customerId: "c-full", lines: [{ productId: unknownId, quantity: 1 }], shippingAddress: address }));
      expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(err.message).toMatch(/product service is at capacity; nothing was changed/);
      expect((await orders.client.listOrders({ customerId: "c-full", pageSize: 0, pageToken: "" })).orders).toEqual([]);
    } finally {
      await orders.stop();
      full.forceShutdown();
    }
  });

  it("answers DEADLINE_EXCEEDED when the product service is slow, and stores no order", async () => {
    // A real gRPC server implementing ProductService that answers too late.
    const slow = new Server();
    let cancelledUpstream = 0;
    slow.addService(ProductServiceService, {
      batchGetProducts: (call: { on(e: string, f: () => void): void }, cb: (e: null, r: unknown) => void) => {
        call.on("cancelled", () => cancelledUpstream++);
        setTimeout(() => cb(null, { products: [{ id: unknownId, name: "Slow", price: eur(1) }] }), 10_000).unref();
      },
    } as never);
    const port = await new Promise<number>((resolve) => slow.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (_e, p) => resolve(p)));
    const orders = await startTestOrders(dir.path, `127.0.0.1:${port}`, nats().url, { productsTimeoutMs: 2_000, database: `${dir.path}/slow-orders.db` });
    try {
      const err = await grpcError(orders.client.createOrder({ customerId: "c-slow", lines: [{ productId: unknownId, quantity: 1 }], shippingAddress: address }));
      expect(err.code).toBe(status.DEADLINE_EXCEEDED);
      expect((await orders.client.listOrders({ customerId: "c-slow", pageSize: 0, pageToken: "" })).orders).toEqual([]);
      // The caller's own, shorter deadline travels to the product lookup, which is cancelled with it (long enough for
      // the lookup to start on a busy machine, shorter than the service's own 2 s).
      const before = cancelledUpstream;
      const propagated = await grpcError(orders.client.createOrder({ customerId: "c-slow", lines: [{ productId: unknownId, quantity: 1 }], shippingAddress: address }, { timeoutMs: 1_000 }));
      expect(propagated.code).toBe(status.DEADLINE_EXCEEDED);
      await expect.poll(() => cancelledUpstream).toBeGreaterThan(before);
    } finally {
      await orders.stop();
      slow.forceShutdown();
    }
  });
});

/** The version of a product in the order service's copy of the catalogue, read from its SQLite file; undefined while it is not there. */
function catalogVersionOf(ordersDatabasePath: string, productId: string): number | undefined {
  const db = new BetterSqlite3(ordersDatabasePath, { readonly: true, fileMustExist: true });
  try {
    return db.prepare<[string], number>("SELECT version FROM product_catalog WHERE product_id = ?").pluck().get(productId);
  } finally {
    db.close();
  }
}

describe("OrderService's copy of the product catalogue", () => {
  // One logger for every service started here: each logger adds a process exit hook.
  const logger = quietLogger("catalogue-tests");

  /** nats-server and the product service in a temp dir; `startOrders` adds the order service when the test is ready for it. */
  async function startCatalogueShop() {
    const dir = tempDir();
    const nats = await startNatsServer({ storeDir: join(dir.path, "nats") });
    const products = await startTestProducts(dir.path, nats.url, { logger });
    let orders: RunningOrders | undefined;
    return {
      products,
      async startOrders() {
        orders = await startTestOrders(dir.path, products.service.address, nats.url, { logger });
        return orders;
      },
      async stop() {
        await orders?.stop();
        await products.stop();
        await nats.stop();
        dir.remove();
      },
    };
  }

  const placeOrder = (orders: RunningOrders, productId: string) =>
    orders.client.createOrder({ customerId: "c-catalogue", lines: [{ productId, quantity: 2 }], shippingAddress: address }).then((r) => r.order!);

  it("prices a product it learnt from ProductCreated while the product service is down", async () => {
    const shop = await startCatalogueShop();
    try {
      const orders = await shop.startOrders();
      const kettle = (await shop.products.client.createProduct({ name: "Kettle", description: "", price: eur(3499), initialStock: 10 })).product!.id;
      await eventually("the order service has consumed the kettle's ProductCreated", () => catalogVersionOf(orders.databasePath, kettle) === 1);
      await shop.products.stop();
      const order = await placeOrder(orders, kettle);
      expect(order).toMatchObject({ state: OrderState.ORDER_STATE_PENDING, total: eur(2 * 3499), lines: [{ productId: kettle, productName: "Kettle", quantity: 2, unitPrice: eur(3499) }] });
      // The product service really is gone: a product the catalogue does not know cannot be priced.
      expect((await grpcError(placeOrder(orders, unknownId))).code).toBe(status.UNAVAILABLE);
    } finally {
      await shop.stop();
    }
  });

  it("prices later orders at the new price once ProductUpdated has been consumed", async () => {
    const shop = await startCatalogueShop();
    try {
      const orders = await shop.startOrders();
      const kettle = (await shop.products.client.createProduct({ name: "Kettle", description: "", price: eur(3499), initialStock: 1000 })).product!.id;
      await eventually("the order service has consumed the kettle's ProductCreated", () => catalogVersionOf(orders.databasePath, kettle) === 1);
      const first = await placeOrder(orders, kettle);
      expect(first.lines[0].unitPrice).toEqual(eur(3499));
      // Let the reservation settle first: it moves the product's version too.
      await expect.poll(async () => (await orders.client.getOrder({ id: first.id })).order!.state).toBe(OrderState.ORDER_STATE_CONFIRMED);
      const { version } = (await shop.products.client.getProduct({ id: kettle })).product!;
      await shop.products.client.updateProduct({ id: kettle, expectedVersion: version, updateMask: ["price", "name"], name: "Kettle XL", description: "", price: eur(3999) });
      // The kettle is in the catalogue, so the new price can only arrive through ProductUpdated.
      let later = first;
      await eventually("an order is priced at the new price", async () => {
        later = await placeOrder(orders, kettle);
        return later.lines[0].unitPrice?.amountMinor === 3999;
      });
      expect(later).toMatchObject({ total: eur(2 * 3999), lines: [{ productName: "Kettle XL", unitPrice: eur(3999) }] });
    } finally {
      await shop.stop();
    }
  });

  it("looks up a product it does not know yet in the product service, and keeps it", async () => {
    const shop = await startCatalogueShop();
    try {
      // A product older than the stream's history: its ProductCreated is gone from SHOP_PRODUCTS when the order service starts.
      const teapot = (await shop.products.client.createProduct({ name: "Old teapot", description: "", price: eur(1250), initialStock: 10 })).product!.id;
      const jsm = shop.products.service.events.bus.jsm;
      await eventually("the teapot's ProductCreated is in SHOP_PRODUCTS", async () => (await readStream(jsm, "SHOP_PRODUCTS")).some((e) => e.subject === `shop.products.v1.product.${teapot}.created`));
      await jsm.streams.purge("SHOP_PRODUCTS");
      const orders = await shop.startOrders();
      expect(catalogVersionOf(orders.databasePath, teapot)).toBeUndefined();

      const first = await placeOrder(orders, teapot);
      expect(first).toMatchObject({ total: eur(2 * 1250), lines: [{ productId: teapot, productName: "Old teapot", unitPrice: eur(1250) }] });
      expect(catalogVersionOf(orders.databasePath, teapot)).toBe(1);
      // Now it is local: the next order needs no product service.
      await shop.products.stop();
      expect((await placeOrder(orders, teapot)).lines[0].unitPrice).toEqual(eur(1250));
    } finally {
      await shop.stop();
    }
  });
});
