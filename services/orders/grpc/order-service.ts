import { OrderCancelledEvent, OrderPlacedEvent, OrderUpdatedEvent } from "../../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { CreateOrderResponse, Order, OrderServiceService } from "../../../gen/ts/shop/orders/v1/order_service_pb.js";
import type { ProductServiceService } from "../../../gen/ts/shop/products/v1/product_service_pb.js";
import { StatusError } from "../../../platform/errors/index.js";
import type { Outbox } from "../../../platform/events/index.js";
import { type CallContext, callTransaction, decodePageToken, listPage, mayAccessOwnedBy, notTheOwner, pageScope, pageSizeOf, type PromiseClient, type ServiceImpl } from "../../../platform/grpc/index.js";
import type { RequestIds } from "../../../platform/idempotency/index.js";
import { uuidv7 } from "../../../platform/ids/index.js";
import type { Database } from "../../../platform/sql/index.js";
import { toOrderMessage, toShippingAddress } from "../contract.js";
import { assertEditable, assertVersion, cancel, type OrderRecord, priceLines } from "../domain/order.js";
import type { CatalogStore } from "../store/catalog-store.js";
import type { OrderStore } from "../store/order-store.js";
import { quoteProducts } from "./product-catalog.js";

export interface OrderServiceDeps {
  readonly db: Database;
  readonly store: OrderStore;
  /** The local copy of the catalogue that prices orders. */
  readonly catalog: CatalogStore;
  /** The product service, for products the catalogue does not know yet. */
  readonly products: PromiseClient<typeof ProductServiceService>;
  /** Where every change's events go, in the change's own transaction. */
  readonly outbox: Outbox;
  /** Request ids of CreateOrder calls, so a repeated call places no second order. */
  readonly requestIds: RequestIds;
  readonly now?: () => number;
}

/**
 * OrderService: the contract's methods over the order store, priced from the
 * local catalogue (and the product service when it must). Each change and
 * the event that reports it (OrderPlaced, OrderUpdated, OrderCancelled)
 * commit in one transaction.
 */
export function createOrderService(deps: OrderServiceDeps): ServiceImpl<typeof OrderServiceService> {
  const { db, store, catalog, products, outbox, requestIds } = deps;
  const sources = { db, catalog, products };
  const now = deps.now ?? Date.now;
  // The contract lets customers reach only their own orders; the owner is in the stored order, so it is checked here.
  const found = (order: OrderRecord | undefined, id: string, context: CallContext): OrderRecord => {
    if (!order) throw StatusError.notFound(`order ${id} does not exist`);
    if (!mayAccessOwnedBy(context.principal, order.customerId)) throw notTheOwner(context.principal, `order ${id}`);
    return order;
  };

  return {
    async createOrder(req, context) {
      // Priced before the transaction: a remote call never holds the database.
      const quotes = await quoteProducts(sources, req.lines.map((l) => l.productId), context);
      const priced = priceLines(req.lines, quotes);
      const at = now();
      const order: OrderRecord = {
        id: uuidv7(at),
        customerId: req.customerId,
        state: "PENDING",
        ...priced,
        shippingAddress: toShippingAddress(req.shippingAddress!),
        rejectionReason: "",
        cancellationReason: "",
        linesVersion: 1,
        pendingSince: at,
        version: 1,
        createdAt: at,
        updatedAt: at,
      };
      return db.transaction((tx) =>
        requestIds.once(tx, context, req.requestId, CreateOrderResponse, async () => {
          await store.insert(tx, order);
          const message = toOrderMessage(order);
          outbox.add(tx, OrderPlacedEvent, { orderId: order.id, customerId: order.customerId, lines: message.lines, total: message.total, linesVersion: order.linesVersion }, context);
          return { order: message };
        }),
        callTransaction(context),
      );
    },

    async getOrder(req, context) {
      return { order: toOrderMessage(found(await store.get(db, req.id), req.id, context)) };
    },

    async updateOrder(req, context) {
      const mask = req.updateMask ?? [];
      const before = found(await store.get(db, req.id), req.id, context);
      assertVersion(before, req.expectedVersion);
      assertEditable(before);
      // Price new lines before the transaction: a remote call never holds the database.
      const priced = mask.includes("lines") ? priceLines(req.lines, await quoteProducts(sources, req.lines.map((l) => l.productId), context)) : undefined;
      return db.transaction(async (tx) => {
        const current = found(await store.getForUpdate(tx, req.id), req.id, context);
        assertVersion(current, req.expectedVersion);
        assertEditable(current);
        const at = now();
        const edited: OrderRecord = {
          ...current,
          // New lines are a new request to the product service, given the saga's whole time again.
          ...(priced && { ...priced, linesVersion: current.linesVersion + 1, pendingSince: at }),
          ...(mask.includes("shipping_address") && { shippingAddress: toShippingAddress(req.shippingAddress!) }),
          version: current.version + 1,
          updatedAt: at,
        };
        if (!(await store.replace(tx, edited, current.version))) throw StatusError.aborted(`order ${req.id} changed concurrently; read it again and retry`);
        const message = toOrderMessage(edited);
        outbox.add(tx, OrderUpdatedEvent, { orderId: edited.id, order: message, changedFields: [...mask], linesVersion: edited.linesVersion }, context);
        return { order: message };
      }, callTransaction(context));
    },

    async cancelOrder(req, context) {
      return db.transaction(async (tx) => {
        const current = found(await store.getForUpdate(tx, req.id), req.id, context);
        const cancelled = cancel(current, now(), req.reason);
        if (!cancelled) return { order: toOrderMessage(current) };
        if (!(await store.replace(tx, cancelled, current.version))) throw StatusError.aborted(`order ${req.id} changed concurrently; try again`);
        outbox.add(tx, OrderCancelledEvent, { orderId: cancelled.id, customerId: cancelled.customerId, reason: req.reason }, context);
        return { order: toOrderMessage(cancelled) };
      }, callTransaction(context));
    },

    async listOrders(req, context) {
      const limit = pageSizeOf(req.pageSize);
      // A token goes on only the list it came from: this caller's, of this customer's orders.
      const scope = pageScope(context, [req.customerId]);
      const rows = await store.listByCustomer(db, req.customerId, decodePageToken(req.pageToken, scope), limit + 1);
      const page = listPage(rows, limit, toOrderMessage, Order, (o) => o.id, scope);
      return { orders: page.items, nextPageToken: page.nextPageToken };
    },
  };
}
