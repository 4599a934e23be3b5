import { OrderConfirmedEvent, OrderRejectedEvent } from "../../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import type { OrderServiceEventHandlers } from "../../../gen/ts/shop/orders/v1/order_service_jetstream.js";
import type { StockReservationFailed, StockReserved } from "../../../gen/ts/shop/products/v1/product_events_pb.js";
import { UnprocessableEventError, type EventContext } from "../../../platform/events/index.js";
import { settleReservation } from "../domain/order.js";
import type { OrderStore } from "../store/order-store.js";

/** The handlers of the product service's answers about stock. */
export type OrderSaga = Pick<OrderServiceEventHandlers<EventContext>, "stockReserved" | "stockReservationFailed">;

/**
 * The order side of the saga: the product service's answer settles a
 * PENDING order as CONFIRMED or REJECTED. Runs in one transaction with its
 * inbox row and the event it emits; a stale or repeated answer changes
 * nothing; one about an order this service does not have goes to the dead
 * letter stream at once.
 */
export function createOrderSaga(store: OrderStore, now: () => number = Date.now): OrderSaga {
  const settle = async (orderId: string, linesVersion: number, outcome: Parameters<typeof settleReservation>[2], context: EventContext): Promise<void> => {
    const order = await store.getForUpdate(context.tx, orderId);
    // The order commits before its OrderPlaced is published, so an answer about an order this service does
    // not have can never be settled: waiting for retries would not change that.
    if (!order) throw new UnprocessableEventError(`order ${orderId} is unknown to this service, so there is nothing to settle`);
    const next = settleReservation(order, linesVersion, outcome, now());
    if (!next) return;
    // Sent with the next statement: the row is locked, so the version cannot have moved.
    await store.replaceLocked(context.tx, next, order.version);
    const total = { currencyCode: next.currency, amountMinor: next.totalMinor };
    if (next.state === "CONFIRMED") context.emit(OrderConfirmedEvent, { orderId, customerId: next.customerId, total });
    else context.emit(OrderRejectedEvent, { orderId, customerId: next.customerId, reason: next.rejectionReason });
  };

  return {
    async stockReserved(event: StockReserved, context) {
      await settle(event.orderId, event.linesVersion, { reserved: true }, context);
    },
    async stockReservationFailed(event: StockReservationFailed, context) {
      await settle(event.orderId, event.linesVersion, { reserved: false, reason: event.reason }, context);
    },
  };
}
