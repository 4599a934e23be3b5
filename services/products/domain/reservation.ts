/**
 * Stock reservations for orders: the rules the saga relies on. Pure; the
 * store applies the plan in one transaction.
 */

/** What the product service remembers about one order's stock. */
export interface ReservationRecord {
  readonly orderId: string;
  /** The order's lines version this record answers. */
  readonly linesVersion: number;
  /** reserved: stock is held; failed: nothing held; released: the order is cancelled and nothing is held, now or later. */
  readonly status: "reserved" | "failed" | "released";
  /** What is held (reserved) or was held (released). */
  readonly lines: readonly ReservedUnits[];
}

export interface ReservedUnits {
  readonly productId: string;
  readonly quantity: number;
}

export interface Shortfall {
  readonly productId: string;
  readonly requested: number;
  readonly available: number;
}

/** Lines version used for a cancelled order, above any real one, so no later request reserves for it. */
export const cancelledLinesVersion = Number.MAX_SAFE_INTEGER;

/**
 * Whether a request to reserve stock for `linesVersion` of an order is new
 * work. A duplicate, an older version arriving late, or a request for a
 * cancelled order is not.
 */
export function isNewReservationRequest(existing: ReservationRecord | undefined, linesVersion: number): boolean {
  return existing === undefined || (existing.status !== "released" && existing.linesVersion < linesVersion);
}

/**
 * Decides a reservation against the stock on hand (after giving back what
 * the order already holds): every line is covered, or none is reserved and
 * each short line is reported. A product that does not exist has 0 on hand.
 */
export function planReservation(
  lines: readonly ReservedUnits[],
  onHand: (productId: string) => number | undefined,
): { readonly ok: true } | { readonly ok: false; readonly shortfalls: Shortfall[] } {
  const shortfalls: Shortfall[] = [];
  for (const line of lines) {
    const available = onHand(line.productId) ?? 0;
    if (available < line.quantity) shortfalls.push({ productId: line.productId, requested: line.quantity, available });
  }
  return shortfalls.length === 0 ? { ok: true } : { ok: false, shortfalls };
}

/** The longest reason StockReservationFailed carries (its contract's max_len). */
export const maxReasonLength = 1000;

/**
 * A sentence for the customer about why stock could not be reserved, at
 * most `maxReasonLength` characters: products that do not fit are counted
 * instead of named (every one is in the event's shortages).
 */
export function shortfallReason(shortfalls: readonly Shortfall[]): string {
  const parts = shortfalls.map((s) => `${s.productId} (asked ${s.requested}, ${s.available} available)`);
  for (let shown = parts.length; shown > 0; shown--) {
    const rest = parts.length - shown;
    const text = `not enough stock: ${parts.slice(0, shown).join(", ")}${rest > 0 ? ` and ${rest} more` : ""}`;
    if (text.length <= maxReasonLength) return text;
  }
  return `not enough stock for ${parts.length} products`;
}
