import type { Logger } from "../log/index.js";
import { BatchConflictError, UnprocessableEventError, type DeliveryMiddleware } from "./delivery.js";
import { countFailure } from "./inbox.js";
import { deliveryLogFields } from "./delivery-log.js";

export interface RetryOptions {
  /** Attempts in all; the error of the last one propagates (to the dead letter middleware). */
  readonly maxDeliver: number;
  /** Delay before the retry after attempt n (index n-1); the last entry repeats; none means at once. */
  readonly backoffMs: readonly number[];
  /** The consumer's (consumerPipeline), which names the consumer on its lines. */
  readonly logger: Logger;
}

/**
 * Turns a failed attempt into a delayed redelivery (a nak with delay) while
 * attempts remain. Unprocessable events, batch conflicts and the last
 * attempt's failure are passed on unchanged. Attempts are the failures
 * counted in the database (countFailure, inbox.ts): a first delivery's with
 * the settlement, a redelivery's before it runs (`Delivery.attempt`). A
 * delivery handed back without being tried (a consumer stopping) is not one.
 * Each retry is logged with the event's id and its attempt's span ids
 * (deliveryLogFields).
 */
export function retryWithBackoff(options: RetryOptions): DeliveryMiddleware {
  const { maxDeliver, backoffMs, logger } = options;
  return (next) => async (delivery, tx) => {
    try {
      return await next(delivery, tx);
    } catch (err) {
      // maxDeliver 1: one attempt in all, nothing to count.
      if (err instanceof UnprocessableEventError || err instanceof BatchConflictError || maxDeliver <= 1) throw err;
      // A redelivery's attempt was counted before it ran.
      const attempt = delivery.attempt ?? (await countFailure(tx, delivery));
      // The last: dead-lettered (the dead letter step keeps the reason with the decision).
      if (attempt >= maxDeliver) throw err;
      const delayMs = backoffDelay(backoffMs, attempt);
      logger.warn(
        { err, streamSequence: delivery.streamSequence, attempt, deliveryCount: delivery.deliveryCount, maxDeliver, retryInMs: delayMs, ...deliveryLogFields(delivery) },
        "event handler failed; retrying",
      );
      return { kind: "retry", delayMs, reason: err instanceof Error ? err.message : String(err) };
    }
  };
}

/** The delay after failed attempt `attempt` (1-based): its entry, or the last one repeated. */
export function backoffDelay(backoffMs: readonly number[], attempt: number): number {
  if (backoffMs.length === 0) return 0;
  return backoffMs[Math.min(Math.max(attempt, 1), backoffMs.length) - 1];
}

/**
 * An event whose attempts, counted before they ran, outnumber `maxDeliver`:
 * its last attempt did not settle it, so the process running it died (or
 * was stopped) before its transaction ended, each time it was tried. It is
 * not run again, or it might take the process down once more: it goes to
 * the dead letter stream. Runs inside the inbox step, so an event whose last
 * attempt committed before its process died is acked as processed. One
 * decided a dead letter before, whose filing did not complete, is filed
 * with the reason it was decided for.
 */
export function unfinishedAttempts(maxDeliver: number): DeliveryMiddleware {
  return (next) => async (delivery, tx) => {
    // Decided before, and its filing did not complete: filed with the reason it was decided for, whatever its count.
    if (delivery.deadLetterReason !== undefined) throw new UnprocessableEventError(delivery.deadLetterReason);
    if (delivery.attempt === undefined || delivery.attempt <= maxDeliver) return next(delivery, tx);
    throw new UnprocessableEventError(
      `its last attempt (${maxDeliver} of ${maxDeliver}) did not finish: the process handling it stopped before settling it (delivered ${delivery.deliveryCount} times)`,
    );
  };
}
