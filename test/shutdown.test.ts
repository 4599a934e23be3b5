import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { startNatsServer } from "./support/nats-server.js";
import { address, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";

describe("shutdown", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());

  it("completes with NATS gone, keeping committed events in the outbox for the next start", async () => {
    const nats = await startNatsServer({ storeDir: join(dir.path, "nats") });
    const products = await startTestProducts(dir.path, nats.url);
    const orders = await startTestOrders(dir.path, products.service.address, nats.url);
    const productId = (await products.client.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 100 }, initialStock: 5 })).product!.id;
    await nats.stopForRestart();
    const { order } = await orders.client.createOrder({ customerId: "c-1", lines: [{ productId, quantity: 1 }], shippingAddress: address });
    expect(await orders.service.events.outbox.pending()).toBeGreaterThan(0);
    await orders.stop();
    await products.stop();
    // Everything comes back: the outbox drains and the saga finishes.
    await nats.restart();
    const products2 = await startTestProducts(dir.path, nats.url);
    const orders2 = await startTestOrders(dir.path, products2.service.address, nats.url);
    try {
      await expect.poll(async () => (await orders2.client.getOrder({ id: order!.id })).order!.state, { timeout: 15_000 }).toBe(2);
      expect((await products2.client.getProduct({ id: productId })).product!.stock).toBe(4);
    } finally {
      await orders2.stop();
      await products2.stop();
      await nats.stop();
    }
  }, 60_000);
});
