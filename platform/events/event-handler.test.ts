import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { OrderPlacedEvent, OrderUpdatedEvent } from "../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { createMessageChecker } from "../contracts/index.js";
import { encodeEvent, eventHeaderBlock, isRfc3339Time } from "./cloud-events.js";
import { UnprocessableEventError, type Delivery } from "./delivery.js";
import { bindConsumer, checkedEvent, type ConsumerBinding } from "./event-handler.js";
import { contractEditor } from "../../test/support/edited-contracts.js";
import { createTempDir } from "../../test/support/temp-dir.js";
import { buildImage } from "../../tools/contracts/image.js";

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
/**
 * `binding` with a decoder that counts its calls: a refusal "without decoding" leaves the count at 0 however slow the
 * machine, where a bound on the time taken alone failed on a loaded one.
 */
function countingDecodes<T>(binding: ConsumerBinding<T>): { binding: ConsumerBinding<T>; decodes: () => number } {
  let decodes = 0;
  const codec = { ...binding.descriptor.codec, decode: (...args: Parameters<typeof binding.descriptor.codec.decode>) => (decodes++, binding.descriptor.codec.decode(...args)) };
  return { binding: { ...binding, descriptor: { ...binding.descriptor, codec } }, decodes: () => decodes };
}
/**
 * The CPU time, in ms, this process spends in `fn`: what other processes on a loaded machine take does not count,
 * as it does in the wall-clock time.
 */
function cpuMs(fn: () => void): number {
  const before = process.cpuUsage();
  fn();
  const spent = process.cpuUsage(before);
  return (spent.user + spent.system) / 1_000;
}
/** The valid event with `n` more (empty) lines after its own: two bytes each. */
const withEmptyLines = (n: number) => Buffer.concat([valid, Buffer.alloc(2 * n).fill(Buffer.from([0x1a, 0x00]))]);

describe("checkedEvent, given a payload larger than its contract allows", () => {
  it("refuses it without decoding it, naming its size and the limit (450,000 empty lines took a service past its heap limit)", () => {
    // Refused in about 2 ms of CPU; decoding it alone takes 150 ms and more, checking it twice that.
    const counted = countingDecodes(binding);
    const event = delivery(withEmptyLines(450_000));
    const ms = cpuMs(() =>
      expect(() => checkedEvent(event, counted.binding, checker)).toThrow(
        new UnprocessableEventError(`the ${OrderPlacedEvent.typeName} payload has ${valid.length + 900_000} bytes, more than the 93094 its contract allows (twice its largest valid one, plus 1 KiB for fields a newer producer adds); it is not decoded`),
      ),
    );
    expect(counted.decodes()).toBe(0);
    expect(ms).toBeLessThan(100);
  });

  it("names a list a little over its max_items by the contract's rules, and takes a valid one", () => {
    expect(() => checkedEvent(delivery(withEmptyLines(1_000)), binding, checker)).toThrow(/lines: must contain no more than 50 item\(s\)/);
    expect(checkedEvent(delivery(valid), binding, checker)).toMatchObject({ orderId, lines: [line] });
  });
});

