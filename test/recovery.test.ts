import { join } from "node:path";
import { Code, type StatusError } from "../platform/errors/index.js";
import { connect } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderServiceService, OrderState, type Order } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { checkHealth, createClient, waitForServing } from "../platform/grpc/index.js";
import { uuidv7 } from "../platform/ids/index.js";
import { freePort, useNatsServer } from "./support/nats-server.js";
import { startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { address } from "./support/shop.js";
import { tempDirForSuite } from "./support/temp-dir.js";

const dir = tempDirForSuite("concord-recovery-");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const customerId = "c-recovery";
const initialStock = 100_000;

/**
 * The order service as production runs it, crashed while orders are in
 * flight and started again, as a supervisor would. Two recovery times are
 * measured and printed: from the crash until every order is settled (events
 * the crashed process had pulled wait for the consumers' ack wait), and from
 * the restarted service reporting SERVING until a client that lived through
 * the crash gets answers again (its reconnect backoff).
 */
describe("recovery after the order service is killed", () => {
  const nats = useNatsServer({ storeDir: join(dir, "nats") });
  let products: ServiceProcess;
  let orders: ServiceProcess | undefined;
  let productsAddress: string;
  let ordersAddress: string;
  const ordersEnv = () => ({ ORDERS_LISTEN: ordersAddress, ORDERS_DATABASE_URL: join(dir, "orders.db"), PRODUCTS_ADDRESS: productsAddress, NATS_URL: nats().url, LOG_LEVEL: "warn" });

  beforeAll(async () => {
    productsAddress = `127.0.0.1:${await freePort()}`;
    ordersAddress = `127.0.0.1:${await freePort()}`;
    products = startServiceProcess("products", { PRODUCTS_LISTEN: productsAddress, PRODUCTS_DATABASE_URL: join(dir, "products.db"), NATS_URL: nats().url, LOG_LEVEL: "warn" });
    await waitForServing(productsAddress, 30_000);
    orders = startServiceProcess("orders", ordersEnv());
    await waitForServing(ordersAddress, 30_000);
  });
  afterAll(async () => {
    await orders?.stop();
    await products?.stop();
  });

  it("settles every order within seconds of a crash, and long-lived clients call it again as soon as it serves", async () => {
    const catalog = createClient(ProductServiceService, { address: productsAddress });
    const { product } = await catalog.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 2500 }, initialStock });
    const client = createClient(OrderServiceService, { address: ordersAddress, defaultTimeoutMs: 1_000 });

    // Orders placed by 8 callers at once until the crash.
    let placing = true;
    let placed = 0;
    const callers = Array.from({ length: 8 }, async () => {
      while (placing) {
        await client.createOrder({ customerId, lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address }).then(
          () => void placed++,
          () => sleep(20),
        );
      }
    });
    await expect.poll(() => placed, { timeout: 20_000 }).toBeGreaterThan(300);

    // Orders in flight, for certain: the product service stalls while orders keep coming, then the order
    // service hangs, the product service catches up and its replies reach the hung process, which dies
    // before it acknowledges them.
    const nc = await connect({ servers: nats().url });
    const jsm = await nc.jetstreamManager();
    const unacknowledged = async () => {
      let n = 0;
      for (const durable of ["orders-stock-reserved", "orders-stock-reservation-failed"]) n += (await jsm.consumers.info("SHOP_PRODUCTS", durable)).num_ack_pending;
      return n;
    };
    // The replies reach the hung process only through a pull request it made before it hung (each lives 5 s); on a
    // busy machine that may have expired before the product service caught up: then it resumes, and it is tried again.
    let inFlight = false;
    for (let attempt = 1; attempt <= 3 && !inFlight; attempt++) {
      products.process.kill("SIGSTOP");
      const before = placed;
      await expect.poll(() => placed, { timeout: 10_000, interval: 10 }).toBeGreaterThan(before + 50);
      orders!.process.kill("SIGSTOP");
      products.process.kill("SIGCONT");
      for (const until = performance.now() + 4_000; !inFlight && performance.now() < until; ) {
        inFlight = (await unacknowledged()) > 0;
        if (!inFlight) await sleep(50);
      }
      if (!inFlight) orders!.process.kill("SIGCONT");
    }
    placing = false;
    expect(inFlight, "replies delivered to the hung order service and not acknowledged").toBe(true);
    await orders!.kill();
    const killedAt = performance.now();

    // A client that lived through the crash keeps calling; so does a health probe with fresh channels.
    // What counts is when the first call that was answered was sent, not when its answer came: a restarted
    // service, busy starting on a loaded machine, may answer late, and that is no part of the client's reconnect.
    // A call waits only while its channel is connected or connecting; while the channel waits between attempts
    // it fails at once (getOrder is not repeated here: no methods given), and another is sent 20 ms later.
    let firstOkAt: number | undefined;
    let probing = true;
    const caller = (async () => {
      while (probing && firstOkAt === undefined) {
        const sentAt = performance.now();
        // Any answer of the service itself counts, NOT_FOUND included.
        const answered = await client.getOrder({ id: uuidv7() }, { timeoutMs: 10_000 }).then(
          () => true,
          (err: StatusError) => err.code === Code.NOT_FOUND,
        );
        if (answered) firstOkAt = sentAt;
        else await sleep(20);
      }
    })();
    let servingAt: number | undefined;
    const probe = (async () => {
      while (probing && servingAt === undefined) {
        if ((await checkHealth(ordersAddress, "", 300).catch(() => "")) === "SERVING") servingAt = performance.now();
        else await sleep(20);
      }
    })();

    orders = startServiceProcess("orders", ordersEnv());
    await expect.poll(() => servingAt !== undefined && firstOkAt !== undefined, { timeout: 30_000, interval: 20 }).toBe(true);
    probing = false;
    await Promise.all([caller, probe, ...callers]);

    const everyOrder = async (): Promise<Order[]> => {
      const all: Order[] = [];
      let pageToken = "";
      do {
        const page = await client.listOrders({ customerId, pageSize: 500, pageToken }, { timeoutMs: 10_000 });
        all.push(...page.orders);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      return all;
    };
    let settledAt: number | undefined;
    let all: Order[] = [];
    while (settledAt === undefined && performance.now() - killedAt < 60_000) {
      all = await everyOrder();
      if (all.every((o) => o.state !== OrderState.ORDER_STATE_PENDING)) settledAt = performance.now();
      else await sleep(50);
    }
    const settleMs = (settledAt ?? Number.NaN) - killedAt;
    const reconnectMs = Math.max(0, firstOkAt! - servingAt!);
    console.log(
      `recovery: all ${all.length} orders settled ${(settleMs / 1000).toFixed(1)} s after the kill; ` +
        `the restarted order service reported SERVING ${((servingAt! - killedAt) / 1000).toFixed(1)} s after the kill, ` +
        `and the long-lived client sent its first call to be answered ${reconnectMs.toFixed(0)} ms after that`,
    );

    // Each order reserved its unit once, and none is left PENDING.
    expect(all.every((o) => o.state === OrderState.ORDER_STATE_CONFIRMED)).toBe(true);
    expect((await catalog.getProduct({ id: product!.id })).product!.stock).toBe(initialStock - all.length);
    // Generous bounds for a loaded machine; the previous defaults took 30 s and about 2 s. The client tries a
    // server that is away every 250 ms at most (300 ms with grpc-js's jitter): under load this measured 0 to 160 ms.
    // grpc-js's own backoff (1 s, then 1.6 times longer each time) waits up to 1.6 s after a restart that took 1 to
    // 2.6 s, up to 2.6 s after one that took 2.6 to 5.2 s (restarts here took 0.6 to 3.4 s).
    expect(settleMs).toBeLessThan(20_000);
    expect(reconnectMs).toBeLessThan(1_000);
    catalog.close();
    client.close();
    await nc.close();
  }, 120_000);
});
