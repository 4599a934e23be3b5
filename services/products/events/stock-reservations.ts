import type { OrderCancelled, OrderPlaced, OrderUnknown, OrderUpdated } from "../../../gen/ts/shop/orders/v1/order_events_pb.js";
import { StockReleasedEvent, StockReservationFailedEvent, StockReservedEvent } from "../../../gen/ts/shop/products/v1/product_events_jetstream.js";
import type { ProductServiceConsumers, ProductServiceEventHandlers } from "../../../gen/ts/shop/products/v1/product_service_jetstream.js";
import type { BatchLocksFor, EventContext } from "../../../platform/events/index.js";
import type { Transaction } from "../../../platform/sql/index.js";
import { cancelledLinesVersion, isNewReservationRequest, planReservation, type ReservedUnits, shortfallReason } from "../domain/reservation.js";
import type { ReservationStore } from "../store/reservation-store.js";

/**
 * The product side of the order saga. Each handler runs in one transaction
 * (`context.tx`) with its inbox row and the events it emits, so stock,
 * reservation record and reply commit together or not at all. Duplicates,
 * stale lines versions and events arriving out of order change nothing. An
 * order cancelled (OrderCancelled), or one the order service does not have
 * (OrderUnknown), gets what it holds back once and is reserved nothing after.
 */
export function createStockReservations(store: ReservationStore, now: () => number = Date.now): ProductServiceEventHandlers<EventContext> {
  /** Gives back what the order holds now, if anything. */
  const releaseHeld = async (context: EventContext, orderId: string, at: number): Promise<readonly ReservedUnits[]> => {
    const existing = await store.get(context.tx, orderId);
    if (existing?.status !== "reserved") return [];
    // Locked in id order first, as reservations lock them, so the two never wait on each other in a circle.
    await store.stockOf(context.tx, existing.lines.map((l) => l.productId));
    await store.moveStock(context.tx, existing.lines, 1, at);
    return existing.lines;
  };

  /** Gives back what the order holds, once, and has every later request for it reserve nothing. */
  const releaseForGood = async (orderId: string, context: EventContext): Promise<void> => {
    const existing = await store.get(context.tx, orderId);
    if (existing?.status === "released") return;
    const at = now();
    const released = await releaseHeld(context, orderId, at);
    // Remembered even when nothing was held, so an OrderPlaced that arrives late reserves nothing.
    await store.put(context.tx, { orderId, linesVersion: cancelledLinesVersion, status: "released", lines: released }, at);
    if (released.length > 0) context.emit(StockReleasedEvent, { orderId, lines: [...released] });
  };

  const reserve = async (orderId: string, linesVersion: number, lines: readonly ReservedUnits[], context: EventContext): Promise<void> => {
    const { tx } = context;
    const existing = await store.get(tx, orderId);
    if (!isNewReservationRequest(existing, linesVersion)) return;
    const at = now();
    // Every product involved is locked at once, in id order; what the order held goes back on the shelf first.
    const held = existing?.status === "reserved" ? existing.lines : [];
    const onHand = await store.stockOf(tx, [...lines, ...held].map((l) => l.productId));
    await store.moveStock(tx, held, 1, at);
    for (const line of held) onHand.set(line.productId, (onHand.get(line.productId) ?? 0) + line.quantity);
    const plan = planReservation(lines, (productId) => onHand.get(productId));
    if (plan.ok) {
      await store.moveStock(tx, lines, -1, at);
      await store.put(tx, { orderId, linesVersion, status: "reserved", lines }, at);
      context.emit(StockReservedEvent, { orderId, linesVersion, lines: [...lines] });
    } else {
      await store.put(tx, { orderId, linesVersion, status: "failed", lines: [] }, at);
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
    async orderPlaced(event: OrderPlaced, context) {
      await reserve(event.orderId, event.linesVersion, unitsOf(event.lines), context);
    },
    async orderUpdated(event: OrderUpdated, context) {
      if (!event.changedFields.includes("lines") || !event.order) return;
      await reserve(event.orderId, event.linesVersion, unitsOf(event.order.lines), context);
    },
    async orderCancelled(event: OrderCancelled, context) {
      await releaseForGood(event.orderId, context);
    },
    async orderUnknown(event: OrderUnknown, context) {
      await releaseForGood(event.orderId, context);
    },
  };
}

/**
 * What a batch of order events locks, locked before its first event runs:
 * the products of every order's new lines and of what it holds now, sorted,
 * in one statement. A handler locks only its own order's products, in id
 * order; without this, two instances' batches could each hold one event's
 * products and wait for the other's next event's (a circle that ends only
 * when one gives up its lock wait and its work is done again).
 */
export function lockStockAhead(store: ReservationStore): BatchLocksFor<typeof ProductServiceConsumers> {
  const lockProducts = async (tx: Transaction, orderIds: readonly string[], newProductIds: readonly string[]): Promise<void> => {
    if (orderIds.length === 0) return;
    const held = await store.heldProducts(tx, orderIds);
    const productIds = [...newProductIds, ...held];
    if (productIds.length > 0) await store.stockOf(tx, productIds);
  };
  return {
    orderPlaced: (events, tx) => lockProducts(tx, events.map((e) => e.orderId), events.flatMap((e) => e.lines.map((l) => l.productId))),
    orderUpdated: (events, tx) => {
      const relining = events.filter((e) => e.changedFields.includes("lines") && e.order);
      return lockProducts(tx, relining.map((e) => e.orderId), relining.flatMap((e) => e.order!.lines.map((l) => l.productId)));
    },
    orderCancelled: (events, tx) => lockProducts(tx, events.map((e) => e.orderId), []),
    orderUnknown: (events, tx) => lockProducts(tx, events.map((e) => e.orderId), []),
  };
}
