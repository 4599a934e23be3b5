import type { Product } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import type { ProductRecord } from "./domain/product.js";

/*
 * Between the product service's records and its contract's messages, in
 * one place: the gRPC port answers with these, and the events the service
 * emits carry them.
 */

/** A stored product in its contract form (shop.products.v1.Product). */
export function toProductMessage(p: ProductRecord): Product {
  return {
    id: p.id,
    name: p.name,
    description: p.description,
    price: { currencyCode: p.currency, amountMinor: p.priceMinor },
    stock: p.stock,
    version: p.version,
    stockVersion: p.stockVersion,
    createTime: new Date(p.createdAt),
    updateTime: new Date(p.updatedAt),
  };
}
