/**
 * Services started before their dependencies' host names resolve, as in
 * docker compose or Kubernetes, where a service's name appears only once its
 * container or pod exists: they wait, as for a server that refuses
 * connections, and come up once the names resolve. The names are made to
 * resolve later inside the services' processes (resolve-later.mjs); the
 * servers behind them are real.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { OrderServiceService } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { checkHealth, createClient, waitForServing } from "../platform/grpc/index.js";
import { freePort, useNatsServer } from "./support/nats-server.js";
import { usePostgresServer } from "./support/postgres.js";
import { resolvingLater, startServiceProcess } from "./support/service-process.js";
import { address, grpcError } from "./support/shop.js";
import { tempDirForSuite } from "./support/temp-dir.js";

const dir = tempDirForSuite("concord-names-late-");
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const teapot = { name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1999 }, initialStock: 3 };

describe("services whose dependencies' host names resolve only later", () => {
  const postgres = usePostgresServer();
  const nats = useNatsServer({ storeDir: join(dir, "nats") });
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("the product service waits for its PostgreSQL host, saying so once, and serves once it (and NATS's) resolves", async () => {
    const resolvable = join(dir, "db-and-nats-resolve");
    const database = new URL(await postgres().createDatabase("products"));
    database.hostname = "db-late.invalid";
    const listen = `127.0.0.1:${await freePort()}`;
    const svc = startServiceProcess("products", {
      PRODUCTS_LISTEN: listen,
      PRODUCTS_DATABASE_URL: database.toString(),
      NATS_URL: `nats://nats-late.invalid:${new URL(nats().url).port}`,
      LOG_LEVEL: "info",
      ...resolvingLater("db-late.invalid,nats-late.invalid", resolvable),
    });
    cleanups.push(() => svc.kill());
    await expect.poll(() => checkHealth(listen).catch(() => "no answer"), { timeout: 20_000, interval: 100 }).toBe("NOT_SERVING");
    // Said at the first failed lookup; several more attempts go by, and it is not said again (nor anything else warned of).
    await expect.poll(() => svc.logs().filter((line) => line.level === "warn").length, { timeout: 20_000 }).toBeGreaterThan(0);
    await sleep(2_500);
    expect(svc.logs().filter((line) => line.level === "warn")).toEqual([expect.objectContaining({ host: "db-late.invalid", msg: expect.stringMatching(/^the database's host db-late\.invalid does not resolve: waiting for it/) })]);

    writeFileSync(resolvable, "");
    await waitForServing(listen, 20_000);
    await expect.poll(() => svc.logs().find((line) => line.msg === "reached the database; it is open and migrated")).toMatchObject({ database: database.toString(), waitedMs: expect.any(Number) });
    const client = createClient(ProductServiceService, { address: listen, maxAttempts: 1 });
    cleanups.push(async () => client.close());
    expect((await client.createProduct(teapot)).product?.stock).toBe(3);
    expect(await svc.stop()).toBe(0);
  }, 90_000);

  it("the order service asks the product service again once its host resolves (grpc-js resolves the name again), and serves meanwhile", async () => {
    const resolvable = join(dir, "products-resolves");
    const productsPort = await freePort();
    const products = startServiceProcess("products", { PRODUCTS_LISTEN: `127.0.0.1:${productsPort}`, PRODUCTS_DATABASE_URL: join(dir, "products.db"), NATS_URL: nats().url });
    cleanups.push(() => products.kill());
    const listen = `127.0.0.1:${await freePort()}`;
    const orders = startServiceProcess("orders", {
      ORDERS_LISTEN: listen,
      ORDERS_DATABASE_URL: join(dir, "orders.db"),
      NATS_URL: nats().url,
      PRODUCTS_ADDRESS: `products-late.invalid:${productsPort}`,
      ...resolvingLater("products-late.invalid", resolvable),
    });
    cleanups.push(() => orders.kill());
    await waitForServing(`127.0.0.1:${productsPort}`, 20_000);
    // It asks for nothing at start: it serves while the name does not resolve.
    await waitForServing(listen, 20_000);
    const client = createClient(OrderServiceService, { address: listen, maxAttempts: 1 });
    cleanups.push(async () => client.close());
    // A product its catalogue does not know: it asks the product service.
    const order = { customerId: "c-late", lines: [{ productId: "01890a5d-ac96-774b-bcce-b302099a8057", quantity: 1 }], shippingAddress: address };
    expect(await grpcError(client.createOrder(order))).toMatchObject({ code: status.UNAVAILABLE, message: "the product service is unavailable; nothing was changed, try again" });

    writeFileSync(resolvable, "");
    // The product service answers: no such product.
    await expect.poll(async () => (await grpcError(client.createOrder(order))).code, { timeout: 10_000, interval: 200 }).toBe(status.NOT_FOUND);
    expect(await orders.stop()).toBe(0);
    expect(await products.stop()).toBe(0);
  }, 90_000);
});
