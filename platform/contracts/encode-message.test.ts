import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { Money } from "../../gen/ts/shop/common/v1/money_pb.js";
import { OrderPlaced } from "../../gen/ts/shop/orders/v1/order_events_pb.js";
import { encodeMessage, type MessageEncoder } from "./encode-message.js";

const line = (n: number) => ({
  productId: `p-${n}`,
  productName: `Stoneware teapot #${n}`,
  quantity: n,
  unitPrice: { currencyCode: "EUR", amountMinor: 3490 },
  lineTotal: { currencyCode: "EUR", amountMinor: 3490 * n },
});
const placed = (lines: number, total = 6980) =>
  OrderPlaced.fromPartial({ orderId: "o-1", customerId: "c-1", lines: Array.from({ length: lines }, (_, i) => line(i + 1)), total: { currencyCode: "EUR", amountMinor: total }, linesVersion: 1 });

describe("encodeMessage", () => {
  it("gives the bytes ts-proto's own encode gives, call after call, and each result stays as it was", () => {
    const results = [placed(2), placed(1), placed(3)].map((m) => ({ m, bytes: encodeMessage(OrderPlaced, m) }));
    for (const { m, bytes } of results) expect(bytes).toEqual(OrderPlaced.encode(m).finish());
    expect(OrderPlaced.decode(results[0].bytes)).toEqual(placed(2));
  });

  it("encodes correctly after an encoder threw halfway, and after a message larger than the buffer it keeps", () => {
    // The lines are written before the total's amount is refused: the writer then holds half a message.
    expect(() => encodeMessage(OrderPlaced, placed(2, 1.5))).toThrow(/cannot be converted/);
    expect(encodeMessage(Money, { currencyCode: "EUR", amountMinor: 5 })).toEqual(Money.encode({ currencyCode: "EUR", amountMinor: 5 }).finish());
    const large = placed(2000);
    expect(encodeMessage(OrderPlaced, large).byteLength).toBeGreaterThan(64 * 1024);
    expect(encodeMessage(OrderPlaced, placed(1))).toEqual(OrderPlaced.encode(placed(1)).finish());
  });

  it("gives an encoder that encodes another message inside its own a writer of its own, and takes codecs that ignore the writer", () => {
    const wrapper: MessageEncoder<{ inner: Money }> = {
      encode(message, writer = new BinaryWriter()) {
        const inner = encodeMessage(Money, message.inner);
        return writer.uint32(10).bytes(inner).uint32(16).int32(7);
      },
    };
    const expected = new BinaryWriter().uint32(10).bytes(Money.encode({ currencyCode: "USD", amountMinor: 12 }).finish()).uint32(16).int32(7).finish();
    expect(encodeMessage(wrapper, { inner: { currencyCode: "USD", amountMinor: 12 } })).toEqual(expected);
    const own: MessageEncoder<Money> = { encode: (m) => Money.encode(m) };
    expect(encodeMessage(own, { currencyCode: "EUR", amountMinor: 1 })).toEqual(Money.encode({ currencyCode: "EUR", amountMinor: 1 }).finish());
    expect(encodeMessage(Money, { currencyCode: "EUR", amountMinor: 2 })).toEqual(Money.encode({ currencyCode: "EUR", amountMinor: 2 }).finish());
  });
});
