import type { OrderServiceEventHandlers } from "../../../gen/ts/shop/orders/v1/order_service_jetstream.js";
import type { Product } from "../../../gen/ts/shop/products/v1/product_service_pb.js";
import { type EventContext, UnprocessableEventError } from "../../../platform/events/index.js";
import type { CatalogEntry, CatalogStore } from "../store/catalog-store.js";

/** The handlers of the product events that feed the catalogue. */
export type CatalogFeed = Pick<OrderServiceEventHandlers<EventContext>, "productCreated" | "productUpdated">;

/** The catalogue's view of a product with a price, as the product service sent it (in an event or a lookup). */
export function catalogEntryOf(product: Product & { readonly price: NonNullable<Product["price"]> }): CatalogEntry {
  return { id: product.id, name: product.name, currency: product.price.currencyCode, priceMinor: product.price.amountMinor, version: product.version };
}

/**
 * Keeps the order service's copy of the catalogue current from the product
 * service's events, so orders are priced without a call to it. Runs in the
 * consumer's transaction; the catalogue keeps the highest version it has
 * seen, so a late or repeated event changes nothing. An event without a
 * priced product can never be applied and is dead-lettered at once.
 */
export function createCatalogFeed(catalog: CatalogStore): CatalogFeed {
  const take = (productId: string, product: Product | undefined): void => {
    if (!product?.price) throw new UnprocessableEventError(`the event about product ${productId} carries no product with a price`);
    catalog.upsert(catalogEntryOf({ ...product, price: product.price }));
  };
  return {
    productCreated(event) {
      take(event.productId, event.product);
    },
    productUpdated(event) {
      take(event.productId, event.product);
    },
  };
}
