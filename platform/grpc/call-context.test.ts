import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { CreateOrderRequest, OrderServiceService } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { createMessageChecker } from "../contracts/index.js";
import { requestDigester } from "./call-context.js";

const checker = createMessageChecker(descriptorSet);
const digestOf = requestDigester(checker.registry.getMessage("shop.orders.v1.CreateOrderRequest")!, OrderServiceService.createOrder.requestSerialize);
const address = { recipient: "A", line1: "B", line2: "", city: "C", postalCode: "D", countryCode: "GB" };
const request = { customerId: "c-1", lines: [{ productId: "01890a5d-ac96-774b-bcce-000000000001", quantity: 2 }], shippingAddress: address, requestId: "01890a5d-ac96-774b-bcce-0000000000ab" };
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest();

describe("requestDigester", () => {
  it("digests the request the generated code encodes as the SHA-256 of those bytes, so digests stored from the bytes as sent still match", () => {
    expect(digestOf(CreateOrderRequest.decode(CreateOrderRequest.encode(request).finish()))).toEqual(sha256(CreateOrderRequest.encode(request).finish()));
  });

  it("digests a request id in any case alike, without changing the request; any other difference changes the digest", () => {
    const upper = { ...request, requestId: request.requestId.toUpperCase() };
    expect(digestOf(upper)).toEqual(digestOf(request));
    expect(upper.requestId).toBe(request.requestId.toUpperCase());
    expect(digestOf({ ...request, customerId: "C-1" })).not.toEqual(digestOf(request));
    expect(digestOf({ ...request, shippingAddress: { ...address, line2: "x" } })).not.toEqual(digestOf(request));
  });
});
