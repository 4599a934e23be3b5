import { StatusError } from "../../../platform/errors/index.js";

export type OrderState = "PENDING" | "CONFIRMED" | "REJECTED" | "CANCELLED";

export interface ShippingAddress {
  readonly recipient: string;
  readonly line1: string;
  readonly line2: string;
  readonly city: string;
  readonly postalCode: string;
  readonly countryCode: string;
}

/** A priced line: the product's name and price when the order was priced. */
export interface PricedLine {
  readonly productId: string;
  readonly productName: string;
  readonly quantity: number;
  readonly unitPriceMinor: number;
}

/** An order as the order service keeps it. Money is in minor units of `currency`. */
export interface OrderRecord {
  readonly id: string;
  readonly customerId: string;
  readonly state: OrderState;
  readonly lines: readonly PricedLine[];
  readonly currency: string;
  readonly totalMinor: number;
  readonly shippingAddress: ShippingAddress;
  readonly rejectionReason: string;
  /** Why it was cancelled (OrderCancelled's reason); empty unless CANCELLED. */
  readonly cancellationReason: string;
  /** Raised whenever the lines change, so stock replies about older lines are ignored. */
  readonly linesVersion: number;
  /** When the order last entered PENDING (placed, or its lines changed), ms since the epoch: the saga's time runs from here. */
  readonly pendingSince: number;
  readonly version: number;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** A product's name and price as the order service knows them when it prices an order. */
export interface ProductQuote {
  readonly id: string;
  readonly name: string;
  readonly priceMinor: number;
  readonly currency: string;
}

/** The largest amount of money the contracts carry (shop.common.v1.Money.amount_minor). */
export const maxAmountMinor = 100_000_000_000_000;

/**
 * Prices each requested line at its product's current price. All products
 * must be priced in one currency, and the total must fit a Money amount
 * (FAILED_PRECONDITION otherwise).
 */
export function priceLines(
  requested: readonly { readonly productId: string; readonly quantity: number }[],
  quotes: ReadonlyMap<string, ProductQuote>,
): { lines: PricedLine[]; currency: string; totalMinor: number } {
  const lines = requested.map((line) => {
    const quote = quotes.get(line.productId);
    if (!quote) throw new Error(`no quote for product ${line.productId}`);
    return { productId: line.productId, productName: quote.name, quantity: line.quantity, unitPriceMinor: quote.priceMinor };
  });
  const currencies = new Set(requested.map((l) => quotes.get(l.productId)!.currency));
  if (currencies.size > 1) {
    throw StatusError.failedPrecondition(`the products are priced in different currencies (${[...currencies].sort().join(", ")}); order them separately`);
  }
  const totalMinor = lines.reduce((sum, l) => sum + lineTotalMinor(l), 0);
  if (!(totalMinor <= maxAmountMinor)) throw StatusError.failedPrecondition(`the order total would be above ${maxAmountMinor} minor units; order fewer units`);
  return { lines, currency: [...currencies][0], totalMinor };
}

export function lineTotalMinor(line: PricedLine): number {
  return line.unitPriceMinor * line.quantity;
}

/** A PENDING order may still change; FAILED_PRECONDITION otherwise. */
export function assertEditable(order: OrderRecord): void {
  if (order.state !== "PENDING") throw StatusError.failedPrecondition(`order ${order.id} is ${order.state}; only PENDING orders can be changed`);
}

/** ABORTED when the caller's view of the order is stale. */
export function assertVersion(order: OrderRecord, expectedVersion: number): void {
  if (order.version !== expectedVersion) {
    throw StatusError.aborted(`order ${order.id} is at version ${order.version}, not ${expectedVersion}; read it again and retry`);
  }
}

/**
 * Cancelling, for `reason`: PENDING and CONFIRMED orders become CANCELLED; a
 * CANCELLED order stays as it is, with the reason it was cancelled for
 * (null: nothing to do); a REJECTED one cannot be.
 */
export function cancel(order: OrderRecord, now: number, reason: string): OrderRecord | null {
  switch (order.state) {
    case "CANCELLED":
      return null;
    case "REJECTED":
      throw StatusError.failedPrecondition(`order ${order.id} was rejected and cannot be cancelled`);
    default:
      return { ...order, state: "CANCELLED", cancellationReason: reason, version: order.version + 1, updatedAt: now };
  }
}

/**
 * The product service's answer about stock for one lines version. Only a
 * PENDING order whose lines are still that version moves; any other answer
 * is stale or a duplicate and changes nothing (null).
 */
export function settleReservation(
  order: OrderRecord,
  linesVersion: number,
  outcome: { readonly reserved: true } | { readonly reserved: false; readonly reason: string },
  now: number,
): OrderRecord | null {
  if (order.state !== "PENDING" || order.linesVersion !== linesVersion) return null;
  return outcome.reserved
    ? { ...order, state: "CONFIRMED", version: order.version + 1, updatedAt: now }
    : { ...order, state: "REJECTED", rejectionReason: outcome.reason, version: order.version + 1, updatedAt: now };
}

/**
 * An order whose saga has not settled it within `timeoutMs` of its entering
 * PENDING is cancelled, as CancelOrder cancels it, so that no customer waits
 * on an answer that may never come (its OrderPlaced dead-lettered, the
 * product service gone). Any other order, or one still within its time,
 * changes nothing (null).
 */
export function expirePending(order: OrderRecord, timeoutMs: number, now: number): OrderRecord | null {
  if (order.state !== "PENDING" || now - order.pendingSince < timeoutMs) return null;
  return cancel(order, now, pendingTimeoutReason(timeoutMs));
}

/** OrderCancelled's reason for an order `expirePending` cancelled. */
export function pendingTimeoutReason(timeoutMs: number): string {
  return `not confirmed within ${formatDuration(timeoutMs)}: no answer about its stock came from the product service`;
}

/** "15m", "1m30s", "250ms": as the settings are written. */
function formatDuration(ms: number): string {
  if (ms < 1_000) return `${ms}ms`;
  const units: [string, number][] = [["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1_000]];
  let rest = Math.floor(ms / 1_000) * 1_000;
  let out = "";
  for (const [unit, size] of units) {
    if (rest >= size) {
      out += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return out;
}
