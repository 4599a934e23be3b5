/**
 * The bindings generated from proto/ (gen/ts), checked against the runtime's
 * own types (gen/ satisfies them without importing them): at compile time by
 * tsc (assignments below and a @ts-expect-error for a missing handler) and at
 * run time by vitest.
 */
import { describe, expect, it } from "vitest";
import { allEvents, allStreams } from "../../gen/ts/concord_streams.js";
import { OrderPlacedEvent, ShopOrdersStream } from "../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import type { OrderPlaced } from "../../gen/ts/shop/orders/v1/order_events_pb.js";
import { OrderServiceConsumers } from "../../gen/ts/shop/orders/v1/order_service_jetstream.js";
import { ProductServiceConsumers, type ProductServiceEventHandlers } from "../../gen/ts/shop/products/v1/product_service_jetstream.js";
import type { ConsumerSpec, EventDescriptor, StreamSpec } from "../../platform/events/index.js";
import { subjectIsWithin } from "./subjects.js";

type Consumers = Record<string, { readonly spec: ConsumerSpec; readonly event: EventDescriptor<any> }>;

const orderPlaced: EventDescriptor<OrderPlaced> = OrderPlacedEvent;
const streams: readonly StreamSpec[] = allStreams;
const events: readonly EventDescriptor<any>[] = allEvents;
const consumers: Consumers[] = [OrderServiceConsumers, ProductServiceConsumers];

describe("generated JetStream bindings", () => {
  it("encode, decode and fill the subject tokens of an event", () => {
    const event = orderPlaced.codec.fromPartial!({ orderId: "o-1", customerId: "c-1", linesVersion: 1 });
    const decoded = orderPlaced.codec.decode(orderPlaced.codec.encode(event).finish());
    expect(decoded.orderId).toBe("o-1");
    expect(orderPlaced.subjectTokens(decoded)).toEqual({ order_id: "o-1" });
  });

  it("index every stream, and every event falls under its stream", () => {
    expect(streams.map((s) => s.name)).toEqual(["SHOP_ORDERS", "SHOP_PRODUCTS"]);
    expect(ShopOrdersStream).toMatchObject({ storage: "file", replicas: 3, maxAgeMs: 30 * 24 * 3600 * 1000, duplicateWindowMs: 120_000 });
    for (const event of events) {
      const stream = streams.find((s) => s.name === event.stream);
      expect(stream?.subjects.some((s) => subjectIsWithin(event.filterSubject, s)), event.typeName).toBe(true);
    }
    expect(new Set(events.map((e) => e.typeName)).size).toBe(events.length);
  });

  it("pair every consumer spec with the descriptor of the event it receives", () => {
    for (const service of consumers) {
      for (const { spec, event } of Object.values(service)) {
        expect(spec).toMatchObject({ stream: event.stream, filterSubject: event.filterSubject, eventType: event.typeName });
      }
    }
  });

  it("key the consumers like the handler interface, which needs every handler", () => {
    const handlers: ProductServiceEventHandlers<string, Promise<void>> = {
      orderPlaced: async () => {},
      orderUpdated: async () => {},
      orderCancelled: async () => {},
      orderUnknown: async () => {},
    };
    expect(Object.keys(ProductServiceConsumers).sort()).toEqual(Object.keys(handlers).sort());
    // @ts-expect-error orderCancelled is missing
    const incomplete: ProductServiceEventHandlers<string> = { orderPlaced() {}, orderUpdated() {}, orderUnknown() {} };
    expect(incomplete).toBeDefined();
  });
});
