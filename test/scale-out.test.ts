/**
 * Several instances of each service on one Postgres (a database per
 * service) and one JetStream: the durable consumers shared, each event
 * handled once in effect, stock never oversold, versions enforced, the
 * product service's instances both asked, and the outbox relayed by one
 * instance at a time, taken over when it dies.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { Code } from "../platform/errors/index.js";
import { createClient, pageScope, type PageScope, unrestricted } from "../platform/grpc/index.js";
import { OrderServiceService } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { OrderServiceMethods } from "../gen/ts/shop/orders/v1/order_service_rpc.js";
import pg from "pg";
import { useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { usePostgresServer } from "./support/postgres.js";
import { startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { address, grpcError, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";
import { readStream } from "./support/streams.js";
import { freePort } from "./support/nats-server.js";
import { waitForServing } from "../platform/grpc/index.js";

const eur = (amountMinor: number) => ({ currencyCode: "EUR", amountMinor });
const { PENDING, CONFIRMED, REJECTED } = { PENDING: OrderState.ORDER_STATE_PENDING, CONFIRMED: OrderState.ORDER_STATE_CONFIRMED, REJECTED: OrderState.ORDER_STATE_REJECTED };

describe("two instances of each service on one Postgres", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const postgres = usePostgresServer();
  const nats = useNatsServer();
  const nc = useNatsConnection(nats);
  let productsDb: string;
  let ordersDb: string;
  const products: RunningProducts[] = [];
  const orders: RunningOrders[] = [];

  beforeAll(async () => {
    productsDb = await postgres().createDatabase("products");
    ordersDb = await postgres().createDatabase("orders");
    // Instances of one service start together, as a deployment does: migrations take turns.
    products.push(...(await Promise.all([0, 1].map(() => startTestProducts(dir.path, nats().url, { database: productsDb })))));
    const productsAddress = products.map((p) => p.service.address).join(",");
    orders.push(...(await Promise.all([0, 1].map(() => startTestOrders(dir.path, productsAddress, nats().url, { database: ordersDb })))));
  }, 120_000);
  afterAll(async () => {
    for (const o of orders) await o.stop();
    for (const p of products) await p.stop();
  });

  const newProduct = async (stock: number) => (await products[0].client.createProduct({ name: "Teapot", description: "", price: eur(1000), initialStock: stock })).product!.id;
  const stateOf = async (id: string) => (await orders[1].client.getOrder({ id })).order!.state;

  it("never oversells: 200 concurrent orders through both order instances for 50 units end 50 CONFIRMED, 150 REJECTED, stock 0", async () => {
    const productId = await newProduct(50);
    // Both order instances learn the product (from ProductCreated) before the rush.
    await expect.poll(async () => (await orders[1].client.createOrder({ customerId: "warm", lines: [{ productId, quantity: 1 }], shippingAddress: address }).then(() => true, () => false))).toBe(true);
    await products[0].client.adjustStock({ id: productId, delta: 1, reason: "the warm-up order's unit back" });
    // What counts is the outcome, not how fast 200 calls at once are served on a shared machine.
    const placed = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        orders[i % 2].client.createOrder({ customerId: `rush-${i}`, lines: [{ productId, quantity: 1 }], shippingAddress: address }, { timeoutMs: 30_000 }).then((r) => r.order!),
      ),
    );
    expect(placed.every((o) => o.state === PENDING)).toBe(true);
    const tally = async () => {
      const states = await Promise.all(placed.map((o) => stateOf(o.id)));
      return { confirmed: states.filter((s) => s === CONFIRMED).length, rejected: states.filter((s) => s === REJECTED).length };
    };
    await expect.poll(tally, { timeout: 60_000, interval: 250 }).toEqual({ confirmed: 50, rejected: 150 });
    const { product } = await products[1].client.getProduct({ id: productId });
    expect(product!.stock).toBe(0);
    // Each answer was handled once: one OrderConfirmed or OrderRejected per order in the stream (each relay publishes
    // its order's event a moment after the order reads settled).
    const settled = async () => (await readStream(await nc().jetstreamManager(), "SHOP_ORDERS")).filter((e) => /\.(confirmed|rejected)$/.test(e.subject));
    await expect.poll(async () => (await settled()).length, { timeout: 30_000 }).toBeGreaterThanOrEqual(placed.length);
    const settledEvents = await settled();
    const perOrder = new Map<string, number>();
    for (const e of settledEvents) perOrder.set(e.subject, (perOrder.get(e.subject) ?? 0) + 1);
    for (const o of placed) {
      const n = (perOrder.get(`shop.orders.v1.order.${o.id}.confirmed`) ?? 0) + (perOrder.get(`shop.orders.v1.order.${o.id}.rejected`) ?? 0);
      expect(n, o.id).toBe(1);
    }
  }, 120_000);

  it("enforces expected_version across instances and loses no stock adjustment", async () => {
    const productId = await newProduct(0);
    const { product } = await products[0].client.getProduct({ id: productId });
    const edits = await Promise.allSettled(
      products.map((p, i) => p.client.updateProduct({ id: productId, expectedVersion: product!.version, updateMask: ["name"], name: `Edit ${i}`, description: "", price: undefined })),
    );
    expect(edits.filter((e) => e.status === "fulfilled")).toHaveLength(1);
    const refused = edits.find((e) => e.status === "rejected") as PromiseRejectedResult;
    expect(refused.reason.code).toBe(Code.ABORTED);
    await Promise.all(Array.from({ length: 40 }, (_, i) => products[i % 2].client.adjustStock({ id: productId, delta: 1, reason: `delivery ${i}` })));
    expect((await products[1].client.getProduct({ id: productId })).product!.stock).toBe(40);
  });

  it("places one order per request id, whichever instances the repeats reach", async () => {
    const productId = await newProduct(10);
    await expect.poll(async () => (await orders[0].client.createOrder({ customerId: "warm-2", lines: [{ productId, quantity: 1 }], shippingAddress: address }).then(() => true, () => false))).toBe(true);
    const requestId = "0190a5b4-7c4e-7d3e-9f1a-00000000abcd";
    const request = { customerId: "c-once", lines: [{ productId, quantity: 1 }], shippingAddress: address, requestId };
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => orders[i % 2].client.createOrder(request).then((r) => r.order!.id)));
    expect(new Set(answers).size).toBe(1);
    expect((await orders[0].client.listOrders({ customerId: "c-once", pageSize: 10, pageToken: "" })).orders).toHaveLength(1);
    const reused = await grpcError(orders[1].client.createOrder({ ...request, customerId: "c-other" }));
    expect(reused.code).toBe(Code.ALREADY_EXISTS);
  });

  it("refuses a NUL character in a product name or a customer id as INVALID_ARGUMENT naming the field, not INTERNAL (PostgreSQL's text cannot hold it)", async () => {
    const nul = "must not contain the NUL character (U+0000)";
    const created = await grpcError(products[0].client.createProduct({ name: "Tea\u0000pot", description: "", price: eur(1000), initialStock: 1 }));
    expect(created.code).toBe(Code.INVALID_ARGUMENT);
    expect(created.violations).toEqual([{ field: "name", description: nul }]);
    const listed = await grpcError(orders[0].client.listOrders({ customerId: "c\u0000", pageSize: 10, pageToken: "" }));
    expect(listed.code).toBe(Code.INVALID_ARGUMENT);
    expect(listed.violations).toEqual([{ field: "customer_id", description: nul }]);
  });

  it("refuses a forged page token whose id holds a NUL character or is not as the service writes it as INVALID_ARGUMENT naming page_token, not INTERNAL (it reached PostgreSQL)", async () => {
    const refused = [{ field: "page_token", description: "is not a token returned by this service" }];
    // Forged in the very scope of each call (its digest is no secret), so that only the id can be what is refused.
    const productsScope = pageScope({ method: "/shop.products.v1.ProductService/ListProducts", principal: unrestricted });
    const ordersScope = pageScope({ method: "/shop.orders.v1.OrderService/ListOrders", principal: unrestricted }, ["c-1"]);
    const token = (scope: PageScope, id: Buffer) => Buffer.concat([Buffer.of(1), scope.digest, id]).toString("base64url");
    for (const id of [Buffer.from("\u0000"), Buffer.from("x\u0000y"), Buffer.from([0xff, 0xfe])]) {
      const listedProducts = await grpcError(products[0].client.listProducts({ pageSize: 10, pageToken: token(productsScope, id) }));
      expect([listedProducts.code, listedProducts.violations], id.toString("hex")).toEqual([Code.INVALID_ARGUMENT, refused]);
      const listedOrders = await grpcError(orders[0].client.listOrders({ customerId: "c-1", pageSize: 10, pageToken: token(ordersScope, id) }));
      expect([listedOrders.code, listedOrders.violations], id.toString("hex")).toEqual([Code.INVALID_ARGUMENT, refused]);
    }
    // The same way forged with an id the service could have written, the token is taken.
    expect((await products[0].client.listProducts({ pageSize: 10, pageToken: token(productsScope, Buffer.from("0")) })).products).toBeDefined();
    // A token the service wrote still goes on from its id.
    await newProduct(1);
    await newProduct(1);
    const first = await products[0].client.listProducts({ pageSize: 1, pageToken: "" });
    const next = await products[0].client.listProducts({ pageSize: 1, pageToken: first.nextPageToken });
    expect(next.products[0].id > first.products[0].id).toBe(true);
  });
});

describe("the outbox relay of two order service processes on one Postgres", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const postgres = usePostgresServer();
  const nats = useNatsServer();
  const nc = useNatsConnection(nats);
  let products: RunningProducts;
  const processes: ServiceProcess[] = [];

  beforeAll(async () => {
    products = await startTestProducts(dir.path, nats().url, { database: await postgres().createDatabase("products") });
  }, 120_000);
  afterAll(async () => {
    for (const p of processes) await p.kill();
    await products?.stop();
  });

  /** Starts two order service processes on a new database; resolves once both serve. */
  const twoOrderServices = async (database: string) => {
    // Each test has a database of its own, but the consumers are the stream's: an earlier test's processes would take its events.
    for (const p of processes.splice(0)) await p.kill();
    const ordersDb = await postgres().createDatabase(database);
    const addresses = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`];
    const env = (listen: string) => ({ ORDERS_LISTEN: listen, ORDERS_DATABASE_URL: ordersDb, PRODUCTS_ADDRESS: products.service.address, NATS_URL: nats().url, LOG_LEVEL: "warn" });
    const started = addresses.map((a) => startServiceProcess("orders", env(a)));
    processes.push(...started);
    await Promise.all(addresses.map((a) => waitForServing(a, 60_000)));
    return { ordersDb, addresses, started };
  };

  it("publishes each event once, each order's in commit order, while the relaying instance dies and the other takes over", async () => {
    const { ordersDb, addresses, started } = await twoOrderServices("orders");
    const productId = (await products.client.createProduct({ name: "Kettle", description: "", price: eur(2500), initialStock: 100_000 })).product!.id;
    const clients = addresses.map((a) => createClient(OrderServiceService, { address: a, methods: OrderServiceMethods, defaultTimeoutMs: 5_000 }));

    const leader = () => relayLeader(ordersDb);
    await expect.poll(leader, { timeout: 20_000 }).not.toBeUndefined();
    const leaderPid = await leader();
    const relaying = started.find((p) => p.process.pid === leaderPid)!;
    if (!relaying) throw new Error(`the relay lock is held by pid ${leaderPid}, not one of ${started.map((p) => p.process.pid).join(", ")}`);
    const survivor = started.find((p) => p !== relaying)!;
    const survivorClient = clients[started.indexOf(survivor)];

    const placed: string[] = [];
    let placing = true;
    const callers = clients.map(async (client) => {
      while (placing) {
        await client.createOrder({ customerId: "c-relay", lines: [{ productId, quantity: 1 }], shippingAddress: address }).then(
          (r) => void placed.push(r.order!.id),
          () => new Promise((r) => setTimeout(r, 20)),
        );
      }
    });
    await expect.poll(() => placed.length, { timeout: 30_000 }).toBeGreaterThan(100);
    await relaying.kill();
    const killedAt = performance.now();
    const atKill = placed.length;
    await expect.poll(() => placed.length, { timeout: 30_000 }).toBeGreaterThan(atKill + 100);
    placing = false;
    await Promise.all(callers);
    await expect.poll(leader, { timeout: 20_000 }).toBe(survivor.process.pid);

    // Every order settles through the survivor, which relays the dead one's events too.
    for (const id of placed) await expect.poll(async () => (await survivorClient.getOrder({ id })).order!.state, { timeout: 60_000 }).toBe(CONFIRMED);
    const takeoverMs = performance.now() - killedAt;
    const jsm = await nc().jetstreamManager();
    await expect.poll(async () => (await readStream(jsm, "SHOP_ORDERS")).filter((e) => e.subject.endsWith(".confirmed")).length, { timeout: 30_000 }).toBeGreaterThanOrEqual(placed.length);
    const stream = await readStream(jsm, "SHOP_ORDERS");
    const ids = stream.map((e) => e.headers.get("ce-id"));
    expect(new Set(ids).size, "no event stored twice").toBe(ids.length);
    for (const id of placed) {
      const own = stream.filter((e) => e.subject.startsWith(`shop.orders.v1.order.${id}.`)).map((e) => e.subject.split(".").pop());
      expect(own, id).toEqual(["placed", "confirmed"]);
    }
    console.log(`relay takeover: ${placed.length} orders, every one CONFIRMED with its events once and in order, ${(takeoverMs / 1000).toFixed(1)} s after the relaying instance was killed`);
    for (const c of clients) c.close();
  }, 180_000);

  it("takes the relay over from an instance stopped (SIGSTOP) while it relays, which gives the relay up when it resumes", async () => {
    const { ordersDb, addresses, started } = await twoOrderServices("orders_stopped");
    const productId = (await products.client.createProduct({ name: "Kettle", description: "", price: eur(2500), initialStock: 1_000 })).product!.id;
    await expect.poll(() => relayLeader(ordersDb), { timeout: 20_000 }).not.toBeUndefined();
    const leaderPid = await relayLeader(ordersDb);
    const stopped = started.find((p) => p.process.pid === leaderPid)!;
    const survivor = started.find((p) => p !== stopped)!;
    const client = createClient(OrderServiceService, { address: addresses[started.indexOf(survivor)], methods: OrderServiceMethods, defaultTimeoutMs: 5_000 });
    const place = async (n: number) => {
      const ids: string[] = [];
      for (let i = 0; i < n; i++) ids.push((await client.createOrder({ customerId: "c-stopped", lines: [{ productId, quantity: 1 }], shippingAddress: address })).order!.id);
      return ids;
    };
    try {
      // Stopped, it still holds its sessions: the kernel answers the server's probes for it.
      stopped.process.kill("SIGSTOP");
      const stoppedAt = performance.now();
      const placed = await place(10);
      // The server ends the stopped process's lock session after 15 s without a statement (three times the 5 s check).
      await expect.poll(() => relayLeader(ordersDb), { timeout: 45_000, interval: 250 }).toBe(survivor.process.pid);
      const takeoverMs = performance.now() - stoppedAt;
      // The survivor publishes the orders placed meanwhile (how soon they settle is the consumers' matter: the stopped
      // instance may have pulled an answer, which comes again once its ack wait is over).
      const jsm = await nc().jetstreamManager();
      const ours = async () => (await readStream(jsm, "SHOP_ORDERS")).filter((e) => placed.some((id) => e.subject.startsWith(`shop.orders.v1.order.${id}.`)));
      await expect.poll(async () => (await ours()).filter((e) => e.subject.endsWith(".placed")).length, { timeout: 15_000 }).toBe(placed.length);
      const publishedMs = performance.now() - stoppedAt;
      stopped.process.kill("SIGCONT");
      // Resumed, it finds its lock gone and waits: the survivor keeps relaying, and nothing is published twice.
      await waitForServing(addresses[started.indexOf(stopped)], 30_000);
      placed.push(...(await place(10)));
      for (const id of placed) await expect.poll(async () => (await client.getOrder({ id })).order!.state, { timeout: 60_000 }).toBe(CONFIRMED);
      expect(await relayLeader(ordersDb)).toBe(survivor.process.pid);
      await expect.poll(async () => (await ours()).length, { timeout: 30_000 }).toBe(2 * placed.length);
      for (const id of placed) expect((await ours()).filter((e) => e.subject.startsWith(`shop.orders.v1.order.${id}.`)).map((e) => e.subject.split(".").pop()), id).toEqual(["placed", "confirmed"]);
      console.log(`relay takeover from a stopped instance: the lock ${(takeoverMs / 1000).toFixed(1)} s after SIGSTOP, the orders placed meanwhile published ${(publishedMs / 1000).toFixed(1)} s after it; ${placed.length} orders CONFIRMED, each event once`);
    } finally {
      stopped.process.kill("SIGCONT");
      client.close();
    }
  }, 180_000);
});

/** The pid of the service process whose database session holds the outbox relay's lock in `database`. */
async function relayLeader(database: string): Promise<number | undefined> {
  const client = new pg.Client({ connectionString: database });
  await client.connect();
  try {
    const { rows } = await client.query<{ application_name: string }>(
      "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.objid = $1 AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
      [0x436f6e65],
    );
    const pid = /pid (\d+)/.exec(rows[0]?.application_name ?? "")?.[1];
    return pid === undefined ? undefined : Number(pid);
  } finally {
    await client.end();
  }
}
