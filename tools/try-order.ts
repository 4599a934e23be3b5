/**
 * A worked example against a running system (`npm start`): creates a
 * product, places an order for it, and follows the order until the saga
 * settles it. `npx tsx tools/try-order.ts [--products HOST:PORT] [--orders HOST:PORT]`
 */
import { OrderServiceService, OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { createClient } from "../platform/grpc/index.js";

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
};

async function main(): Promise<void> {
  if (process.argv.includes("--help")) {
    console.log("Usage: npx tsx tools/try-order.ts [--products 127.0.0.1:50051] [--orders 127.0.0.1:50052]");
    return;
  }
  const products = createClient(ProductServiceService, { address: arg("--products", "127.0.0.1:50051") });
  const orders = createClient(OrderServiceService, { address: arg("--orders", "127.0.0.1:50052") });
  try {
    const { product } = await products.createProduct({ name: "Teapot", description: "Blue porcelain", price: { currencyCode: "EUR", amountMinor: 1999 }, initialStock: 3 });
    console.log(`created product ${product!.id}: ${product!.name}, stock ${product!.stock}`);
    const { order } = await orders.createOrder({
      customerId: "customer-1",
      lines: [{ productId: product!.id, quantity: 2 }],
      shippingAddress: { recipient: "Ada Lovelace", line1: "12 St James's Square", line2: "", city: "London", postalCode: "SW1Y 4JH", countryCode: "GB" },
    });
    console.log(`placed order ${order!.id}: ${OrderState[order!.state]}, total ${order!.total!.amountMinor} ${order!.total!.currencyCode}`);
    for (let i = 0; i < 50; i++) {
      const { order: now } = await orders.getOrder({ id: order!.id });
      if (now!.state !== OrderState.ORDER_STATE_PENDING) {
        console.log(`order ${now!.id} is ${OrderState[now!.state]}${now!.rejectionReason ? `: ${now!.rejectionReason}` : ""}`);
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const { product: after } = await products.getProduct({ id: product!.id });
    console.log(`product ${after!.id} now has stock ${after!.stock}`);
  } finally {
    products.close();
    orders.close();
  }
}

main().catch((err) => {
  console.error(`try-order: ${err instanceof Error ? err.message : err}`);
  process.exitCode = 1;
});
