import type { PromiseClient, ServiceImpl } from "../../../platform/grpc/index.js";
import { StatusError } from "../../../platform/errors/index.js";
import { decodePageToken, encodePageToken, pageSizeOf } from "../../../platform/grpc/index.js";
import { uuidv7 } from "../../../platform/ids/index.js";
import type { RequestIds } from "../../../platform/idempotency/index.js";
import type { Database } from "../../../platform/sql/index.js";
import { type Address, CreateOrderResponse, type Order, OrderServiceService, OrderState as OrderStateEnum } from "../../../gen/ts/shop/orders/v1/order_service_pb.js";
import type { ProductServiceService } from "../../../gen/ts/shop/products/v1/product_service_pb.js";
import { assertEditable, assertVersion, cancel, lineTotalMinor, type OrderRecord, priceLines, type ShippingAddress } from "../domain/order.js";
import type { CatalogStore } from "../store/catalog-store.js";
import type { OrderStore } from "../store/order-store.js";
import { quoteProducts } from "./product-catalog.js";

/** Told about every change inside the transaction that makes it, so its events commit with it. */
export interface OrderChangeListener {
  placed(order: OrderRecord): void;
  updated(order: OrderRecord, changedFields: readonly string[]): void;
  cancelled(order: OrderRecord, reason: string): void;
}

export interface OrderServiceDeps {
  readonly db: Database;
  readonly store: OrderStore;
  /** The local copy of the catalogue that prices orders. */
  readonly catalog: CatalogStore;
  /** The product service, for products the catalogue does not know yet. */
  readonly products: PromiseClient<typeof ProductServiceService>;
  /** Request ids of CreateOrder calls, so a repeated call places no second order. */
  readonly requestIds: RequestIds;
  readonly onChange?: OrderChangeListener;
  readonly now?: () => number;
}

const stateToProto: Record<OrderRecord["state"], OrderStateEnum> = {
  PENDING: OrderStateEnum.ORDER_STATE_PENDING,
  CONFIRMED: OrderStateEnum.ORDER_STATE_CONFIRMED,
  REJECTED: OrderStateEnum.ORDER_STATE_REJECTED,
  CANCELLED: OrderStateEnum.ORDER_STATE_CANCELLED,
};

/** Maps a stored order to its contract form. */
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
    version: o.version,
    createTime: new Date(o.createdAt),
    updateTime: new Date(o.updatedAt),
  };
}

const toAddress = (a: Address): ShippingAddress => ({ recipient: a.recipient, line1: a.line1, line2: a.line2, city: a.city, postalCode: a.postalCode, countryCode: a.countryCode });

/** OrderService: the contract's methods over the order store, priced from the local catalogue (and the product service when it must). */
export function createOrderService(deps: OrderServiceDeps): ServiceImpl<typeof OrderServiceService> {
  const { db, store, catalog, products, requestIds, onChange } = deps;
  const sources = { db, catalog, products };
  const now = deps.now ?? Date.now;
  const mustGet = (id: string): OrderRecord => {
    const order = store.get(id);
    if (!order) throw StatusError.notFound(`order ${id} does not exist`);
    return order;
  };

  return {
    async createOrder(req, context) {
      const quotes = await quoteProducts(sources, req.lines.map((l) => l.productId), context);
      const priced = priceLines(req.lines, quotes);
      const at = now();
      const order: OrderRecord = {
        id: uuidv7(at),
        customerId: req.customerId,
        state: "PENDING",
        ...priced,
        shippingAddress: toAddress(req.shippingAddress!),
        rejectionReason: "",
        linesVersion: 1,
        version: 1,
        createdAt: at,
        updatedAt: at,
      };
      return db.transaction(() =>
        requestIds.once(context, req.requestId, CreateOrderResponse, () => {
          store.insert(order);
          onChange?.placed(order);
          return { order: toOrderMessage(order) };
        }),
      );
    },

    async getOrder(req) {
      return { order: toOrderMessage(mustGet(req.id)) };
    },

    async updateOrder(req, context) {
      const mask = req.updateMask ?? [];
      const before = mustGet(req.id);
      assertVersion(before, req.expectedVersion);
      assertEditable(before);
      // Price new lines before the transaction: a remote call never holds the database.
      const priced = mask.includes("lines") ? priceLines(req.lines, await quoteProducts(sources, req.lines.map((l) => l.productId), context)) : undefined;
      const next = db.transaction(() => {
        const current = mustGet(req.id);
        assertVersion(current, req.expectedVersion);
        assertEditable(current);
        const edited: OrderRecord = {
          ...current,
          ...(priced && { ...priced, linesVersion: current.linesVersion + 1 }),
          ...(mask.includes("shipping_address") && { shippingAddress: toAddress(req.shippingAddress!) }),
          version: current.version + 1,
          updatedAt: now(),
        };
        if (!store.replace(edited, current.version)) throw StatusError.aborted(`order ${req.id} changed concurrently; read it again and retry`);
        onChange?.updated(edited, mask);
        return edited;
      });
      return { order: toOrderMessage(next) };
    },

    async cancelOrder(req) {
      const next = db.transaction(() => {
        const current = mustGet(req.id);
        const cancelled = cancel(current, now());
        if (!cancelled) return current;
        if (!store.replace(cancelled, current.version)) throw StatusError.aborted(`order ${req.id} changed concurrently; try again`);
        onChange?.cancelled(cancelled, req.reason);
        return cancelled;
      });
      return { order: toOrderMessage(next) };
    },

    async listOrders(req) {
      const limit = pageSizeOf(req.pageSize);
      const page = store.listByCustomer(req.customerId, decodePageToken(req.pageToken), limit + 1);
      const more = page.length > limit;
      const orders = page.slice(0, limit);
      return { orders: orders.map(toOrderMessage), nextPageToken: more ? encodePageToken(orders[orders.length - 1].id) : "" };
    },
  };
}
