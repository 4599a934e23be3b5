import { describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { OrderPlacedEvent } from "../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { createMessageChecker } from "../contracts/index.js";
import { UnprocessableEventError, type Delivery } from "./delivery.js";
import { bindConsumer, checkedEvent } from "./event-handler.js";

const checker = createMessageChecker(descriptorSet);
const orderId = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
const binding = bindConsumer({
  spec: { ...OrderPlacedEvent, durable: "size-test", eventType: OrderPlacedEvent.typeName } as never,
  descriptor: OrderPlacedEvent,
  handle() {},
});
const line = { productId: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", productName: "Teapot", quantity: 1, unitPrice: { currencyCode: "EUR", amountMinor: 1999 }, lineTotal: { currencyCode: "EUR", amountMinor: 1999 } };
const valid = OrderPlacedEvent.codec.encode(OrderPlacedEvent.codec.fromPartial({ orderId, customerId: "c-1", lines: [line], total: { currencyCode: "EUR", amountMinor: 1999 }, linesVersion: 1 })).finish();
const delivery = (data: Uint8Array): Delivery => ({
  consumer: "size-test",
  stream: "SHOP_ORDERS",
  subject: `shop.orders.v1.order.${orderId}.placed`,
  streamSequence: 1,
  deliveryCount: 1,
  headers: { "ce-specversion": "1.0", "ce-id": "e-1", "ce-type": OrderPlacedEvent.typeName, "ce-source": "orders" },
  data,
  storedAt: new Date(),
});
/** The valid event with `n` more (empty) lines after its own: two bytes each. */
const withEmptyLines = (n: number) => Buffer.concat([valid, Buffer.alloc(2 * n).fill(Buffer.from([0x1a, 0x00]))]);

describe("checkedEvent, given a payload larger than its contract allows", () => {
  it("refuses it without decoding it, naming its size and the limit (450,000 empty lines took a service past its heap limit)", () => {
    const started = performance.now();
    expect(() => checkedEvent(delivery(withEmptyLines(450_000)), binding, checker)).toThrow(
      new UnprocessableEventError(`the ${OrderPlacedEvent.typeName} payload has ${valid.length + 900_000} bytes, more than the 93094 its contract allows (twice its largest valid one, plus 1 KiB for fields a newer producer adds); it is not decoded`),
    );
    expect(performance.now() - started).toBeLessThan(100);
  });

  it("names a list over its max_items when the payload is a few times the limit at most, and takes a valid one", () => {
    expect(() => checkedEvent(delivery(withEmptyLines(60_000)), binding, checker)).toThrow(/lines: must contain no more than 50 item\(s\)/);
    expect(checkedEvent(delivery(valid), binding, checker)).toMatchObject({ orderId, lines: [line] });
  });
});
