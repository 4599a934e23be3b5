/**
 * README "Backups and restores", the other way round from
 * backup-restore.test.ts: the PRODUCT service's database restored from a
 * backup older than the order service's, and the commands the restore
 * printed not run (or the events gone from their stream). The orders
 * placed after the backup are CONFIRMED with no stock held for them, and
 * `tools/reservations.ts check` finds them; `--reserve` has them reserved
 * again, `--release` gives back what is held for an order cancelled after
 * the backup. Real nats-server with the generated authorization, real
 * services on SQLite files, the real commands.
 */
import { join } from "node:path";
import { connect, type NatsConnection, nkeyAuthenticator } from "nats";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { StockReleased } from "../gen/ts/shop/products/v1/product_events_pb.js";
import { runConcord, runTool } from "./support/concord.js";
import { freePort, useNatsServer } from "./support/nats-server.js";
import { address, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";
import { readStream } from "./support/streams.js";
import { capturedLogger } from "./support/captured-logger.js";

const eur = (amountMinor: number) => ({ currencyCode: "EUR", amountMinor });

interface Listed {
  orderId: string;
  problem: string;
  state?: string;
  reservation?: { status: string; linesVersion: number } | null;
  remedy?: string | null;
}

describe("the product service's database restored from a backup older than the order service's", () => {
  const dir = tempDir("concord-product-restore-");
  afterAll(() => dir.remove());
  const nats = useNatsServer({ credentialsDir: join(dir.path, "nats-credentials") });
  let products: RunningProducts | undefined;
  let orders: RunningOrders | undefined;
  let operator: NatsConnection;
  let productsListen: string;
  const ordersLog = capturedLogger("orders");

  const startProducts = () => startTestProducts(dir.path, nats().url, { natsSeedFile: nats().seedFile("products"), listen: productsListen, metricsListen: "127.0.0.1:0" });

  beforeAll(async () => {
    const seed = new TextEncoder().encode(readFileSync(nats().seedFile("operator"), "utf8").trim());
    operator = await connect({ servers: nats().url, authenticator: nkeyAuthenticator(seed), inboxPrefix: "_INBOX" });
    productsListen = `127.0.0.1:${await freePort()}`;
    products = await startProducts();
    orders = await startTestOrders(dir.path, productsListen, nats().url, { natsSeedFile: nats().seedFile("orders"), metricsListen: "127.0.0.1:0", logger: ordersLog.logger });
  }, 60_000);
  afterAll(async () => {
    await operator?.close();
    await orders?.stop();
    await products?.stop();
  });

  /** As an operator runs the commands: the databases, the NATS server and the operator's seed found through DATA_DIR and NATS_URL. */
  const env = () => ({ DATA_DIR: dir.path, NATS_URL: nats().url, NATS_NKEY_SEED: undefined, PRODUCTS_DATABASE_URL: undefined, ORDERS_DATABASE_URL: undefined });
  const concord = (...args: string[]) => runConcord(env(), args);
  const check = (...args: string[]) => runTool(["--import", "tsx", "tools/reservations.ts"], env(), ["check", ...args]);
  const listed = (stdout: string) => stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as Listed);
  const events = async (stream: string, suffix: string) => (await readStream(await operator.jetstreamManager(), stream)).filter((e) => e.subject.endsWith(suffix));
  const streamMessages = async (stream: string) => (await (await operator.jetstreamManager()).streams.info(stream)).state.messages;
  const settled = async () => {
    const jsm = await operator.jetstreamManager();
    for (const [stream, durable] of [
      ["SHOP_ORDERS", "products-order-placed"],
      ["SHOP_ORDERS", "products-order-cancelled"],
      ["SHOP_ORDERS", "products-order-unknown"],
      ["SHOP_PRODUCTS", "orders-stock-reserved"],
      ["SHOP_PRODUCTS", "orders-stock-reservation-failed"],
    ]) {
      const info = await jsm.consumers.info(stream, durable);
      if (info.num_pending !== 0 || info.num_ack_pending !== 0) return false;
    }
    return true;
  };

  it("leaves the orders placed after the backup CONFIRMED with no stock held (sold again), which check lists, --reserve reserves or reports refused, and --release gives back what a cancelled order holds; a second run changes nothing", async () => {
    const newProduct = async (stock: number) => (await products!.client.createProduct({ name: "Teapot", description: "", price: eur(1000), initialStock: stock })).product!.id;
    const stockOf = async (id: string) => (await products!.client.getProduct({ id })).product!.stock;
    const place = async (productId: string, quantity: number) => {
      const { order } = await orders!.client.createOrder({ customerId: "c-restore", lines: [{ productId, quantity }], shippingAddress: address });
      await expect.poll(async () => (await orders!.client.getOrder({ id: order!.id })).order!.state, { timeout: 15_000, interval: 100 }).toBe(OrderState.ORDER_STATE_CONFIRMED);
      return order!.id;
    };
    const stateOf = async (id: string) => (await orders!.client.getOrder({ id })).order!.state;
    const cancel = async (id: string) => {
      await orders!.client.cancelOrder({ id, reason: "changed my mind" });
      await expect.poll(settled, { timeout: 15_000, interval: 100 }).toBe(true);
    };
    const p = await newProduct(10);
    const q = await newProduct(3);

    // Before the backup: A and D reserved and confirmed.
    const a = await place(p, 1);
    const d = await place(p, 1);
    await expect.poll(settled, { timeout: 15_000, interval: 100 }).toBe(true);
    const backupFile = join(dir.path, "backups", "products.db");
    const backup = await concord("database", "backup", "products", backupFile);
    expect(backup.status, backup.stderr).toBe(0);

    // After it: B and E (all of Q) reserved and confirmed, H too; C placed and cancelled; D cancelled.
    const b = await place(p, 2);
    const e = await place(q, 3);
    const h = await place(p, 1);
    const c = await place(p, 1);
    await cancel(c);
    await cancel(d);
    expect([await stockOf(p), await stockOf(q)]).toEqual([10 - 1 - 2 - 1, 0]);

    // The product database goes back to the backup; the commands the restore prints are not run.
    await products!.stop();
    products = undefined;
    const restore = await concord("database", "restore", "products", backupFile);
    expect(restore.status, restore.stderr).toBe(0);
    expect(restore.stdout).toContain("npx concord consumer redeliver products-order-placed --from ");
    expect(restore.stderr).toContain("then, once the consumers have caught up (`npx concord status`: nothing pending), run `npx tsx tools/reservations.ts check`");
    products = await startProducts();
    await expect.poll(settled, { timeout: 15_000, interval: 100 }).toBe(true);

    // Stock as at the backup: held for A and for D (cancelled since), for none of B, E and H, which stay CONFIRMED.
    expect([await stockOf(p), await stockOf(q)]).toEqual([10 - 1 - 1, 3]);
    expect(await Promise.all([a, b, e, h].map(stateOf))).toEqual(Array(4).fill(OrderState.ORDER_STATE_CONFIRMED));
    expect(await Promise.all([c, d].map(stateOf))).toEqual([OrderState.ORDER_STATE_CANCELLED, OrderState.ORDER_STATE_CANCELLED]);
    // Nothing the services report says so: both serve, outboxes empty, consumers with nothing pending, no dead letters.
    const status = await runConcord({ ...env(), GRPC_INSECURE: "1" }, [
      "status",
      "--products",
      productsListen,
      "--orders",
      orders!.service.address,
      "--products-metrics",
      products.service.metricsAddress!,
      "--orders-metrics",
      orders!.service.metricsAddress!,
    ]);
    expect(status.status, status.stdout + status.stderr).toBe(0);
    expect(status.stdout).toContain("consumer products-order-placed on SHOP_ORDERS: pending 0, unacked 0, redelivered 0, dead letters 0");

    // Q's units are sold again: F is confirmed with what E was confirmed for.
    const f = await place(q, 2);
    expect(await stockOf(q)).toBe(1);
    // H cancelled now: the product service has nothing to give back for it, and says nothing (no StockReleased).
    await cancel(h);
    expect(await stockOf(p)).toBe(8);
    expect(await events("SHOP_PRODUCTS", `${h}.released`)).toEqual([]);

    // Within --recent's time (60 s by default) the orders are left out: their events may be on their way.
    const young = await check();
    expect([young.status, young.stdout], young.stderr).toEqual([0, ""]);
    expect(young.stderr).toMatch(/ \(\d+ changed in the last 60 s left out: their events may be on their way\); 0 whose stock /);

    const badRecent = await check("--recent", "soon", "--reserve");
    expect([badRecent.status, badRecent.stdout, badRecent.stderr]).toEqual([2, "", 'reservations: --recent takes a whole number of seconds, not "soon" (`npx tsx tools/reservations.ts --help` shows the usage)\n']);

    const found = await check("--recent", "0");
    expect(found.status, found.stderr).toBe(1);
    const byOrder = new Map(listed(found.stdout).map((l) => [l.orderId, l]));
    expect(byOrder.get(b)).toMatchObject({ problem: "unreserved", state: "CONFIRMED", reservation: null, remedy: "--reserve" });
    expect(byOrder.get(e)).toMatchObject({ problem: "unreserved", state: "CONFIRMED", reservation: null, remedy: "--reserve" });
    expect(byOrder.get(d)).toMatchObject({ problem: "held", state: "CANCELLED", reservation: { status: "reserved", linesVersion: 1 }, remedy: "--release" });
    for (const fine of [a, c, f, h]) expect(byOrder.has(fine), fine).toBe(false);
    expect(found.stderr).toContain(`whose stock ${join(dir.path, "products.db")} does not hold as the order says (2 unreserved, 1 held)`);
    expect(found.stderr).toContain("2 unreserved: --reserve reserves their stock");
    expect(found.stderr).toContain("1 held: --release gives their stock back");

    const fixed = await check("--recent", "0", "--reserve", "--release");
    expect(fixed.status, fixed.stderr).toBe(0);
    expect(fixed.stderr).toContain("OrderCancelled for 1 cancelled or rejected order(s)");
    expect(fixed.stderr).toContain("OrderPlaced for 2 order(s)");
    await expect.poll(settled, { timeout: 15_000, interval: 100 }).toBe(true);
    // B's stock held again, D's given back; E's refused, Q's last unit being F's and one other: E stays CONFIRMED.
    await expect.poll(() => stockOf(p), { timeout: 15_000, interval: 100 }).toBe(10 - 1 - 2);
    expect(await stockOf(q)).toBe(1);
    expect((await events("SHOP_PRODUCTS", `${d}.released`)).map((m) => StockReleased.decode(m.data))).toEqual([
      { orderId: d, lines: [{ productId: p, quantity: 1 }] },
      { orderId: d, lines: [{ productId: p, quantity: 1 }] },
    ]);
    expect(await events("SHOP_PRODUCTS", `${e}.failed`)).toHaveLength(1);
    expect(await Promise.all([b, e, f].map(stateOf))).toEqual(Array(3).fill(OrderState.ORDER_STATE_CONFIRMED));
    // The order service says so, once: the refusal of an order it had confirmed.
    expect(ordersLog.lines.filter((line) => line.level === "warn" && line.orderId === e)).toEqual([
      expect.objectContaining({
        answer: "StockReservationFailed",
        msg:
          `StockReservationFailed came for order ${e}, which is CONFIRMED: the product service holds no stock for it (its database restored from an older backup, say); ` +
          "the order stays CONFIRMED, and `npx tsx tools/reservations.ts check` lists it for a person to decide",
      }),
    ]);

    // Left for a person: E, refused. Run again, nothing is published and nothing changes.
    const published = await streamMessages("SHOP_ORDERS");
    const again = await check("--recent", "0", "--reserve", "--release");
    expect(again.status, again.stderr).toBe(1);
    expect(listed(again.stdout)).toEqual([expect.objectContaining({ orderId: e, problem: "refused", state: "CONFIRMED", reservation: expect.objectContaining({ status: "failed", linesVersion: 1 }), remedy: null })]);
    expect(again.stderr).toContain("1 refused: CONFIRMED orders whose stock the product service refused");
    expect(again.stderr).not.toContain("published");
    expect(await streamMessages("SHOP_ORDERS")).toBe(published);
    expect([await stockOf(p), await stockOf(q), await stateOf(e)]).toEqual([7, 1, OrderState.ORDER_STATE_CONFIRMED]);
  }, 180_000);
});