describe("checkedEvent, given a list of messages far over its max_items", () => {
  const updated = bindConsumer({ spec: { durable: "size-test", eventType: OrderUpdatedEvent.typeName } as never, descriptor: OrderUpdatedEvent, handle() {} });
  /** An OrderUpdated whose order holds `n` empty lines (field 4 of Order), two bytes each. */
  const updateWithEmptyLines = (n: number): Delivery => {
    const lines = Buffer.alloc(2 * n).fill(Buffer.from([0x22, 0x00]));
    const order = Buffer.concat([Buffer.from([0x12]), varint(lines.length), lines]);
    const data = Buffer.concat([Buffer.from([0x0a, orderId.length]), Buffer.from(orderId), order]);
    return { ...delivery(data), headers: { ...delivery(data).headers, "ce-type": OrderUpdatedEvent.typeName } };
  };
  const farOver = new UnprocessableEventError(`the ${OrderUpdatedEvent.typeName} payload cannot be decoded: field 4 holds more than 10000 items, far more than its contract allows, and is not decoded`);

  it("refuses it without decoding it where the type's contract leaves its size open (an OrderUpdated's order of 440,000 empty lines, before its changed fields' in rule was counted)", () => {
    const dir = createTempDir();
    try {
      // changed_fields without its in rule: OrderUpdated's size is open, and no size limit applies.
      const image = join(dir.path, "open.binpb");
      buildImage(contractEditor(dir.path).edited({ "shop/orders/v1/order_events.proto": (t) => t.replace('in: ["shipping_address", "lines"]', "min_len: 1") }), image);
      const open = createMessageChecker(new Uint8Array(readFileSync(image)));
      const event = updateWithEmptyLines(440_000);
      // Refused in a few ms of CPU; decoding it takes 40 ms and more, checking it 170 ms.
      const counted = countingDecodes(updated);
      expect(cpuMs(() => expect(() => checkedEvent(event, counted.binding, open)).toThrow(farOver))).toBeLessThan(200);
      expect(counted.decodes()).toBe(0);
      // Under the contract as it is, the same event is over its type's size limit.
      expect(() => checkedEvent(event, updated, checker)).toThrow(/^the shop\.orders\.v1\.OrderUpdated payload has 880042 bytes, more than the 108836 its contract allows/);
    } finally {
      dir.remove();
    }
  });

  it("refuses it without decoding it within its type's size limit (an OrderUpdated's order of 50,000 empty lines, 100 KB)", () => {
    const event = updateWithEmptyLines(50_000);
    const counted = countingDecodes(updated);
    expect(cpuMs(() => expect(() => checkedEvent(event, counted.binding, checker)).toThrow(farOver))).toBeLessThan(100);
    expect(counted.decodes()).toBe(0);
  });
});

function varint(n: number): Buffer {
  const bytes: number[] = [];
  do {
    bytes.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n > 0);
  return Buffer.from(bytes);
}

describe("checkedEvent, given a ce-time", () => {
  const at = (time: string | undefined) => {
    const d = delivery(valid);
    return { ...d, headers: time === undefined ? d.headers : { ...d.headers, "ce-time": time } };
  };

  it("dead-letters an event whose ce-time is not RFC 3339, as CloudEvents requires of one that is present, naming it", () => {
    for (const time of ["not-a-time", "", "2026-12-07", "2026-12-07 19:42:40Z", "2026-12-07T19:42:40", "2026-12-07T19:42:40.Z", "2026-02-30T00:00:00Z", "2025-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-12-07T24:00:00Z", "2026-12-07T19:42:40+0100", "2026-12-07T19:42:40Z ", "1733600560", "Mon, 07 Dec 2026 19:42:40 GMT"]) {
      expect(() => checkedEvent(at(time), binding, checker), time).toThrow(
        new UnprocessableEventError(`the ${OrderPlacedEvent.typeName} message's ce-time ${JSON.stringify(time)} is not an RFC 3339 time (such as 2026-12-07T19:42:40.123Z)`),
      );
    }
    expect(() => checkedEvent(at("9".repeat(5_000)), binding, checker)).toThrow(`ce-time "${"9".repeat(64)}..." is not an RFC 3339 time`);
  });

  it("takes every RFC 3339 form other producers write, and none at all", () => {
    for (const time of [undefined, new Date().toISOString(), "2026-12-07T19:42:40Z", "2026-12-07T19:42:40.123456789Z", "2026-12-07t19:42:40.5z", "2026-12-07T20:42:40+01:00", "2026-12-07T14:12:40.123-05:30", "2024-02-29T00:00:00Z", "2016-12-31T23:59:60Z"]) {
      expect(checkedEvent(at(time), binding, checker), time).toMatchObject({ orderId });
    }
  });

  it("is what every event a service publishes carries", () => {
    const event = encodeEvent(OrderPlacedEvent, OrderPlacedEvent.codec.fromPartial({ orderId, customerId: "c-1", lines: [line], total: { currencyCode: "EUR", amountMinor: 1999 }, linesVersion: 1 }), { source: "orders" });
    expect(isRfc3339Time(event.headers["ce-time"])).toBe(true);
    expect(eventHeaderBlock(event).toString()).toContain(`\r\nce-time: ${event.headers["ce-time"]}\r\n`);
  });
});
