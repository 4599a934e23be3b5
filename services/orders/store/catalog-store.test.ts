import { afterEach, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../../../platform/sql/index.js";
import { createCatalogStore } from "./catalog-store.js";
import { orderMigrations } from "./migrations.js";

const teapot = "01890a5d-ac96-774b-bcce-b302099a8057";
const cup = "01890a5d-ac96-774b-bcce-b302099a8058";
const entry = (version: number, priceMinor: number, name = "Teapot") => ({ id: teapot, name, currency: "EUR", priceMinor, version });

describe("the order service's catalogue store", () => {
  let db: Database | undefined;
  const catalog = createCatalogStore();
  const open = async () => (db = await openDatabase({ path: ":memory:", migrations: orderMigrations }));
  afterEach(() => db?.close());

  it("keeps the newest version: a replayed or late older one changes nothing", async () => {
    const db = await open();
    const upsert = (e: ReturnType<typeof entry>) => db.transaction((tx) => catalog.upsert(tx, e));
    await upsert(entry(1, 1000));
    await upsert(entry(3, 1500, "Teapot XL"));
    await upsert(entry(2, 1200));
    await upsert(entry(1, 1000));
    expect((await catalog.getMany(db, [teapot])).get(teapot)).toEqual({ id: teapot, name: "Teapot XL", currency: "EUR", priceMinor: 1500 });
    // The same version again is a replay too, whatever it says.
    await upsert(entry(3, 1));
    expect((await catalog.getMany(db, [teapot])).get(teapot)?.priceMinor).toBe(1500);
    await upsert(entry(4, 1700));
    expect((await catalog.getMany(db, [teapot])).get(teapot)?.priceMinor).toBe(1700);
  });

  it("returns only the products it knows", async () => {
    const db = await open();
    await db.transaction((tx) => catalog.upsert(tx, entry(1, 1000)));
    expect([...(await catalog.getMany(db, [cup, teapot])).keys()]).toEqual([teapot]);
    expect((await catalog.getMany(db, [cup])).size).toBe(0);
    expect((await catalog.getMany(db, [])).size).toBe(0);
  });
});
