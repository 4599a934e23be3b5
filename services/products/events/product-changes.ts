import { ProductCreatedEvent, ProductUpdatedEvent, StockAdjustedEvent } from "../../../gen/ts/shop/products/v1/product_events_jetstream.js";
import type { Outbox } from "../../../platform/events/index.js";
import type { ProductChangeListener } from "../grpc/product-service.js";
import { toProductMessage } from "../grpc/product-service.js";

/** Writes the product service's own events to the outbox, in the transaction of the change they report. */
export function productChangeEvents(outbox: Outbox): ProductChangeListener {
  return {
    created(product) {
      outbox.add(ProductCreatedEvent, { productId: product.id, product: toProductMessage(product) });
    },
    updated(product, changedFields) {
      outbox.add(ProductUpdatedEvent, { productId: product.id, product: toProductMessage(product), changedFields: [...changedFields] });
    },
    stockAdjusted(product, delta, reason) {
      outbox.add(StockAdjustedEvent, { productId: product.id, delta, reason, stock: product.stock, version: product.version, stockVersion: product.stockVersion });
    },
  };
}
