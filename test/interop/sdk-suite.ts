/**
 * One interop suite, run once per SDK language (go.test.ts, python.test.ts):
 * a real nats-server and the real TypeScript services with their events
 * runtime, driven by the Go or Python program built on gen/go or gen/python.
 * The server runs with the generated authorization, as under `npm start`, so
 * the programs connect as README's "Using Concord from another language"
 * says: they read with the observer's seed through a durable of the
 * observer's names, and publish with the order service's seed on its inbox.
 * The tests of one suite run in order and follow the order the first one
 * places through the saga: placed, confirmed, then cancelled by the program.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderCancelled, OrderPlaced } from "../../gen/ts/shop/orders/v1/order_events_pb.js";
import { OrderPlacedEvent } from "../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { subjectFor } from "../../platform/events/index.js";
import { CreateOrderRequest, OrderState } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { StockReleased } from "../../gen/ts/shop/products/v1/product_events_pb.js";
import { useNatsConnection, useNatsServer } from "../support/nats-server.js";
import { signToken, readTokenSecret } from "../../platform/auth/index.js";
import { clientTlsCredentials } from "../../platform/grpc/index.js";
import { devSecurity, grpcError, startTestOrders, startTestProducts, type RunningOrders, type RunningProducts } from "../support/shop.js";
import { eventually, readStream } from "../support/streams.js";
import { createTempDir, type TempDir } from "../support/temp-dir.js";
import { repoRoot } from "../../tools/repo-root.js";
import { eventsManifest, subjectOf } from "./events.js";
import type { InteropProgram } from "./programs.js";

interface Money {
  currencyCode: string;
  amountMinor: number;
}
interface Line {
  productId: string;
  productName: string;
  quantity: number;
  unitPrice: Money;
  lineTotal: Money;
}
interface PlacedOrder {
  productId: string;
  productStock: number;
  orderId: string;
  customerId: string;
  state: string;
  lines: Line[];
  total: Money;
  readBackEquals: boolean;
}
interface ReceivedEvent {
  type: string;
  subject: string;
  id: string;
  source: string;
  time: string;
  traceparent: string;
  orderId: string;
  customerId: string;
  lines?: Line[];
  total: Money;
  linesVersion?: number;
}

const invalidRequestFile = join(repoRoot, "test/interop/invalid-create-order.json");
const traceparent = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const byField = (a: { field: string }, b: { field: string }) => (a.field < b.field ? -1 : a.field > b.field ? 1 : 0);

/** Registers the suite for one language; `prepare` builds or locates its program in a temporary directory. */
export function describeInterop(language: InteropProgram["language"], prepare: (tempDir: string) => Promise<InteropProgram>): void {
  describe(`the ${language} SDK against the TypeScript services`, () => {
    const manifest = eventsManifest();
    const customer = `${language}-customer-1`;
    let dir: TempDir;
    let program: InteropProgram;
    const credentials = createTempDir(`concord-interop-${language}-nats-`);
    afterAll(() => credentials.remove());
    const nats = useNatsServer({ credentialsDir: credentials.path });
    const nc = useNatsConnection(nats, { user: "observer" });
    let products: RunningProducts;
    let orders: RunningOrders;
    let placed: PlacedOrder;
    let programEnv: Record<string, string> = {};

    beforeAll(async () => {
      dir = createTempDir(`concord-interop-${language}-`);
      program = await prepare(dir.path);
      // As npm start runs them: TLS with the development CA, and bearer tokens.
      const security = { products: devSecurity(dir.path, "products"), orders: devSecurity(dir.path, "orders") };
      const key = readTokenSecret(join(dir.path, "auth", "token-hs256.key"));
      const caFile = join(dir.path, "tls", "ca.pem");
      const ownClient = { credentials: clientTlsCredentials({ caFile }), token: () => signToken(key, { subject: "ops", roles: ["admin"] }, 600) };
      products = await startTestProducts(dir.path, nats().url, { security: security.products, natsSeedFile: nats().seedFile("products") }, ownClient);
      orders = await startTestOrders(dir.path, products.service.address, nats().url, { security: security.orders, natsSeedFile: nats().seedFile("orders") }, ownClient);
      const [admin, owner] = await Promise.all([signToken(key, { subject: "ops", roles: ["admin"] }, 600), signToken(key, { subject: customer, roles: ["customer"] }, 600)]);
      programEnv = { INTEROP_TLS_CA: caFile, INTEROP_ADMIN_TOKEN: admin, INTEROP_CUSTOMER_TOKEN: owner };
    }, 300_000);

    afterAll(async () => {
      await orders?.stop();
      await products?.stop();
      dir?.remove();
    });

    it("finds the streams provisioned as npm start does, as gen/events.json describes them (one replica on a standalone server)", async () => {
      const jsm = await nc().jetstreamManager();
      for (const stream of manifest.streams) {
        const { config } = await jsm.streams.info(stream.name);
        expect(config).toMatchObject({
          subjects: stream.subjects,
          storage: stream.storage,
          num_replicas: 1,
          max_age: stream.maxAgeMs * 1_000_000,
          duplicate_window: stream.duplicateWindowMs * 1_000_000,
        });
      }
    });

    it("creates a product, places an order and reads it back with the generated gRPC clients", async () => {
      placed = await program.run<PlacedOrder>("place-order", { products: products.service.address, orders: orders.service.address, customer }, programEnv);
      const [line] = placed.lines;
      expect(placed).toMatchObject({ customerId: customer, state: "ORDER_STATE_PENDING", readBackEquals: true, productStock: 10 });
      expect(placed.lines).toHaveLength(1);
      expect(line).toMatchObject({ productId: placed.productId, unitPrice: { currencyCode: "EUR", amountMinor: 1999 } });
      expect(line.quantity).toBeGreaterThan(0);
      expect(line.lineTotal).toEqual({ currencyCode: "EUR", amountMinor: 1999 * line.quantity });
      expect(placed.total).toEqual(line.lineTotal);

      // The TypeScript client sees the same order and product.
      const { order } = await orders.client.getOrder({ id: placed.orderId });
      expect(order).toMatchObject({ customerId: customer, total: placed.total });
      expect([OrderState.ORDER_STATE_PENDING, OrderState.ORDER_STATE_CONFIRMED]).toContain(order!.state);
      expect(order!.lines).toEqual(placed.lines);
      const { product } = await products.client.getProduct({ id: placed.productId });
      expect(product).toMatchObject({ name: line.productName, price: { currencyCode: "EUR", amountMinor: 1999 } });
    });

    it("gets INVALID_ARGUMENT with the same field violations as the TypeScript client", async () => {
      const fromProgram = await program.run<{ code: number; violations: { field: string; description: string }[] }>("invalid-order", {
        orders: orders.service.address,
        request: invalidRequestFile,
      }, programEnv);
      const request = CreateOrderRequest.fromJSON(JSON.parse(readFileSync(invalidRequestFile, "utf8")));
      const fromTypeScript = await grpcError(orders.client.createOrder(request));

      expect(fromTypeScript.code).toBe(status.INVALID_ARGUMENT);
      expect(fromProgram.code).toBe(status.INVALID_ARGUMENT);
      expect([...fromProgram.violations].sort(byField)).toEqual([...fromTypeScript.violations].sort(byField));
      expect(fromProgram.violations.map((v) => v.field).sort()).toEqual([
        "customer_id",
        "lines[0].product_id",
        "lines[0].quantity",
        "lines[1].quantity",
        "shipping_address.city",
        "shipping_address.country_code",
      ]);
      expect(fromProgram.violations.every((v) => v.description !== "")).toBe(true);
    });

    it("builds subjects from the generated templates and refuses unsafe token values", async () => {
      const result = await program.run<{ subject: string; fromMessage: string; refused: Record<string, string>; taken: string[] }>("subjects");
      expect(result.subject).toBe(subjectOf(manifest, "shop.orders.v1.OrderPlaced", { order_id: "0190a3c2-7d1e-7b4a-9c1f-2b3c4d5e6f70" }));
      expect(result.fromMessage).toBe("shop.orders.v1.order.o-1.cancelled");
      expect(Object.keys(result.refused).sort()).toEqual(["", "a b", "a*", "a.b", "a>", "bom\ufeff", "del\x7f", "nbsp\u00a0", "nul\x00", "tab\t"]);
      expect(result.refused["a.b"]).toContain('the value "a.b" of token {order_id} holds "."');
      expect(result.refused[""]).toContain("is empty");
      expect(result.refused["tab\t"]).toContain("holds white space");
      expect(result.refused["bom\ufeff"]).toContain("holds white space");
      expect(result.refused["nul\x00"]).toContain("holds the control character U+0000");
      expect(result.refused["del\x7f"]).toContain("holds the control character U+007F");
      expect(result.taken).toEqual(["nel\u0085", "zero-width\u200b", "caf\u00e9"]);
      // The TypeScript runtime, whose rule the SDKs follow, refuses and takes the very same values.
      const builds = (orderId: string) => { try { subjectFor(OrderPlacedEvent, OrderPlaced.fromPartial({ orderId })); return true; } catch { return false; } };
      expect(Object.keys(result.refused).filter(builds)).toEqual([]);
      expect(result.taken.every(builds)).toBe(true);
    });

    it("consumes OrderPlaced and OrderConfirmed as the observer, through a durable of its names, decoding by ce-type", async () => {
      const durable = "observer-1";
      const result = await program.run<{ placed: ReceivedEvent; confirmed: ReceivedEvent; consumer: { durable: string; stream: string; ackPending: number } }>(
        "consume-order-events",
        { nats: nats().url, seed: nats().seedFile("observer"), orders: orders.service.address, order: placed.orderId, durable },
        programEnv,
      );

      expect(result.placed).toMatchObject({
        type: "shop.orders.v1.OrderPlaced",
        subject: `shop.orders.v1.order.${placed.orderId}.placed`,
        source: "orders",
        orderId: placed.orderId,
        customerId: customer,
        lines: placed.lines,
        total: placed.total,
        linesVersion: 1,
      });
      expect(result.confirmed).toMatchObject({
        type: "shop.orders.v1.OrderConfirmed",
        subject: `shop.orders.v1.order.${placed.orderId}.confirmed`,
        source: "orders",
        orderId: placed.orderId,
        customerId: customer,
        total: placed.total,
      });
      for (const event of [result.placed, result.confirmed]) {
        expect(event.traceparent).toMatch(traceparent);
        expect(Number.isNaN(Date.parse(event.time))).toBe(false);
      }
      expect(result.placed.id).not.toBe(result.confirmed.id);
      expect(result.consumer).toEqual({ durable, stream: "SHOP_ORDERS", ackPending: 0, filters: ["shop.orders.v1.>"] });
      const info = await (await nc().jetstreamManager()).consumers.info("SHOP_ORDERS", durable);
      expect(info.config.durable_name).toBe(durable);
      expect(info.ack_floor.stream_seq).toBeGreaterThanOrEqual(2);
    });

    it("consumes them as the observer through a durable that filters on the two events' filter subjects", async () => {
      const durable = "observer-2";
      const result = await program.run<{ placed: ReceivedEvent; confirmed: ReceivedEvent; consumer: { durable: string; filters: string[] } }>(
        "consume-order-events",
        { nats: nats().url, seed: nats().seedFile("observer"), orders: orders.service.address, order: placed.orderId, durable, filter: "events" },
        programEnv,
      );
      expect(result.placed).toMatchObject({ type: "shop.orders.v1.OrderPlaced", orderId: placed.orderId });
      expect(result.confirmed).toMatchObject({ type: "shop.orders.v1.OrderConfirmed", orderId: placed.orderId });
      const filterOf = (type: string) => manifest.events.find((e) => e.type === type)!.filterSubject;
      expect(result.consumer).toMatchObject({ durable, filters: [filterOf("shop.orders.v1.OrderPlaced"), filterOf("shop.orders.v1.OrderConfirmed")] });
    });

    it("publishes OrderCancelled as the order service, which the TypeScript product service decodes and acts on: the stock comes back", async () => {
      const quantity = placed.lines[0].quantity;
      const stock = async () => (await products.client.getProduct({ id: placed.productId })).product!.stock;
      expect(await stock()).toBe(10 - quantity); // held for the confirmed order

      // As the order service, SHOP_ORDERS's only publisher, on the one reply inbox its user may subscribe to.
      const published = await program.run<{ id: string; subject: string; stream: string; sequence: number }>("publish-cancelled", {
        nats: nats().url,
        seed: nats().seedFile("orders"),
        "inbox-prefix": "_INBOX_orders",
        order: placed.orderId,
        customer,
        reason: "changed my mind",
      });
      expect(published).toMatchObject({ subject: `shop.orders.v1.order.${placed.orderId}.cancelled`, stream: "SHOP_ORDERS" });

      const jsm = await nc().jetstreamManager();
      const stored = await jsm.streams.getMessage("SHOP_ORDERS", { seq: published.sequence });
      expect(stored.subject).toBe(published.subject);
      const header = (name: string) => stored.header.get(name);
      expect(header("ce-specversion")).toBe("1.0");
      expect(header("ce-type")).toBe("shop.orders.v1.OrderCancelled");
      expect(header("ce-id")).toBe(published.id);
      expect(header("Nats-Msg-Id")).toBe(published.id);
      expect(header("ce-source")).toBe("orders"); // it stands in for the order service, the only publisher SHOP_ORDERS takes events from
      expect(header("ce-datacontenttype")).toBe("application/protobuf");
      expect(header("content-type")).toBe("application/protobuf");
      expect(header("traceparent")).toMatch(traceparent);
      expect(header("ce-traceparent")).toBe(header("traceparent"));
      expect(Number.isNaN(Date.parse(header("ce-time")))).toBe(false);
      expect(OrderCancelled.decode(stored.data)).toEqual({ orderId: placed.orderId, customerId: customer, reason: "changed my mind" });

      // The product service's durable consumer took the event: the stock is back and StockReleased says what was returned.
      await eventually("the product service released the stock", async () => (await stock()) === 10);
      const releasedOf = async () => (await readStream(jsm, "SHOP_PRODUCTS")).filter((e) => e.headers.get("ce-type") === "shop.products.v1.StockReleased" && StockReleased.decode(e.data).orderId === placed.orderId);
      await eventually("StockReleased is stored (the relay publishes it a moment after the commit)", async () => (await releasedOf()).length > 0);
      const released = (await releasedOf()).map((e) => StockReleased.decode(e.data));
      expect(released).toEqual([{ orderId: placed.orderId, lines: [{ productId: placed.productId, quantity }] }]);
    });
  });
}
