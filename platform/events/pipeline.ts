import type { MessageChecker } from "../contracts/index.js";
import type { Logger } from "../log/index.js";
import { deadLetter } from "./dead-letter.js";
import { traceDeliveries } from "./event-tracing.js";
import { BatchConflictError, type DeliveryHandler, type DeliveryMiddleware } from "./delivery.js";
import { typedHandler, type ConsumerBinding } from "./event-handler.js";
import { createInbox, inboxStep } from "./inbox.js";
import type { Outbox } from "./outbox.js";
import { retryWithBackoff } from "./retry.js";
import { sourceCheck } from "./source-check.js";
import { isLockTimeout, isWriteConflict } from "../sql/index.js";

/**
 * A failing event undoes only its own writes: everything inside runs in a
 * savepoint of the batch's transaction. Writes that lost a deadlock or a
 * serialization conflict, or waited too long for a lock, are undone too, and
 * the batch's transaction decides what follows (BatchConflictError).
 */
export const savepointStep: DeliveryMiddleware = (next) => async (delivery, tx) => {
  try {
    return await tx.savepoint((inner) => next(delivery, inner));
  } catch (err) {
    throw isWriteConflict(err) || isLockTimeout(err) ? new BatchConflictError(err) : err;
  }
};

export interface PipelineOptions {
  readonly binding: ConsumerBinding<any>;
  readonly outbox: Outbox;
  readonly checker?: MessageChecker;
  readonly logger: Logger;
  /** A service's own steps (metrics, tracing), outermost first, around the default chain. */
  readonly middleware?: readonly DeliveryMiddleware[];
  /** The `ce-source` the stream's events must carry (its owner); not checked when not set. */
  readonly expectedSource?: string;
}

/**
 * The pipeline of one consumer, outermost first: the tracing step while
 * tracing is on (a consumer span per delivery, see event-tracing.ts), the
 * service's own middleware, then the default chain:
 *
 *   dead letter   what is left after retries is settled as a dead letter
 *   source        an event whose ce-source is not its stream's owner is dead-lettered at once
 *   retry         a failed attempt is retried with the spec's backoff, up to max_deliver
 *   savepoint     the event's writes are undone when anything inside fails
 *   inbox         an event processed already is acked without running the handler
 *   handler       ce-type and contract rules checked, payload decoded, the handler run
 *
 * Every step runs inside the batch's transaction; the consumer settles each
 * event once it has committed.
 */
export function consumerPipeline(options: PipelineOptions): DeliveryHandler {
  const { binding, outbox, checker, logger } = options;
  const tracing = traceDeliveries(binding.spec);
  const chain: DeliveryMiddleware[] = [
    ...(tracing ? [tracing] : []),
    ...(options.middleware ?? []),
    deadLetter(),
    ...(options.expectedSource === undefined ? [] : [sourceCheck(options.expectedSource)]),
    retryWithBackoff({ maxDeliver: binding.spec.maxDeliver, backoffMs: binding.spec.backoffMs, logger }),
    savepointStep,
    inboxStep(createInbox(), logger),
  ];
  return chain.reduceRight<DeliveryHandler>((next, step) => step(next), typedHandler({ binding, outbox, checker }));
}
