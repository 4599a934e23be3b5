import { type Address, type Order, OrderState } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import type { Product } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { lineTotalMinor, type OrderRecord, type ShippingAddress } from "./domain/order.js";
import type { CatalogEntry } from "./store/catalog-store.js";

/*
 * Between the order service's records and the contracts' messages, in one
 * place: the gRPC port answers with these, the events the service emits
 * carry them, and the product service's messages feed the catalogue.
 */

const stateToProto: Record<OrderRecord["state"], OrderState> = {
  PENDING: OrderState.ORDER_STATE_PENDING,
  CONFIRMED: OrderState.ORDER_STATE_CONFIRMED,
  REJECTED: OrderState.ORDER_STATE_REJECTED,
  CANCELLED: OrderState.ORDER_STATE_CANCELLED,
};

/** A stored order in its contract form (shop.orders.v1.Order). */
export function toOrderMessage(o: OrderRecord): Order {
  const money = (amountMinor: number) => ({ currencyCode: o.currency, amountMinor });
  return {
    id: o.id,
    customerId: o.customerId,
    state: stateToProto[o.state],
    lines: o.lines.map((l) => ({ productId: l.productId, productName: l.productName, quantity: l.quantity, unitPrice: money(l.unitPriceMinor), lineTotal: money(lineTotalMinor(l)) })),
    total: money(o.totalMinor),
    shippingAddress: o.shippingAddress,
    rejectionReason: o.rejectionReason,
    cancellationReason: o.cancellationReason,
    version: o.version,
    createTime: new Date(o.createdAt),
    updateTime: new Date(o.updatedAt),
  };
}

/** A contract address as the order keeps it. */
export function toShippingAddress(a: Address): ShippingAddress {
  return { recipient: a.recipient, line1: a.line1, line2: a.line2, city: a.city, postalCode: a.postalCode, countryCode: a.countryCode };
}

/** The catalogue's view of a product with a price, as the product service sent it (in an event or a lookup). */
export function catalogEntryOf(product: Product & { readonly price: NonNullable<Product["price"]> }): CatalogEntry {
  return { id: product.id, name: product.name, currency: product.price.currencyCode, priceMinor: product.price.amountMinor, version: product.version };
}
