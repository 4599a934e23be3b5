import { OrderConfirmedEvent, OrderRejectedEvent, OrderUnknownEvent } from "../../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import type { OrderServiceEventHandlers } from "../../../gen/ts/shop/orders/v1/order_service_jetstream.js";
import type { StockReservationFailed, StockReserved } from "../../../gen/ts/shop/products/v1/product_events_pb.js";
import type { EventContext } from "../../../platform/events/index.js";
import type { Logger } from "../../../platform/log/index.js";
import { checkOptions } from "../../../platform/options/index.js";
import { settleReservation } from "../domain/order.js";
import type { OrderStore } from "../store/order-store.js";
import { UnknownOrderLines } from "./unknown-order-lines.js";

/** The order side of the saga: the handlers of the product service's answers about stock. */
export interface OrderSaga {
  readonly handlers: Pick<OrderServiceEventHandlers<EventContext>, "stockReserved" | "stockReservationFailed">;
  /** Logs the warnings about unknown orders held back, if any (see UnknownOrderLines); at stop, once the consumers have. */
  flushWarnings(): void;
}

/** An answer about stock, by its event's name. */
export type StockAnswer = "StockReserved" | "StockReservationFailed";

export interface OrderSagaOptions {
  readonly store: OrderStore;
  readonly logger: Logger;
  /** Called once for each answer about an order this service does not have, after its transaction committed (a metric's counter). */
  readonly onUnknownOrder?: (answer: StockAnswer) => void;
  readonly now?: () => number;
}

/**
 * The order side of the saga: the product service's answer settles a
 * PENDING order as CONFIRMED or REJECTED. Runs in one transaction with its
 * inbox row and the event it emits; a stale or repeated answer changes
 * nothing. An answer about an order this service does not have (a forged
 * OrderPlaced's, or one placed after the backup this database was restored
 * from) settles nothing: a StockReserved is answered with OrderUnknown, so
 * that the product service gives the stock back; a StockReservationFailed,
 * which holds nothing, is dropped. Both are logged as warnings, once their
 * transaction commits (at most ten lines in ten seconds, the rest told
 * together: see UnknownOrderLines).
 */
export function createOrderSaga(options: OrderSagaOptions): OrderSaga {
  checkOptions("createOrderSaga", options, ["store", "logger", "onUnknownOrder", "now"]);
  const { store, onUnknownOrder, now = Date.now } = options;
  const logger = options.logger.child({ component: "order-saga" });
  const lines = new UnknownOrderLines(logger);

  /** Settles the order; false when this service does not have it. */
  const settle = async (orderId: string, linesVersion: number, outcome: Parameters<typeof settleReservation>[2], context: EventContext): Promise<boolean> => {
    const order = await store.getForUpdate(context.tx, orderId);
    if (!order) return false;
    const next = settleReservation(order, linesVersion, outcome, now());
    if (!next) {
      // The product service answers an order's lines once: a refusal of a CONFIRMED order's is its database
      // restored from a backup older than this one's, the order reserved again and refused (tools/reservations.ts).
      if (!outcome.reserved && order.state === "CONFIRMED" && order.linesVersion === linesVersion) refusedAfterConfirmed(orderId, linesVersion, context);
      return true;
    }
    // Sent with the next statement: the row is locked, so the version cannot have moved.
    await store.replaceLocked(context.tx, next, order.version);
    const total = { currencyCode: next.currency, amountMinor: next.totalMinor };
    if (next.state === "CONFIRMED") context.emit(OrderConfirmedEvent, { orderId, customerId: next.customerId, total });
    else context.emit(OrderRejectedEvent, { orderId, customerId: next.customerId, reason: next.rejectionReason });
    return true;
  };

  // The order commits before its OrderPlaced is published, and its id is made then, so an order this service does not
  // have now it never will: the answer is final, and retrying it (or dead-lettering it for a replay) would change nothing.
  const unknown = (answer: StockAnswer, orderId: string, linesVersion: number, context: EventContext, what: string): void => {
    const { eventId } = context;
    context.tx.afterCommit(() => {
      onUnknownOrder?.(answer);
      lines.seen(orderId, () => logger.warn({ orderId, linesVersion, answer, eventId }, `${answer} came for order ${orderId}, which this service does not have: ${what}`));
    });
  };

  const refusedAfterConfirmed = (orderId: string, linesVersion: number, context: EventContext): void => {
    const { eventId } = context;
    // A line each: only an operator's `tools/reservations.ts check --reserve` sends these, once per order.
    context.tx.afterCommit(() =>
      logger.warn(
        { orderId, linesVersion, answer: "StockReservationFailed", eventId },
        `StockReservationFailed came for order ${orderId}, which is CONFIRMED: the product service holds no stock for it ` +
          "(its database restored from an older backup, say); the order stays CONFIRMED, and `npx tsx tools/reservations.ts check` lists it for a person to decide",
      ),
    );
  };

  const handlers: OrderSaga["handlers"] = {
    async stockReserved(event: StockReserved, context) {
      if (await settle(event.orderId, event.linesVersion, { reserved: true }, context)) return;
      context.emit(OrderUnknownEvent, { orderId: event.orderId, linesVersion: event.linesVersion });
      unknown("StockReserved", event.orderId, event.linesVersion, context, "OrderUnknown sent, so that the product service releases the stock it holds for it");
    },
    async stockReservationFailed(event: StockReservationFailed, context) {
      if (await settle(event.orderId, event.linesVersion, { reserved: false, reason: event.reason }, context)) return;
      unknown("StockReservationFailed", event.orderId, event.linesVersion, context, "nothing is held for it, so the answer is dropped");
    },
  };
  return { handlers, flushWarnings: () => lines.flush() };
}
