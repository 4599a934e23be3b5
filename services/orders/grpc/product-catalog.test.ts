import { afterEach, describe, expect, it } from "vitest";
import { usePostgresServer } from "../../../test/support/postgres.js";
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

  describe("on PostgreSQL", () => {
    const postgres = usePostgresServer();

    it("does not wait for a catalogue entry another transaction is writing: the order is priced, the entry left to that one", async () => {
      const url = await postgres().createDatabase("catalog_held");
      db = await openDatabase({ path: url, migrations: orderMigrations });
      const other = await openDatabase({ path: url, migrations: orderMigrations });
      const store = createCatalogStore();
      const products = {
        batchGetProducts: async (req: { ids: string[] }) => ({
          products: req.ids.map((id) => ({ id, name: `product ${id.slice(-2)}`, description: "", price: { currencyCode: "EUR", amountMinor: 100 }, version: 2 })),
        }),
      } as unknown as PromiseClient<typeof ProductServiceService>;
      const context = { signal: new AbortController().signal } as CallContext;
      // Another process's transaction writing ids[0]'s entry, and going no further (a process stopped mid-way).
      let letGo!: () => void;
      const held = new Promise<void>((resolve) => (letGo = resolve));
      let holding!: () => void;
      const writing = new Promise<void>((resolve) => (holding = resolve));
      const otherTransaction = other.transaction(async (tx) => {
        await store.upsert(tx, { id: ids[0], name: "product 59", currency: "EUR", priceMinor: 100, version: 1 });
        holding();
        await held;
      });
      try {
        await writing;
        const quoted = await Promise.race([
          quoteProducts({ db, catalog: store, products }, ids, context),
          new Promise<"waited">((resolve) => setTimeout(() => resolve("waited"), 10_000).unref()),
        ]);
        expect(quoted).not.toBe("waited");
        expect([...(quoted as Map<string, unknown>).keys()].sort()).toEqual([...ids].sort());
      } finally {
        letGo();
        await otherTransaction;
        await other.close();
      }
      // The next order learns them again; nothing it wrote is half there.
      expect((await store.getMany(db, ids)).size).toBe(1);
    });
  });
});
