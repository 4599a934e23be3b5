import { describe, expect, it } from "vitest";
import { ProductServiceConsumers } from "../../gen/ts/shop/products/v1/product_service_jetstream.js";
import { productConsumers } from "./app.js";

describe("the product service's consumers", () => {
  it("are one per subscription of its contract, each batch of order events locking its products first", () => {
    const bindings = productConsumers();
    expect(bindings.map((b) => b.spec.durable).sort()).toEqual(Object.values(ProductServiceConsumers).map((c) => c.spec.durable).sort());
    // Without the locks taken ahead, two instances' batches on PostgreSQL wait on each other in a circle (see lockStockAhead).
    for (const binding of bindings) expect(typeof binding.lockBatch, binding.spec.durable).toBe("function");
  });
});
