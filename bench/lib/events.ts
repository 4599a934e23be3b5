/**
 * What the event scenarios publish and consume: OrderPlaced events as the
 * order service emits them (same stream, subjects, payload and CloudEvents
 * headers), and the bench's own durable consumers, configured as the
 * product service's `products-order-placed` is.
 */
import { randomBytes } from "node:crypto";
import { headers as natsHeaders, type MsgHdrs } from "nats";
import type { OrderPlaced } from "../../gen/ts/shop/orders/v1/order_events_pb.js";
import { OrderPlacedEvent, ShopOrdersStream } from "../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { OrderServiceConsumers } from "../../gen/ts/shop/orders/v1/order_service_jetstream.js";
import { ProductServiceConsumers } from "../../gen/ts/shop/products/v1/product_service_jetstream.js";
import { uuidv7 } from "../../platform/ids/index.js";

export { OrderPlacedEvent, ShopOrdersStream };

/** The stream both sides use; purged between runs so each starts empty. */
export const streamSpec = ShopOrdersStream;

/** An OrderPlaced as CreateOrder emits it for a two-line order. */
const template: OrderPlaced = (() => {
  const line = (n: number) => ({
    productId: uuidv7(),
    productName: `Stoneware teapot, 1.2 l #${n}`,
    quantity: 1,
    unitPrice: { currencyCode: "EUR", amountMinor: 3490 },
    lineTotal: { currencyCode: "EUR", amountMinor: 3490 },
  });
  return { orderId: uuidv7(), customerId: "bench-customer", lines: [line(1), line(2)], total: { currencyCode: "EUR", amountMinor: 6980 }, linesVersion: 1 };
})();

/**
 * Unique ids in UUID form (the length of a UUIDv7) at the cost of a counter,
 * so the bench's own bookkeeping does not weigh on either side.
 */
export function idGenerator(): () => string {
  const prefix = randomBytes(10).toString("hex"); // 20 hex digits
  let n = 0;
  return () => {
    const tail = (n++).toString(16).padStart(12, "0");
    return `${prefix.slice(0, 8)}-${prefix.slice(8, 12)}-${prefix.slice(12, 16)}-${prefix.slice(16, 20)}-${tail}`;
  };
}

/** An OrderPlaced for order `orderId`; all share their lines, as the payload size is what matters. */
export function sampleOrderPlaced(orderId: string): OrderPlaced {
  return { ...template, orderId };
}

/**
 * Events for the raw publisher: the same subject, payload size and headers
 * (names and value sizes) as Concord's CloudEvents binding produces, with the
 * event id as Nats-Msg-Id, made as cheaply as possible: the payload is encoded
 * once, the trace is one per run and the time string one per millisecond.
 * `consumable`: each payload is encoded with the order id its subject names,
 * as consumers check (events prefilled for a consumer to take).
 */
export function rawEventFactory(source: string, options: { readonly consumable?: boolean } = {}): () => { id: string; subject: string; payload: Uint8Array; headers: MsgHdrs } {
  const nextId = idGenerator();
  const once = OrderPlacedEvent.codec.encode(sampleOrderPlaced(nextId())).finish();
  const traceparent = `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
  let ms = 0;
  let time = "";
  return () => {
    const id = nextId();
    const now = Date.now();
    if (now !== ms) {
      ms = now;
      time = new Date(now).toISOString();
    }
    const h = natsHeaders();
    h.set("ce-specversion", "1.0");
    h.set("ce-id", id);
    h.set("ce-type", OrderPlacedEvent.typeName);
    h.set("ce-source", source);
    h.set("ce-time", time);
    h.set("ce-datacontenttype", "application/protobuf");
    h.set("content-type", "application/protobuf");
    h.set("ce-traceparent", traceparent);
    h.set("traceparent", traceparent);
    const payload = options.consumable ? OrderPlacedEvent.codec.encode(sampleOrderPlaced(id)).finish() : once;
    return { id, subject: `shop.orders.v1.order.${id}.placed`, payload, headers: h };
  };
}

/** The product service's consumer of OrderPlaced, under another durable name. */
export function benchConsumerSpec(durable: string) {
  return { ...ProductServiceConsumers.orderPlaced.spec, durable };
}

/** The durable consumers of the saga's baseline (bench/workers/bare-saga-service.ts): the services' specs under names of their own. */
export const bareSagaConsumers = {
  orderPlaced: { ...ProductServiceConsumers.orderPlaced.spec, durable: "bare-products-order-placed" },
  stockReserved: { ...OrderServiceConsumers.stockReserved.spec, durable: "bare-orders-stock-reserved" },
};
