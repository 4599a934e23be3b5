import { afterEach, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../../../platform/sql/index.js";
import { createCatalogStore } from "./catalog-store.js";
import { orderMigrations } from "./migrations.js";

const teapot = "01890a5d-ac96-774b-bcce-b302099a8057";
const cup = "01890a5d-ac96-774b-bcce-b302099a8058";
const entry = (version: number, priceMinor: number, name = "Teapot") => ({ id: teapot, name, currency: "EUR", priceMinor, version });

describe("the order service's catalogue store", () => {
  let db: Database | undefined;
  const open = () => createCatalogStore((db = openDatabase({ path: ":memory:", migrations: orderMigrations })));
  afterEach(() => db?.close());

  it("keeps the newest version: a replayed or late older one changes nothing", () => {
    const catalog = open();
    catalog.upsert(entry(1, 1000));
    catalog.upsert(entry(3, 1500, "Teapot XL"));
    catalog.upsert(entry(2, 1200));
    catalog.upsert(entry(1, 1000));
    expect(catalog.getMany([teapot]).get(teapot)).toEqual({ id: teapot, name: "Teapot XL", currency: "EUR", priceMinor: 1500 });
    // The same version again is a replay too, whatever it says.
    catalog.upsert(entry(3, 1));
    expect(catalog.getMany([teapot]).get(teapot)?.priceMinor).toBe(1500);
    catalog.upsert(entry(4, 1700));
    expect(catalog.getMany([teapot]).get(teapot)?.priceMinor).toBe(1700);
  });

  it("returns only the products it knows", () => {
    const catalog = open();
    catalog.upsert(entry(1, 1000));
    expect([...catalog.getMany([cup, teapot]).keys()]).toEqual([teapot]);
    expect(catalog.getMany([cup]).size).toBe(0);
    expect(catalog.getMany([]).size).toBe(0);
  });
});
