import { AckPolicy, type NatsConnection } from "nats";
import { afterAll, describe, expect, it } from "vitest";
import { allStreams } from "../gen/ts/concord_streams.js";
import { deadLetterStreamSpec } from "../platform/events/index.js";
import { runConcord } from "./support/concord.js";
import { useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { createTempDir } from "./support/temp-dir.js";

describe("npx concord consumer stale", () => {
  const dir = createTempDir("concord-stale-");
  afterAll(() => dir.remove());
  // No authorization here, so that the test can make durables no contract declares, as an earlier version's did;
  // that the operator may delete those and no declared one is test/nats-permissions.test.ts's.
  const nats = useNatsServer();
  const connection = useNatsConnection(nats, { streams: [...allStreams, deadLetterStreamSpec] });
  const concord = (...args: string[]) => runConcord({ DATA_DIR: dir.path, NATS_NKEY_SEED: undefined }, [...args, "--nats", nats().url]);
  const durable = (nc: NatsConnection, stream: string, name: string, filter: string) =>
    nc.jetstreamManager().then((jsm) => jsm.consumers.add(stream, { durable_name: name, filter_subject: filter, ack_policy: AckPolicy.Explicit }));

  it("lists the durables no contract declares, and deletes, as the operator, those nothing reads through", { timeout: 90_000 }, async () => {
    const nc = connection();
    const js = nc.jetstream();
    // A declared durable, an observer's consumer, and three that no contract declares: one idle since it was
    // made, one that delivered a message a moment ago, one with a pull request waiting on it.
    await durable(nc, "SHOP_ORDERS", "products-order-placed", "shop.orders.v1.order.*.placed");
    await durable(nc, "SHOP_ORDERS", "observer-3", "shop.orders.v1.order.*.placed");
    await durable(nc, "SHOP_ORDERS", "products-order-placed-v0", "shop.orders.v1.order.*.placed");
    await durable(nc, "SHOP_PRODUCTS", "orders-stock-reserved-old", "shop.products.v1.reservation.*.reserved");
    await durable(nc, "SHOP_ORDERS", "shipping-order-placed", "shop.orders.v1.order.*.placed");
    // And one a client reads through only while --delete watches (its times lost, as after nats-server restarts).
    await durable(nc, "SHOP_ORDERS", "billing-order-placed", "shop.orders.v1.order.*.placed");
    await js.publish("shop.orders.v1.order.o-1.placed", new Uint8Array([1]));
    await js.publish("shop.products.v1.reservation.o-1.reserved", new Uint8Array([2]));
    const recent = await (await js.consumers.get("SHOP_PRODUCTS", "orders-stock-reserved-old")).next({ expires: 5_000 });
    recent?.ack();
    await nc.flush();
    const reading = await js.consumers.get("SHOP_ORDERS", "shipping-order-placed");
    // Takes the one message, acks it, then waits (a pull request on the server) until the test ends.
    const reader = await reading.consume({ max_messages: 10, expires: 30_000 });
    void (async () => {
      for await (const m of reader) m.ack();
    })();
    const jsm = await nc.jetstreamManager();
    for (let i = 0; (await jsm.consumers.info("SHOP_ORDERS", "shipping-order-placed")).num_waiting === 0; i++) {
      if (i > 100) throw new Error("no pull request waiting");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }

    const listed = await concord("consumer", "stale");
    expect(listed.stderr).toBe("concord consumer stale: 4 durable consumer(s) no contract declares; --delete deletes those not in use\n");
    expect(listed.status).toBe(0);
    const lines = listed.stdout.trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.map((l) => `${String(l.stream)}/${String(l.durable)}`)).toEqual([
      "SHOP_ORDERS/billing-order-placed",
      "SHOP_ORDERS/products-order-placed-v0",
      "SHOP_ORDERS/shipping-order-placed",
      "SHOP_PRODUCTS/orders-stock-reserved-old",
    ]);
    expect(lines[1]).toEqual({ stream: "SHOP_ORDERS", durable: "products-order-placed-v0", pending: 1, unacknowledged: 0, waitingPulls: 0, lastDelivered: 0, ackFloor: 0 });
    expect(lines[2]).toMatchObject({ pending: 0, waitingPulls: expect.any(Number), inUse: expect.stringMatching(/pull request\(s\) wait on it: a client reads through it$/) });
    expect(lines[3]).toMatchObject({ pending: 0, lastActive: expect.any(String), inUse: expect.stringMatching(/^it delivered or had a message acknowledged at .+, within the last 15 minutes$/) });

    // billing-order-placed is read through once --delete has looked at it the first time.
    let watching: () => void = () => undefined;
    const watched = new Promise<void>((resolve) => (watching = resolve));
    const deletingRun = runConcord({ DATA_DIR: dir.path, NATS_NKEY_SEED: undefined }, ["consumer", "stale", "--delete", "--nats", nats().url], 60_000, (child) =>
      child.stderr?.on("data", (chunk: Buffer) => {
        if (chunk.toString().includes("watching them")) watching();
      }),
    );
    await watched;
    const read = await (await js.consumers.get("SHOP_ORDERS", "billing-order-placed")).next({ expires: 5_000 });
    read?.ack();
    await nc.flush();
    const deleting = await deletingRun;
    expect(deleting.status).toBe(1);
    expect(deleting.stderr).toContain("concord consumer stale: watching them 10 s for a client reading through one before deleting\n");
    expect(deleting.stderr).toContain("concord consumer stale: kept billing-order-placed of SHOP_ORDERS: ");
    expect(deleting.stderr).toContain("concord consumer stale: kept shipping-order-placed of SHOP_ORDERS: ");
    expect(deleting.stderr).toContain("concord consumer stale: kept orders-stock-reserved-old of SHOP_PRODUCTS: it delivered or had a message acknowledged at ");
    expect(deleting.stderr).toContain("concord consumer stale: deleted 1 durable consumer(s): products-order-placed-v0 of SHOP_ORDERS\n");
    const left = [];
    for (const stream of ["SHOP_ORDERS", "SHOP_PRODUCTS"]) for await (const info of jsm.consumers.list(stream)) left.push(`${stream}/${info.name}`);
    expect(left.sort()).toEqual([
      "SHOP_ORDERS/billing-order-placed",
      "SHOP_ORDERS/observer-3",
      "SHOP_ORDERS/products-order-placed",
      "SHOP_ORDERS/shipping-order-placed",
      "SHOP_PRODUCTS/orders-stock-reserved-old",
    ]);
    reader.stop();
  });

  it("refuses what it does not take, changing nothing (exit 2)", async () => {
    const run = await concord("consumer", "stale", "products-order-placed");
    expect(run.status).toBe(2);
    expect(run.stderr).toBe("concord consumer stale: unexpected products-order-placed (`npx concord consumer stale --help` shows the usage)\n");
    expect(run.stdout).toBe("");
  });
});
