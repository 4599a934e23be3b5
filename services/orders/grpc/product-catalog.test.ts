import { afterEach, describe, expect, it } from "vitest";
import type { CallContext, PromiseClient } from "../../../platform/grpc/index.js";
import { type Database, openDatabase } from "../../../platform/sql/index.js";
import type { ProductServiceService } from "../../../gen/ts/shop/products/v1/product_service_pb.js";
import { type CatalogEntry, createCatalogStore } from "../store/catalog-store.js";
import { orderMigrations } from "../store/migrations.js";
import { quoteProducts } from "./product-catalog.js";

const ids = ["01890a5d-ac96-774b-bcce-b302099a8059", "01890a5d-ac96-774b-bcce-b302099a8057", "01890a5d-ac96-774b-bcce-b302099a8058"];

describe("quoting an order's products", () => {
  let db: Database | undefined;
  afterEach(() => db?.close());

  it("adds the products it learns to the catalogue in id order, whatever the order's lines", async () => {
    db = await openDatabase({ path: ":memory:", migrations: orderMigrations });
    const store = createCatalogStore();
    const written: string[] = [];
    const catalog = { ...store, upsert: (tx: Parameters<typeof store.upsert>[0], entry: CatalogEntry) => (written.push(entry.id), store.upsert(tx, entry)) };
    // The product service answers in the order it was asked, as it does.
    const products = {
      batchGetProducts: async (req: { ids: string[] }) => ({
        products: req.ids.map((id) => ({ id, name: `product ${id.slice(-2)}`, description: "", price: { currencyCode: "EUR", amountMinor: 100 }, version: 1 })),
      }),
    } as unknown as PromiseClient<typeof ProductServiceService>;
    const context = { signal: new AbortController().signal } as CallContext;

    const quotes = await quoteProducts({ db, catalog, products }, ids, context);
    expect([...quotes.keys()].sort()).toEqual([...ids].sort());
    // Two orders learning the same products lock their catalogue rows in the same order, so neither waits on the other.
    expect(written).toEqual([...ids].sort());
    expect((await store.getMany(db, ids)).size).toBe(3);
  });
});
