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
};

describe("streamsOfService", () => {
  it("gives a service only the streams it publishes to or consumes from, in the specs' order", () => {
    expect(streamsOfService("products", authorization, all).map((s) => s.name)).toEqual(["SHOP_ORDERS", "SHOP_PRODUCTS"]);
    expect(streamsOfService("shipping", authorization, all).map((s) => s.name)).toEqual(["SHOP_ORDERS", "SHOP_SHIPPING"]);
  });

  it("refuses a service the authorization lacks, and a stream the specs lack", () => {
    expect(() => streamsOfService("billing", authorization, all)).toThrow(/no service "billing"/);
    expect(() => streamsOfService("shipping", authorization, all.slice(0, 2))).toThrow(/SHOP_SHIPPING, which the stream specs lack/);
  });
});
