import { describe, expect, it } from "vitest";
import type { Product } from "../../../gen/ts/shop/products/v1/product_service_pb.js";
import { type EventContext, UnprocessableEventError } from "../../../platform/events/index.js";
import type { CatalogEntry, CatalogStore } from "../store/catalog-store.js";
import { createCatalogFeed } from "./catalog-feed.js";

const teapot = "01a251f6-f506-7000-a799-02d048dcb5ae";
const other = "d8a1d3a2-21c8-424e-a52c-c8b0fcbc4045";

function product(id: string, version: number): Product {
  return { id, name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1999 }, stock: 5, version, stockVersion: 1 } as Product;
}

function recordingCatalog(): { store: CatalogStore; stored: CatalogEntry[] } {
  const stored: CatalogEntry[] = [];
  return { stored, store: { upsert: async (_tx, entry) => void stored.push(entry), getMany: async () => new Map() } };
}

const context = { tx: {} } as EventContext;

describe("createCatalogFeed", () => {
  it("stores the product of a ProductCreated or ProductUpdated under the id its product_id names", async () => {
    const { store, stored } = recordingCatalog();
    const feed = createCatalogFeed(store);
    await feed.productCreated({ productId: teapot, product: product(teapot, 1) } as never, context);
    await feed.productUpdated({ productId: teapot, product: product(teapot, 2), changedFields: ["price"] } as never, context);
    expect(stored.map((e) => [e.id, e.version])).toEqual([
      [teapot, 1],
      [teapot, 2],
    ]);
  });

  it("dead-letters an event whose product is another than its product_id names, storing nothing", async () => {
    // On the subject of a product that does not exist, it rewrote the teapot's name, price and version (the highest, so for good).
    const { store, stored } = recordingCatalog();
    const feed = createCatalogFeed(store);
    const forged = { productId: other, product: product(teapot, Number.MAX_SAFE_INTEGER), changedFields: ["price"] };
    await expect(feed.productUpdated(forged as never, context)).rejects.toThrow(UnprocessableEventError);
    await expect(feed.productCreated(forged as never, context)).rejects.toThrow(`the event about product ${other} carries product "${teapot}", not that one`);
    expect(stored).toEqual([]);
  });
});
