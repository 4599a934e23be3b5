import type { Logger } from "../log/index.js";
import { BatchConflictError, UnprocessableEventError, type DeliveryMiddleware } from "./delivery.js";

export interface RetryOptions {
  /** Attempts in all; the error of the last one propagates (to the dead letter middleware). */
  readonly maxDeliver: number;
  /** Delay before the retry after attempt n (index n-1); the last entry repeats; none means at once. */
  readonly backoffMs: readonly number[];
  readonly logger: Logger;
}

/**
 * Turns a failed attempt into a delayed redelivery (a nak with delay) while
 * attempts remain. Unprocessable events, batch conflicts and the last
 * attempt's failure are passed on unchanged.
 */
export function retryWithBackoff(options: RetryOptions): DeliveryMiddleware {
  const { maxDeliver, backoffMs, logger } = options;
  return (next) => async (delivery, tx) => {
    try {
      return await next(delivery, tx);
    } catch (err) {
      if (err instanceof UnprocessableEventError || err instanceof BatchConflictError || delivery.deliveryCount >= maxDeliver) throw err;
      const delayMs = backoffDelay(backoffMs, delivery.deliveryCount);
      logger.warn(
        { err, consumer: delivery.consumer, streamSequence: delivery.streamSequence, attempt: delivery.deliveryCount, maxDeliver, retryInMs: delayMs },
        "event handler failed; retrying",
      );
      return { kind: "retry", delayMs };
    }
  };
}

/** The delay after attempt `deliveryCount` (1-based): its entry, or the last one repeated. */
export function backoffDelay(backoffMs: readonly number[], deliveryCount: number): number {
  if (backoffMs.length === 0) return 0;
  return backoffMs[Math.min(Math.max(deliveryCount, 1), backoffMs.length) - 1];
}
