import type { OrderServiceEventHandlers } from "../../../gen/ts/shop/orders/v1/order_service_jetstream.js";
import type { Product } from "../../../gen/ts/shop/products/v1/product_service_pb.js";
import { type EventContext, UnprocessableEventError } from "../../../platform/events/index.js";
import { catalogEntryOf } from "../contract.js";
import type { CatalogStore } from "../store/catalog-store.js";

/** The handlers of the product events that feed the catalogue. */
export type CatalogFeed = Pick<OrderServiceEventHandlers<EventContext>, "productCreated" | "productUpdated">;

/**
 * Keeps the order service's copy of the catalogue current from the product
 * service's events, so orders are priced without a call to it. Runs in the
 * consumer's transaction; the catalogue keeps the highest version it has
 * seen, so a late or repeated event changes nothing. An event without a
 * priced product, or whose product is not the one its product_id (and
 * subject) names, can never be applied and is dead-lettered at once.
 */
export function createCatalogFeed(catalog: CatalogStore): CatalogFeed {
  const take = async (context: EventContext, productId: string, product: Product | undefined): Promise<void> => {
    if (!product?.price) throw new UnprocessableEventError(`the event about product ${productId} carries no product with a price`);
    // The subject names product_id; an entry stored under another id would rewrite that product's name, price and version unseen.
    if (product.id !== productId) throw new UnprocessableEventError(`the event about product ${productId} carries product ${JSON.stringify(product.id)}, not that one`);
    await catalog.upsert(context.tx, catalogEntryOf({ ...product, price: product.price }));
  };
  return {
    async productCreated(event, context) {
      await take(context, event.productId, event.product);
    },
    async productUpdated(event, context) {
      await take(context, event.productId, event.product);
    },
  };
}
