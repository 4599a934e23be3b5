import { hostname } from "node:os";
import { join } from "node:path";
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderServiceService, OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { createClient, waitForServing, type PromiseClient } from "../platform/grpc/index.js";
import { freePort, startNatsCluster, type NatsClusterHandle, type NatsClusterNode } from "./support/nats-server.js";
import { outboxRows, readEvents, startSagaLoad, stocks, waitUntilSettled, type PlacedOrder } from "./support/saga-load.js";
import { startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { tempDirForSuite } from "./support/temp-dir.js";

const dir = tempDirForSuite("concord-cluster-");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** The saga's load: 100 orders a second, half of them on a product that runs out, so both outcomes come. */
const ratePerSecond = 100;
const plentyStock = 1_000_000;
const scarceStock = 400;
/** An order the saga settles more slowly than this counts as delayed by the fault. */
const delayedMs = 1_000;

/** The durable consumers of the saga (the contracts' subscriptions). */
const sagaConsumers = [
  { stream: "SHOP_ORDERS", durable: "products-order-placed" },
  { stream: "SHOP_PRODUCTS", durable: "orders-stock-reserved" },
  { stream: "SHOP_PRODUCTS", durable: "orders-stock-reservation-failed" },
];

/**
 * The whole system on a three-node cluster (streams of 3 replicas,
 * sync_interval always), the services as production runs them (their own
 * processes, given all three URLs), under a saga load of 100 orders a second
 * while one fault strikes. After each: every order ends CONFIRMED or
 * REJECTED, stock is what the confirmed orders left, no event had two
 * effects (one reservation outcome and one order outcome per order), both
 * outboxes drain, and nothing went to the dead letter stream. Each test
 * prints its time to recover: from the fault until the last order it
 * delayed (settled more than a second after it was placed) was settled.
 */
describe("the order saga on a three-node cluster, a node lost under load", () => {
  let cluster: NatsClusterHandle;
  let products: ServiceProcess;
  let orders: ServiceProcess;
  /** The port the order service serves gRPC on, which its instance name (and so its NATS connection's) holds. */
  let ordersPort: number;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let js: JetStreamClient;
  let catalog: PromiseClient<typeof ProductServiceService>;
  let orderClient: PromiseClient<typeof OrderServiceService>;
  const databases = { products: join(dir, "products.db"), orders: join(dir, "orders.db") };

  beforeAll(async () => {
    cluster = await startNatsCluster({ storeDir: join(dir, "nats") });
    const productsAddress = `127.0.0.1:${await freePort()}`;
    ordersPort = await freePort();
    const ordersAddress = `127.0.0.1:${ordersPort}`;
    products = startServiceProcess("products", { PRODUCTS_LISTEN: productsAddress, PRODUCTS_DATABASE_URL: databases.products, NATS_URL: cluster.url, LOG_LEVEL: "warn" });
    await waitForServing(productsAddress, 30_000);
    orders = startServiceProcess("orders", {
      ORDERS_LISTEN: ordersAddress,
      ORDERS_DATABASE_URL: databases.orders,
      PRODUCTS_ADDRESS: productsAddress,
      NATS_URL: cluster.url,
      LOG_LEVEL: "warn",
    });
    await waitForServing(ordersAddress, 30_000);
    nc = await connect({ servers: cluster.url.split(","), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    jsm = await nc.jetstreamManager();
    js = nc.jetstream();
    catalog = createClient(ProductServiceService, { address: productsAddress });
    orderClient = createClient(OrderServiceService, { address: ordersAddress });
  }, 120_000);
  afterAll(async () => {
    catalog?.close();
    orderClient?.close();
    await nc?.close();
    await orders?.stop();
    await products?.stop();
    await cluster?.stop();
  });

  const streamLeader = async (stream: string) => (await jsm.streams.info(stream)).cluster!.leader!;
  const consumerLeader = async (stream: string, durable: string) => (await jsm.consumers.info(stream, durable)).cluster!.leader!;
  /** What `node` leads: streams and the saga's consumers. */
  const ledBy = async (node: string): Promise<string[]> => {
    const led: string[] = [];
    for (const stream of ["SHOP_ORDERS", "SHOP_PRODUCTS", "CONCORD_DLQ"]) if ((await streamLeader(stream)) === node) led.push(stream);
    for (const c of sagaConsumers) if ((await consumerLeader(c.stream, c.durable)) === node) led.push(c.durable);
    return led;
  };
  /** The node that holds the named client connection (a service's: `orders (<host>:<port>)`, by its instance), from each node's /connz. */
  const nodeHolding = async (connectionName: string): Promise<NatsClusterNode> => {
    for (const node of cluster.nodes) {
      const connz = (await (await fetch(`http://127.0.0.1:${node.monitorPort}/connz`)).json()) as { connections?: Array<{ name?: string }> };
      if (connz.connections?.some((c) => c.name === connectionName)) return node;
    }
    throw new Error(`no node holds a connection named ${connectionName}`);
  };

  /**
   * Runs the saga load, strikes with `fault` 3 s in, keeps the load on for
   * 5 s after the fault is over, then waits for the saga to settle and
   * checks everything the cluster promises. Resolves with the printed line.
   */
  async function underLoad(name: string, fault: () => Promise<string>): Promise<void> {
    const begunAt = Date.now();
    const customerId = `c-${name.replace(/\W+/g, "-")}`;
    const plenty = (await catalog.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 2500 }, initialStock: plentyStock })).product!.id;
    const scarce = (await catalog.createProduct({ name: "Rare kettle", description: "", price: { currencyCode: "EUR", amountMinor: 9900 }, initialStock: scarceStock })).product!.id;
    const startSeq = async (stream: string) => (await jsm.streams.info(stream)).state.last_seq + 1;
    const from = { orders: await startSeq("SHOP_ORDERS"), products: await startSeq("SHOP_PRODUCTS"), dlq: await startSeq("CONCORD_DLQ") };

    const loadAt = Date.now();
    const load = startSagaLoad({ orders: orderClient, customerId, productIds: [plenty, scarce], ratePerSecond, maxOrders: ratePerSecond * 90 });
    await sleep(3_000);
    const faultAt = Date.now();
    const what = await fault();
    const faultOverAt = Date.now();
    await sleep(5_000);
    const { placed, failed } = await load.stop();
    expect(failed, "CreateOrder calls that failed for good").toEqual([]);

    const states = await waitUntilSettled(orderClient, customerId, 120_000);
    const settledAt = Date.now();
    const outboxes = async () => [outboxRows(databases.products), outboxRows(databases.orders)];
    await expect.poll(outboxes, { timeout: 60_000, interval: 200 }).toEqual([
      { waiting: 0, parked: 0 },
      { waiting: 0, parked: 0 },
    ]);
    const drainedAt = Date.now();

    // Every order placed ended CONFIRMED or REJECTED, and no other order appeared.
    expect([...states.keys()].sort()).toEqual(placed.map((o) => o.id).sort());
    const confirmed = placed.filter((o) => states.get(o.id) === OrderState.ORDER_STATE_CONFIRMED);
    const rejected = placed.filter((o) => states.get(o.id) === OrderState.ORDER_STATE_REJECTED);
    expect(confirmed.length + rejected.length).toBe(placed.length);
    expect(rejected.length).toBeGreaterThan(0);

    // Stock is what the confirmed orders left.
    const taken = (id: string) => confirmed.filter((o) => o.productId === id).reduce((sum, o) => sum + o.quantity, 0);
    expect(Object.fromEntries(await stocks(catalog, [plenty, scarce]))).toEqual({ [plenty]: plentyStock - taken(plenty), [scarce]: scarceStock - taken(scarce) });

    // One effect per event: each order has one OrderPlaced, one reservation outcome and one order outcome (by ce-id).
    const ours = new Set(placed.map((o) => o.id));
    const byOrder = (events: Awaited<ReturnType<typeof readEvents>>) => {
      const ids = new Map<string, Set<string>>();
      const firstAt = new Map<string, number>();
      for (const e of events) {
        const orderId = e.subject.split(".")[4];
        if (!ours.has(orderId)) continue;
        ids.set(orderId, (ids.get(orderId) ?? new Set()).add(e.ceId));
        firstAt.set(orderId, Math.min(firstAt.get(orderId) ?? Number.POSITIVE_INFINITY, e.storedAt));
      }
      return { ids, firstAt };
    };
    const readFrom = Date.now();
    const placedEvents = byOrder(await readEvents(js, jsm, "SHOP_ORDERS", from.orders, ["shop.orders.v1.order.*.placed"]));
    const outcomes = byOrder(await readEvents(js, jsm, "SHOP_ORDERS", from.orders, ["shop.orders.v1.order.*.confirmed", "shop.orders.v1.order.*.rejected"]));
    const reservations = byOrder(await readEvents(js, jsm, "SHOP_PRODUCTS", from.products, ["shop.products.v1.reservation.*.reserved", "shop.products.v1.reservation.*.failed"]));
    for (const [kind, events] of Object.entries({ placed: placedEvents, reservation: reservations, outcome: outcomes })) {
      const counts = placed.map((o) => events.ids.get(o.id)?.size ?? 0);
      expect(counts.filter((n) => n !== 1), `orders without exactly one ${kind} event`).toEqual([]);
    }
    expect((await jsm.streams.info("CONCORD_DLQ")).state.last_seq, "dead letters").toBe(from.dlq - 1);
    const readFor = Date.now() - readFrom;

    // Time to recover: until the last order the fault delayed was settled.
    const latency = (o: PlacedOrder) => outcomes.firstAt.get(o.id)! - placedEvents.firstAt.get(o.id)!;
    const delayed = placed.filter((o) => latency(o) > delayedMs);
    const recoveredAt = Math.max(faultAt, ...delayed.map((o) => outcomes.firstAt.get(o.id)!));
    const longest = Math.max(...placed.map(latency));
    console.log(
      `cluster fault [${name}]: ${what}; ${placed.length} orders (${confirmed.length} confirmed, ${rejected.length} rejected), ` +
        `the fault took ${seconds(faultOverAt - faultAt)}; time to recover ${seconds(recoveredAt - faultAt)} ` +
        `(${delayed.length} orders settled more than ${delayedMs} ms after they were placed, the slowest in ${seconds(longest)}); ` +
        `all settled ${seconds(settledAt - faultAt)} after the fault; stock right, one effect per event, outboxes drained (${seconds(drainedAt - settledAt)} after), ` +
        `no dead letters; the streams read back in ${seconds(readFor)}; the load began ${seconds(loadAt - begunAt)} after the test did`,
    );
  }

  it("keeps every order when the stream leader is killed (kill -9) and restarted", { timeout: 240_000 }, async () => {
    await underLoad("kill -9 the stream leader", async () => {
      const victim = cluster.node(await streamLeader("SHOP_ORDERS"));
      const led = await ledBy(victim.name);
      const killedAt = performance.now();
      await victim.kill();
      await sleep(5_000);
      const restartAt = performance.now();
      await victim.restart();
      return `${victim.name} (leading ${led.join(", ")}) killed, restarted 5 s later, healthy ${seconds(performance.now() - restartAt)} after its restart (${seconds(performance.now() - killedAt)} after the kill)`;
    });
  });

  it("keeps every order when a node hangs for 10 s (SIGSTOP) and resumes", { timeout: 240_000 }, async () => {
    await underLoad("SIGSTOP a node for 10 s", async () => {
      const victim = await nodeHolding(`orders (${hostname()}:${ordersPort})`);
      const led = await ledBy(victim.name);
      victim.pause();
      await sleep(10_000);
      victim.resume();
      const resumedAt = performance.now();
      await victim.healthy();
      return `${victim.name} (holding the order service's connection${led.length > 0 ? `, leading ${led.join(", ")}` : ""}) stopped for 10 s, healthy ${seconds(performance.now() - resumedAt)} after it resumed`;
    });
  });

  it("keeps every order through a rolling restart of all three nodes", { timeout: 240_000 }, async () => {
    await underLoad("rolling restart", async () => {
      const took: string[] = [];
      for (const node of cluster.nodes) {
        const at = performance.now();
        await node.restart();
        took.push(`${node.name} ${seconds(performance.now() - at)}`);
      }
      return `each node stopped (SIGTERM), started and healthy again before the next (${took.join(", ")})`;
    });
  });

  it("keeps every order when the saga's consumers' leaders move", { timeout: 240_000 }, async () => {
    await underLoad("consumer leaders move", async () => {
      const moves: string[] = [];
      for (const { stream, durable } of sagaConsumers) {
        const before = await consumerLeader(stream, durable);
        const res = await nc.request(`$JS.API.CONSUMER.LEADER.STEPDOWN.${stream}.${durable}`, new Uint8Array(), { timeout: 5_000 });
        expect((JSON.parse(new TextDecoder().decode(res.data)) as { success?: boolean }).success).toBe(true);
        await expect.poll(() => consumerLeader(stream, durable).catch(() => before), { timeout: 10_000, interval: 50 }).not.toBe(before);
        moves.push(`${durable} ${before} -> ${await consumerLeader(stream, durable)}`);
      }
      return `leaders stepped down: ${moves.join(", ")}`;
    });
  });
});
