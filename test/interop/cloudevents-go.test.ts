// Concord's events read by the CloudEvents Go SDK (github.com/cloudevents/sdk-go/v2): test/interop/go/cloudevents.go.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderState } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { address, type Shop, startShop, tempDir } from "../support/shop.js";
import { readStream } from "../support/streams.js";
import type { TempDir } from "../support/temp-dir.js";
import { buildGoProgram, type InteropProgram } from "./programs.js";

interface GoCloudEvent {
  stream: string;
  subject: string;
  id: string;
  type: string;
  source: string;
  specversion: string;
  time: string;
  datacontenttype: string;
  dataBytes: number;
  traceparent: string;
  tracestate: string;
}

describe("the CloudEvents Go SDK reading Concord's events", () => {
  let dir: TempDir;
  let program: InteropProgram;
  let shop: Shop;
  beforeAll(async () => {
    dir = tempDir("concord-cloudevents-go-");
    [program, shop] = await Promise.all([buildGoProgram(dir.path), startShop()]);
  }, 300_000);
  afterAll(async () => {
    await shop?.stop();
    dir?.remove();
  });

  it("finds every event of a saga a valid CloudEvent with its datacontenttype and the distributed tracing extension", async () => {
    const { product } = await shop.products.client.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 2500 }, initialStock: 10 });
    const traceparent = `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
    const { order } = await shop.orders.client.createOrder(
      { customerId: "c-cloudevents", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address },
      { headers: { traceparent, tracestate: "vendor=abc" } },
    );
    await expect.poll(async () => (await shop.orders.client.getOrder({ id: order!.id })).order!.state, { timeout: 15_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);

    // OrderConfirmed is published a moment after the order reads CONFIRMED.
    const jsm = shop.products.service.events.bus.jsm;
    await expect.poll(async () => [...(await readStream(jsm, "SHOP_ORDERS")), ...(await readStream(jsm, "SHOP_PRODUCTS"))].filter((e) => e.subject.includes(order!.id)).length).toBe(3);
    const { events } = await program.run<{ events: GoCloudEvent[] }>("cloudevents", { nats: shop.nats.url, streams: "SHOP_ORDERS,SHOP_PRODUCTS", match: order!.id });
    expect(events.map((e) => e.type).sort()).toEqual(["shop.orders.v1.OrderConfirmed", "shop.orders.v1.OrderPlaced", "shop.products.v1.StockReserved"]);
    for (const event of events) {
      expect(event).toMatchObject({ specversion: "1.0", datacontenttype: "application/protobuf", traceparent, tracestate: "vendor=abc", source: event.stream === "SHOP_ORDERS" ? "orders" : "products" });
      expect(event.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(event.dataBytes).toBeGreaterThan(0);
      expect(Number.isNaN(Date.parse(event.time))).toBe(false);
    }
  });
});
