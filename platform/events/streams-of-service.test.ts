import { describe, expect, it } from "vitest";
import { streamsOfService } from "./streams-of-service.js";
import type { StreamSpec } from "./types.js";

const stream = (name: string) => ({ name, subjects: [`${name.toLowerCase()}.>`] }) as unknown as StreamSpec;
const all = [stream("SHOP_ORDERS"), stream("SHOP_PRODUCTS"), stream("SHOP_SHIPPING")];
// Three services, as after a third is added: products neither publishes to nor consumes SHOP_SHIPPING.
const authorization = {
  services: [
    { name: "orders", streams: ["SHOP_ORDERS"], consumers: [{ stream: "SHOP_PRODUCTS" }] },
    { name: "products", streams: ["SHOP_PRODUCTS"], consumers: [{ stream: "SHOP_ORDERS" }, { stream: "SHOP_ORDERS" }] },
    { name: "shipping", streams: ["SHOP_SHIPPING"], consumers: [{ stream: "SHOP_ORDERS" }] },
  ],
  grpcAlone: [{ name: "billing" }],
};

describe("streamsOfService", () => {
  it("gives a service only the streams it publishes to or consumes from, in the specs' order", () => {
    expect(streamsOfService("products", authorization, all).map((s) => s.name)).toEqual(["SHOP_ORDERS", "SHOP_PRODUCTS"]);
    expect(streamsOfService("shipping", authorization, all).map((s) => s.name)).toEqual(["SHOP_ORDERS", "SHOP_SHIPPING"]);
  });

  it("gives a service of gRPC alone no stream", () => {
    expect(streamsOfService("billing", authorization, all)).toEqual([]);
  });

  it("refuses a name the contracts have no service of, naming those they have, and a stream the specs lack", () => {
    expect(() => streamsOfService("biling", authorization, all)).toThrow(
        'the contracts have no service "biling": no proto package of that name (shop.biling.v1) declares a gRPC service, a stream or a (concord.v1.subscribe): ' +
        "the contracts' services are billing, orders, products and shipping; name the service as its package does (the last name before its version), or run `npm run gen` if the contract is new",
    );
    expect(() => streamsOfService("shipping", authorization, all.slice(0, 2))).toThrow(/SHOP_SHIPPING, which the stream specs lack/);
  });
});
