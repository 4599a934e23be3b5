import { OrderCancelledEvent, OrderPlacedEvent, OrderUpdatedEvent } from "../../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import type { Outbox } from "../../../platform/events/index.js";
import type { OrderChangeListener } from "../grpc/order-service.js";
import { toOrderMessage } from "../grpc/order-service.js";

/** Writes the order service's own events to the outbox, in the transaction of the change they report. */
export function orderChangeEvents(outbox: Outbox): OrderChangeListener {
  return {
    placed(order) {
      const message = toOrderMessage(order);
      outbox.add(OrderPlacedEvent, { orderId: order.id, customerId: order.customerId, lines: message.lines, total: message.total, linesVersion: order.linesVersion });
    },
    updated(order, changedFields) {
      outbox.add(OrderUpdatedEvent, { orderId: order.id, order: toOrderMessage(order), changedFields: [...changedFields], linesVersion: order.linesVersion });
    },
    cancelled(order, reason) {
      outbox.add(OrderCancelledEvent, { orderId: order.id, customerId: order.customerId, reason });
    },
  };
}
