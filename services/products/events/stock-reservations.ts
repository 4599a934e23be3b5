import type { OrderCancelled, OrderPlaced, OrderUpdated } from "../../../gen/ts/shop/orders/v1/order_events_pb.js";
import { StockReleasedEvent, StockReservationFailedEvent, StockReservedEvent } from "../../../gen/ts/shop/products/v1/product_events_jetstream.js";
import type { ProductServiceEventHandlers } from "../../../gen/ts/shop/products/v1/product_service_jetstream.js";
import type { EventContext } from "../../../platform/events/index.js";
import { cancelledLinesVersion, isNewReservationRequest, planReservation, type ReservedUnits, shortfallReason } from "../domain/reservation.js";
import type { ReservationStore } from "../store/reservation-store.js";

/**
 * The product side of the order saga. Each handler runs in one transaction
 * with its inbox row and the events it emits, so stock, reservation record
 * and reply commit together or not at all. Duplicates, stale lines versions
 * and events arriving out of order change nothing.
 */
export function createStockReservations(store: ReservationStore, now: () => number = Date.now): ProductServiceEventHandlers<EventContext> {
  /** Gives back what the order holds now, if anything. */
  const releaseHeld = (orderId: string, at: number): readonly ReservedUnits[] => {
    const existing = store.get(orderId);
    if (existing?.status !== "reserved") return [];
    for (const line of existing.lines) store.moveStock(line.productId, line.quantity, at);
    return existing.lines;
  };

  const reserve = (orderId: string, linesVersion: number, lines: readonly ReservedUnits[], context: EventContext): void => {
    if (!isNewReservationRequest(store.get(orderId), linesVersion)) return;
    const at = now();
    releaseHeld(orderId, at);
    const plan = planReservation(lines, (productId) => store.stockOf(productId));
    if (plan.ok) {
      for (const line of lines) store.moveStock(line.productId, -line.quantity, at);
      store.put({ orderId, linesVersion, status: "reserved", lines }, at);
      context.emit(StockReservedEvent, { orderId, linesVersion, lines: [...lines] });
    } else {
      store.put({ orderId, linesVersion, status: "failed", lines: [] }, at);
      context.emit(StockReservationFailedEvent, {
        orderId,
        linesVersion,
        reason: shortfallReason(plan.shortfalls),
        shortages: plan.shortfalls.map((s) => ({ productId: s.productId, requested: s.requested, available: s.available })),
      });
    }
  };

  const unitsOf = (lines: readonly { productId: string; quantity: number }[]): ReservedUnits[] => lines.map((l) => ({ productId: l.productId, quantity: l.quantity }));

  return {
    orderPlaced(event: OrderPlaced, context) {
      reserve(event.orderId, event.linesVersion, unitsOf(event.lines), context);
    },
    orderUpdated(event: OrderUpdated, context) {
      if (!event.changedFields.includes("lines") || !event.order) return;
      reserve(event.orderId, event.linesVersion, unitsOf(event.order.lines), context);
    },
    orderCancelled(event: OrderCancelled, context) {
      const existing = store.get(event.orderId);
      if (existing?.status === "released") return;
      const at = now();
      const released = releaseHeld(event.orderId, at);
      // Remembered even when nothing was held, so an OrderPlaced that arrives late reserves nothing.
      store.put({ orderId: event.orderId, linesVersion: cancelledLinesVersion, status: "released", lines: released }, at);
      if (released.length > 0) context.emit(StockReleasedEvent, { orderId: event.orderId, lines: [...released] });
    },
  };
}
