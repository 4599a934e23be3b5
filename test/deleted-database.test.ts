import { readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { OrderServiceService } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { Code, StatusError } from "../platform/errors/index.js";
import { checkHealth, createClient, waitForServing } from "../platform/grpc/index.js";
import { freePort, useNatsServer } from "./support/nats-server.js";
import { startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { address as shippingAddress } from "./support/shop.js";
import { tempDirForSuite } from "./support/temp-dir.js";

const dir = tempDirForSuite("concord-deleted-database-");
const teapot = { name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1999 }, initialStock: 5 };

/**
 * A service's SQLite file deleted while the service runs: the process
 * holds the file open and used to go on writing to it, serving, so that
 * what it wrote (and everything before) was gone at its next start, which
 * made an empty database in its place.
 */
describe("a service whose SQLite database is deleted while it runs", () => {
  const nats = useNatsServer({ storeDir: join(dir, "nats") });
  const database = join(dir, "products.db");
  let service: ServiceProcess | undefined;
  afterAll(async () => {
    await service?.stop();
  });

  it("refuses writes and reports NOT_SERVING, saves its data beside it, and the log's steps bring every write back", async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const env = { PRODUCTS_LISTEN: address, PRODUCTS_DATABASE_URL: database, NATS_URL: nats().url, LOG_LEVEL: "warn" };
    service = startServiceProcess("products", env);
    await waitForServing(address, 30_000);
    const client = createClient(ProductServiceService, { address, defaultTimeoutMs: 5_000 });
    try {
      const { product: before } = await client.createProduct(teapot);

      rmSync(database);
      // The readiness check looks every 2 s; a write looks at most every 100 ms.
      await expect.poll(() => checkHealth(address, "", 1_000), { timeout: 5_000 }).toBe("NOT_SERVING");
      const refused = await client.createProduct(teapot).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(refused).toBeInstanceOf(StatusError);
      expect((refused as StatusError).code).toBe(Code.UNAVAILABLE);
      expect((refused as StatusError).message).toMatch(/database file was deleted or replaced/);

      // Said once the copy is written.
      const saying = () => service!.logs().find((l) => typeof l.savedTo === "string");
      await expect.poll(saying, { timeout: 5_000 }).toBeDefined();
      const said = saying();
      expect(said?.level).toBe("error");
      expect(said?.msg).toContain(`the SQLite database ${database} was deleted while the service ran`);
      const savedTo = said!.savedTo as string;
      expect(readdirSync(dir)).toContain(savedTo.slice(dir.length + 1));
      expect(statSync(savedTo).mode & 0o777).toBe(0o600);

      // The steps the log line gives.
      await service.stop();
      rmSync(`${database}-wal`, { force: true });
      rmSync(`${database}-shm`, { force: true });
      renameSync(savedTo, database);
      service = startServiceProcess("products", env);
      await waitForServing(address, 30_000);
      // Asked until the client's reconnect backoff, begun when the service stopped, lets it through.
      const read = () => client.getProduct({ id: before!.id }).then((r) => r.product, (err: StatusError) => (err.code === Code.UNAVAILABLE ? undefined : Promise.reject(err)));
      await expect.poll(read, { timeout: 15_000, interval: 200 }).toMatchObject({ id: before!.id, name: "Teapot", stock: 5 });
    } finally {
      client.close();
    }
  });
});

/**
 * A service started on a database made new while its durable consumers, in
 * JetStream, have acknowledged events: a database deleted while the service
 * was stopped, or another DATA_DIR. It runs on it, as on any, and used to say
 * nothing of the events whose effects the database lacks.
 */
describe("a service started on a new database whose consumers have handled events", () => {
  const nats = useNatsServer({ storeDir: join(dir, "nats-new") });
  const services: ServiceProcess[] = [];
  afterAll(async () => {
    for (const service of services.reverse()) await service.stop();
  });

  it("says so once at start, naming the consumers and how far they got, and serves", async () => {
    const productsAddress = `127.0.0.1:${await freePort()}`;
    const ordersAddress = `127.0.0.1:${await freePort()}`;
    const database = join(dir, "orders-new.db");
    const ordersEnv = { ORDERS_LISTEN: ordersAddress, ORDERS_DATABASE_URL: database, PRODUCTS_ADDRESS: productsAddress, NATS_URL: nats().url, LOG_LEVEL: "info" };
    services.push(startServiceProcess("products", { PRODUCTS_LISTEN: productsAddress, PRODUCTS_DATABASE_URL: join(dir, "products-new.db"), NATS_URL: nats().url, LOG_LEVEL: "warn" }));
    await waitForServing(productsAddress, 30_000);
    let orders = startServiceProcess("orders", ordersEnv);
    services.push(orders);
    await waitForServing(ordersAddress, 30_000);
    const newDatabaseLines = (service: ServiceProcess) => service.logs().filter((l) => String(l.msg).startsWith("the service's database was made new at this start"));
    const startedUp = (service: ServiceProcess) => expect.poll(() => service.logs().some((l) => l.msg === "events flow; reporting SERVING"), { timeout: 5_000 }).toBe(true);
    // Its first start makes the database and the consumers: nothing to say.
    await startedUp(orders);
    expect(newDatabaseLines(orders)).toEqual([]);

    const catalog = createClient(ProductServiceService, { address: productsAddress, defaultTimeoutMs: 5_000 });
    const shop = createClient(OrderServiceService, { address: ordersAddress, defaultTimeoutMs: 5_000 });
    try {
      const { product } = await catalog.createProduct(teapot);
      // Placed through the catalogue's copy once ProductCreated is handled; the order's StockReserved is handled too.
      await expect
        .poll(() => shop.createOrder({ customerId: "c-new", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress }).then((r) => r.order!.id, () => undefined), { timeout: 10_000 })
        .toBeDefined();
    } finally {
      catalog.close();
      shop.close();
    }
    await orders.stop();
    orders = startServiceProcess("orders", ordersEnv);
    services.push(orders);
    await waitForServing(ordersAddress, 30_000);
    // Started again on the database it made: nothing to say (its last start-up line written by then).
    await startedUp(orders);
    expect(newDatabaseLines(orders)).toEqual([]);

    await orders.stop();
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${database}${suffix}`, { force: true });
    orders = startServiceProcess("orders", ordersEnv);
    services.push(orders);
    await waitForServing(ordersAddress, 30_000);
    // The log is written asynchronously: the line may follow SERVING.
    await expect.poll(() => newDatabaseLines(orders), { timeout: 5_000 }).toHaveLength(1);
    const said = newDatabaseLines(orders);
    expect(said[0]!.level).toBe("warn");
    expect(said[0]!.msg).toMatch(/orders-product-created up to SHOP_PRODUCTS sequence [1-9]/);
    expect(said[0]!.msg).toMatch(/put that database back \(README "Backups and restores"\)/);
    expect((said[0]!.consumers as { consumer: string }[]).map((c) => c.consumer)).toContain("orders-product-created");
  });
});
