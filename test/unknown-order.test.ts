/**
 * README "The order saga": an answer about stock for an order the order
 * service does not have. Here the OrderPlaced is forged by a holder of the
 * order service's NATS credentials (the restore that loses an order is in
 * backup-restore.test.ts); real nats-server with the generated
 * authorization, real services on SQLite.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type NatsConnection, nkeyAuthenticator } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderPlacedEvent, OrderUpdatedEvent } from "../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { OrderUnknown } from "../gen/ts/shop/orders/v1/order_events_pb.js";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { StockReservedEvent } from "../gen/ts/shop/products/v1/product_events_jetstream.js";
import { StockReleased } from "../gen/ts/shop/products/v1/product_events_pb.js";
import { Code } from "../platform/errors/index.js";
import { createEventPublisher, deadLetterStreamSpec, type EventPublisher } from "../platform/events/index.js";
import { fileDeadLetter } from "../platform/events/dead-letter.js";
import { uuidv7 } from "../platform/ids/index.js";
import { createLogger } from "../platform/log/index.js";
import { openDatabase } from "../platform/sql/index.js";
import { orderMigrations } from "../services/orders/store/migrations.js";
import { runConcord, runTool } from "./support/concord.js";
import { useNatsServer } from "./support/nats-server.js";
import { address, grpcError, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";
import { readStream } from "./support/streams.js";

const eur = (amountMinor: number) => ({ currencyCode: "EUR", amountMinor });

describe("an answer about stock for an order the order service does not have", () => {
  const dir = tempDir("concord-unknown-order-");
  afterAll(() => dir.remove());
  // The seeds where npm start puts them, DATA_DIR/nats-credentials, where `concord` finds the operator's.
  const nats = useNatsServer({ credentialsDir: join(dir.path, "nats-credentials") });
  let products: RunningProducts;
  let orders: RunningOrders;
  const connections: NatsConnection[] = [];
  const logged: Array<Record<string, unknown>> = [];

  /** Publishes events as `user` would, with its own seed. */
  const publisherAs = async (user: "orders" | "products"): Promise<EventPublisher> => {
    const seed = new TextEncoder().encode(readFileSync(nats().seedFile(user), "utf8").trim());
    const nc = await connect({ servers: nats().url, authenticator: nkeyAuthenticator(seed), inboxPrefix: `_INBOX_${user}`, name: `forger-as-${user}` });
    connections.push(nc);
    return createEventPublisher({ nc, source: user });
  };
  /** The operator reads the streams. */
  let operator: NatsConnection;
  const startOrders = () => startTestOrders(dir.path, products.service.address, nats().url, { natsSeedFile: nats().seedFile("orders"), metricsListen: "127.0.0.1:0", logger });
  const logger = createLogger({ service: "orders", level: "warn", destination: { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) } });

  beforeAll(async () => {
    const seed = new TextEncoder().encode(readFileSync(nats().seedFile("operator"), "utf8").trim());
    operator = await connect({ servers: nats().url, authenticator: nkeyAuthenticator(seed), inboxPrefix: "_INBOX" });
    connections.push(operator);
    products = await startTestProducts(dir.path, nats().url, { natsSeedFile: nats().seedFile("products") });
    orders = await startOrders();
  }, 60_000);
  afterAll(async () => {
    await Promise.all(connections.map((nc) => nc.close()));
    await orders?.stop();
    await products?.stop();
  });

  const newProduct = async (stock: number) => (await products.client.createProduct({ name: "Teapot", description: "", price: eur(1000), initialStock: stock })).product!.id;
  const stockOf = async (id: string) => (await products.client.getProduct({ id })).product!.stock;
  const events = async (stream: string, suffix: string) => (await readStream(await operator.jetstreamManager(), stream)).filter((e) => e.subject.endsWith(suffix));
  const caughtUp = async (stream: string, durable: string) => {
    const info = await (await operator.jetstreamManager()).consumers.info(stream, durable);
    return info.num_pending === 0 && info.num_ack_pending === 0;
  };
  /** Every consumer of the saga has taken every event there is. */
  const settled = async () => {
    for (const [stream, durable] of [
      ["SHOP_ORDERS", "products-order-placed"],
      ["SHOP_ORDERS", "products-order-updated"],
      ["SHOP_ORDERS", "products-order-unknown"],
      ["SHOP_PRODUCTS", "orders-stock-reserved"],
      ["SHOP_PRODUCTS", "orders-stock-reservation-failed"],
    ]) {
      if (!(await caughtUp(stream, durable))) return false;
    }
    return true;
  };
  const metric = async (answer: string) => {
    const text = await (await fetch(`http://${orders.service.metricsAddress}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`concord_orders_unknown_order_answers_total{answer="${answer}"} `));
    return line === undefined ? 0 : Number(line.split(" ")[1]);
  };

  it("has the stock reserved for a forged OrderPlaced released, once, and nothing reserved for that order again; a failed reservation for one is dropped, not dead-lettered", async () => {
    const productId = await newProduct(5);
    const forger = await publisherAs("orders");
    const forgedId = uuidv7();
    const lines = [{ productId, productName: "Teapot", quantity: 2, unitPrice: eur(1000), lineTotal: eur(2000) }];
    await forger.publish(OrderPlacedEvent, { orderId: forgedId, customerId: "c-forged", lines, total: eur(2000), linesVersion: 1 });

    // The product service reserves and answers; the order service has no such order and says so; the stock comes back.
    await expect.poll(() => events("SHOP_ORDERS", `${forgedId}.unknown`), { timeout: 15_000, interval: 100 }).toHaveLength(1);
    await expect.poll(async () => (await settled()) && (await stockOf(productId)), { timeout: 15_000, interval: 100 }).toBe(5);
    const unknown = await events("SHOP_ORDERS", `${forgedId}.unknown`);
    expect(OrderUnknown.decode(unknown[0].data)).toEqual({ orderId: forgedId, linesVersion: 1 });
    expect((await events("SHOP_PRODUCTS", `${forgedId}.released`)).map((e) => StockReleased.decode(e.data))).toEqual([{ orderId: forgedId, lines: [{ productId, quantity: 2 }] }]);
    expect(await metric("StockReserved")).toBe(1);
    expect(logged.filter((l) => l.orderId === forgedId).map((l) => [l.level, l.answer, l.msg])).toEqual([
      ["warn", "StockReserved", `StockReserved came for order ${forgedId}, which this service does not have: OrderUnknown sent, so that the product service releases the stock it holds for it`],
    ]);
    expect((await grpcError(orders.client.getOrder({ id: forgedId }))).code).toBe(Code.NOT_FOUND);

    // The same OrderPlaced again (a new event id, past any inbox) and new lines for it reserve nothing: the order's stock was given back for good.
    await forger.publish(OrderPlacedEvent, { orderId: forgedId, customerId: "c-forged", lines, total: eur(2000), linesVersion: 1 });
    const order = { id: forgedId, customerId: "c-forged", state: OrderState.ORDER_STATE_PENDING, lines, total: eur(2000), shippingAddress: address, rejectionReason: "", version: 2, cancellationReason: "", createTime: new Date(), updateTime: new Date() };
    await forger.publish(OrderUpdatedEvent, { orderId: forgedId, order, changedFields: ["lines"], linesVersion: 2 });
    // A StockReserved for it once more, as a replay would bring it: OrderUnknown again, and nothing released twice.
    const replayer = await publisherAs("products");
    await replayer.publish(StockReservedEvent, { orderId: forgedId, lines: [{ productId, quantity: 2 }], linesVersion: 1 });
    await expect.poll(() => events("SHOP_ORDERS", `${forgedId}.unknown`), { timeout: 15_000, interval: 100 }).toHaveLength(2);
    await expect.poll(settled, { timeout: 15_000, interval: 100 }).toBe(true);
    expect(await stockOf(productId)).toBe(5);
    expect(await events("SHOP_PRODUCTS", `${forgedId}.reserved`)).toHaveLength(2);
    expect(await events("SHOP_PRODUCTS", `${forgedId}.released`)).toHaveLength(1);
    expect(await events("SHOP_PRODUCTS", `${forgedId}.failed`)).toEqual([]);
    expect(await metric("StockReserved")).toBe(2);

    // More than there is: the product service fails the reservation, holding nothing, and the order service drops the answer.
    const tooMany = uuidv7();
    await forger.publish(OrderPlacedEvent, { orderId: tooMany, customerId: "c-forged", lines: [{ ...lines[0], quantity: 6, lineTotal: eur(6000) }], total: eur(6000), linesVersion: 1 });
    await expect.poll(() => metric("StockReservationFailed"), { timeout: 15_000, interval: 100 }).toBe(1);
    await expect.poll(settled, { timeout: 15_000, interval: 100 }).toBe(true);
    expect(await events("SHOP_ORDERS", `${tooMany}.unknown`)).toEqual([]);
    expect(logged.filter((l) => l.orderId === tooMany).map((l) => l.msg)).toEqual([`StockReservationFailed came for order ${tooMany}, which this service does not have: nothing is held for it, so the answer is dropped`]);
    expect(await stockOf(productId)).toBe(5);
    expect(await readStream(await operator.jetstreamManager(), "CONCORD_DLQ")).toEqual([]);

    // The shop goes on: a real order takes its stock and is confirmed.
    const placed = (await orders.client.createOrder({ customerId: "c-real", lines: [{ productId, quantity: 3 }], shippingAddress: address })).order!;
    await expect.poll(async () => (await orders.client.getOrder({ id: placed.id })).order!.state, { timeout: 15_000, interval: 100 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    expect(await stockOf(productId)).toBe(2);
  }, 90_000);

  it("gives back, once replayed, the stock of an answer the order service dead-lettered before it answered OrderUnknown", async () => {
    const productId = await newProduct(4);
    // As the order service did before: the answer filed in the dead letter stream and acked, its stock left held.
    await orders.stop();
    const forgedId = uuidv7();
    const line = { productId, productName: "Teapot", quantity: 1, unitPrice: eur(1000), lineTotal: eur(1000) };
    await (await publisherAs("orders")).publish(OrderPlacedEvent, { orderId: forgedId, customerId: "c-forged", lines: [line], total: eur(1000), linesVersion: 1 });
    await expect.poll(async () => (await events("SHOP_PRODUCTS", `${forgedId}.reserved`)).length, { timeout: 15_000, interval: 100 }).toBe(1);
    expect(await stockOf(productId)).toBe(3);
    const seed = new TextEncoder().encode(readFileSync(nats().seedFile("orders"), "utf8").trim());
    const asOrders = await connect({ servers: nats().url, authenticator: nkeyAuthenticator(seed), inboxPrefix: "_INBOX_orders" });
    connections.push(asOrders);
    const answer = await (await asOrders.jetstream().consumers.get("SHOP_PRODUCTS", "orders-stock-reserved")).next({ expires: 5_000 });
    expect(answer?.subject).toBe(`shop.products.v1.reservation.${forgedId}.reserved`);
    const headers = Object.fromEntries([...answer!.headers!.keys()].map((k) => [k, answer!.headers!.get(k)]));
    const delivery = { consumer: "orders-stock-reserved", stream: "SHOP_PRODUCTS", subject: answer!.subject, streamSequence: answer!.seq, deliveryCount: 1, headers, data: answer!.data, storedAt: new Date() };
    await fileDeadLetter(asOrders.jetstream(), deadLetterStreamSpec, delivery, `order ${forgedId} is unknown to this service, so there is nothing to settle`);
    expect(await answer!.ackAck()).toBe(true);

    orders = await startOrders();
    await expect.poll(settled, { timeout: 15_000, interval: 100 }).toBe(true);
    expect(await stockOf(productId)).toBe(3);
    const replay = await runConcord({ DATA_DIR: dir.path, NATS_NKEY_SEED: undefined }, ["dlq", "replay", "--all", "--nats", nats().url]);
    expect(replay.status, replay.stderr).toBe(0);
    expect(replay.stderr).toContain("replayed 1 dead letter(s) and deleted them from the dead letter stream");
    await expect.poll(() => stockOf(productId), { timeout: 15_000, interval: 100 }).toBe(4);
    await expect.poll(settled, { timeout: 15_000, interval: 100 }).toBe(true);
    expect((await events("SHOP_ORDERS", `${forgedId}.unknown`)).map((e) => OrderUnknown.decode(e.data))).toEqual([{ orderId: forgedId, linesVersion: 1 }]);
    expect(await readStream(await operator.jetstreamManager(), "CONCORD_DLQ")).toEqual([]);
  }, 90_000);

  it("tools/reservations.ts check lists the stock held for an order whose StockReserved will not come again, and --release gives it back; it refuses an order database that has none of the orders", async () => {
    const productId = await newProduct(6);
    // A real order, confirmed: its reservation is the order database's, and never listed.
    const placed = (await orders.client.createOrder({ customerId: "c-real", lines: [{ productId, quantity: 1 }], shippingAddress: address })).order!;
    await expect.poll(async () => (await orders.client.getOrder({ id: placed.id })).order!.state, { timeout: 15_000, interval: 100 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
    // An order lost to a restore, say: reserved while the order service was away, and its StockReserved taken off the
    // stream's consumer without an answer, as when the event is no longer in the stream to deliver again.
    await orders.stop();
    const lostId = uuidv7();
    const line = { productId, productName: "Teapot", quantity: 2, unitPrice: eur(1000), lineTotal: eur(2000) };
    await (await publisherAs("orders")).publish(OrderPlacedEvent, { orderId: lostId, customerId: "c-lost", lines: [line], total: eur(2000), linesVersion: 1 });
    await expect.poll(async () => (await events("SHOP_PRODUCTS", `${lostId}.reserved`)).length, { timeout: 15_000, interval: 100 }).toBe(1);
    const seed = new TextEncoder().encode(readFileSync(nats().seedFile("orders"), "utf8").trim());
    const asOrders = await connect({ servers: nats().url, authenticator: nkeyAuthenticator(seed), inboxPrefix: "_INBOX_orders" });
    connections.push(asOrders);
    const answer = await (await asOrders.jetstream().consumers.get("SHOP_PRODUCTS", "orders-stock-reserved")).next({ expires: 5_000 });
    expect(answer?.subject).toBe(`shop.products.v1.reservation.${lostId}.reserved`);
    expect(await answer!.ackAck()).toBe(true);
    orders = await startOrders();
    await expect.poll(settled, { timeout: 15_000, interval: 100 }).toBe(true);
    expect(await stockOf(productId)).toBe(3);

    const tool = (...args: string[]) => runTool(["--import", "tsx", "tools/reservations.ts"], { DATA_DIR: dir.path, NATS_NKEY_SEED: undefined, PRODUCTS_DATABASE_URL: undefined, ORDERS_DATABASE_URL: undefined }, args);
    const listed = (stdout: string) => stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as { orderId: string; linesVersion: number; lines: unknown });
    const checked = await tool("check");
    expect(checked.status, checked.stderr).toBe(1);
    expect(listed(checked.stdout).map(({ orderId, linesVersion, lines }) => ({ orderId, linesVersion, lines }))).toContainEqual({ orderId: lostId, linesVersion: 1, lines: [{ productId, quantity: 2 }] });
    expect(listed(checked.stdout).map((r) => r.orderId)).not.toContain(placed.id);
    expect(checked.stderr).toContain(`for orders ${join(dir.path, "orders.db")} does not have; run again with --release to give their stock back`);

    // An order database with none of the orders: the wrong one far more often than every order lost; nothing is sent.
    const empty = join(dir.path, "orders-empty.db");
    await (await openDatabase({ path: empty, migrations: orderMigrations })).close();
    const refused = await tool("check", "--release", "--nats", nats().url, "--orders-database", empty);
    expect(refused.status, refused.stderr).toBe(2);
    expect(refused.stderr).toContain(`is ${empty} this system's order database? Name it with --orders-database; if every order was lost, add --all-unknown (nothing was released)`);
    const notOrders = await tool("check", "--orders-database", join(dir.path, "products.db"));
    expect(notOrders.status).toBe(2);
    expect(notOrders.stderr).toContain(`${join(dir.path, "products.db")} is not the orders service's database (it has none of its tables)`);
    // A backup's record named for its database: refused as none of the service's, in one line.
    writeFileSync(join(dir.path, "orders-backup.db.json"), '{"service":"orders","positions":[]}\n');
    const notSqlite = await tool("check", "--orders-database", join(dir.path, "orders-backup.db.json"));
    expect([notSqlite.status, notSqlite.stderr.trim()]).toEqual([
      2,
      `reservations: ${join(dir.path, "orders-backup.db.json")} is not a SQLite database (file is not a database), nor the orders service's; name it with --orders-database, or set ORDERS_DATABASE_URL as for the service (nothing was changed)`,
    ]);
    // A device: SQLite said "disk I/O error" (exit 1); a FIFO was waited on for ever.
    const device = await tool("check", "--orders-database", "/dev/zero");
    expect([device.status, device.stderr.trim()]).toEqual([2, "reservations: /dev/zero is a character device, not a SQLite database file; name the database's file (nothing was changed)"]);
    const emptyOption = await tool("check", "--products-database", "");
    expect([emptyOption.status, emptyOption.stderr.trim()]).toEqual([2, "reservations: --products-database is empty: name the database's file or its postgres:// URL (`npx tsx tools/reservations.ts --help` shows the usage)"]);
    const usage = await tool("check", "--relase");
    expect([usage.status, usage.stderr.trim()]).toEqual([2, "reservations: unknown option --relase; did you mean --release? (`npx tsx tools/reservations.ts --help` shows the usage)"]);
    expect(await events("SHOP_ORDERS", `${lostId}.unknown`)).toEqual([]);

    const released = await tool("check", "--release", "--nats", nats().url);
    expect(released.status, released.stderr).toBe(0);
    expect(released.stderr).toContain("published OrderUnknown for each");
    await expect.poll(() => stockOf(productId), { timeout: 15_000, interval: 100 }).toBe(5);
    expect((await events("SHOP_ORDERS", `${lostId}.unknown`)).map((e) => OrderUnknown.decode(e.data))).toEqual([{ orderId: lostId, linesVersion: 1 }]);
    expect((await events("SHOP_PRODUCTS", `${lostId}.released`)).map((e) => StockReleased.decode(e.data))).toEqual([{ orderId: lostId, lines: [{ productId, quantity: 2 }] }]);
    await expect.poll(settled, { timeout: 15_000, interval: 100 }).toBe(true);
    const after = await tool("check");
    expect(listed(after.stdout).map((r) => r.orderId)).not.toContain(lostId);
    expect(await stockOf(productId)).toBe(5);
  }, 120_000);
});
