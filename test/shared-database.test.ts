/**
 * Both services given one database (DATABASE_URL set for either, say): they
 * would share its outbox, and whichever relay holds its lock would publish
 * the other service's events under its own NATS user, which may not publish
 * them, so they were parked and every order stayed PENDING. The second
 * service to start refuses the database instead.
 */
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { useNatsServer } from "./support/nats-server.js";
import { usePostgresServer } from "./support/postgres.js";
import { type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";

describe("two services on one database", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const postgres = usePostgresServer();
  const nats = useNatsServer({ storeDir: join(dir.path, "nats"), credentialsDir: join(dir.path, "creds") });
  const started: Array<{ stop(): Promise<void> }> = [];
  afterAll(async () => {
    for (const s of started.reverse()) await s.stop();
  });

  const refused = async (database: string) => {
    const products: RunningProducts = await startTestProducts(dir.path, nats().url, { database, natsSeedFile: nats().seedFile("products") });
    started.push(products);
    const orders = startTestOrders(dir.path, products.service.address, nats().url, { database, natsSeedFile: nats().seedFile("orders") });
    void orders.then((o) => started.push(o), () => undefined);
    await expect(orders).rejects.toThrow(/the database belongs to the products service, not to orders/);
    // The one that owns it starts again.
    await products.stop();
    started.pop();
    started.push(await startTestProducts(dir.path, nats().url, { database, natsSeedFile: nats().seedFile("products") }));
  };

  it("PostgreSQL: the second service refuses the first one's database", async () => {
    await refused(await postgres().createDatabase("shop"));
  }, 60_000);

  it("SQLite: so does a second service given the first one's file, once the first has stopped; while it runs, the file is held", async () => {
    const database = join(dir.path, "shop.db");
    const products = await startTestProducts(dir.path, nats().url, { database, natsSeedFile: nats().seedFile("products") });
    started.push(products);
    await expect(startTestOrders(dir.path, products.service.address, nats().url, { database, natsSeedFile: nats().seedFile("orders") })).rejects.toThrow(
      /the SQLite database .*shop\.db is in use by another process/,
    );
    await products.stop();
    started.pop();
    await expect(startTestOrders(dir.path, "127.0.0.1:1", nats().url, { database, natsSeedFile: nats().seedFile("orders") })).rejects.toThrow(
      /the database belongs to the products service, not to orders/,
    );
    started.push(await startTestProducts(dir.path, nats().url, { database, natsSeedFile: nats().seedFile("products") }));
  }, 60_000);
});
