import type { MessageChecker } from "../contracts/index.js";
import type { Logger } from "../log/index.js";
import { deadLetter } from "./dead-letter.js";
import { traceDeliveries } from "./event-tracing.js";
import { BatchConflictError, SavepointNeededError, type DeliveryHandler, type DeliveryMiddleware } from "./delivery.js";
import { typedHandler, type ConsumerBinding } from "./event-handler.js";
import { createInbox, inboxStep, type BatchClaims } from "./inbox.js";
import type { Outbox } from "./outbox.js";
import { retryWithBackoff, unfinishedAttempts } from "./retry.js";
import { sourceCheck } from "./source-check.js";
import { aheadMark, CaughtStatementError, caughtStatementFailure, isDatabaseRefusingWrites, isLockTimeout, isSentAheadFailure, isWriteConflict } from "../sql/index.js";

/**
 * A failing event undoes only its own writes: everything inside runs in a
 * savepoint of the batch's transaction. Writes that lost a deadlock or a
 * serialization conflict, or waited too long for a lock, are undone too, and
 * the batch's transaction decides what follows (BatchConflictError), as when
 * the database takes no writes for now (isDatabaseRefusingWrites).
 */
export const savepointStep: DeliveryMiddleware = (next) => async (delivery, tx) => {
  try {
    return await tx.savepoint((inner) => next(delivery, inner));
  } catch (err) {
    throw isWriteConflict(err) || isLockTimeout(err) || isDatabaseRefusingWrites(err) ? new BatchConflictError(err) : err;
  }
};

/**
 * The fast way through a batch: no savepoint per event (two statements
 * fewer each), so a failing event voids the whole transaction, which the
 * consumer then runs again with `savepointStep` (SavepointNeededError).
 * Handlers rarely fail, so most batches go through once.
 */
export const noSavepointStep: DeliveryMiddleware = (next) => async (delivery, tx) => {
  // What the transaction deferred before this event is the work of the events before it.
  const since = aheadMark(tx);
  let settlement;
  try {
    settlement = await next(delivery, tx);
  } catch (err) {
    // A statement that failed first, whose error the handler caught before failing otherwise, tells whose failure it is.
    const first = caughtStatementFailure(tx) ?? err;
    // The database taking no writes is no event's doing: the batch's transaction fails and is held.
    if (isDatabaseRefusingWrites(err)) throw new BatchConflictError(err);
    if (isDatabaseRefusingWrites(first)) throw new BatchConflictError(first);
    throw new SavepointNeededError(err, ownFailure(first, delivery, since));
  }
  // A statement of this event's failed and its handler caught the error: the transaction cannot commit.
  const caught = caughtStatementFailure(tx);
  if (caught !== undefined) {
    if (isDatabaseRefusingWrites(caught)) throw new BatchConflictError(caught);
    throw new SavepointNeededError(new CaughtStatementError(caught), ownFailure(caught, delivery, since));
  }
  return settlement;
};

/**
 * The event's stream sequence when `err` is surely its own failure; not when
 * a statement sent ahead failed that the event did not send itself (an
 * earlier event's write goes with this event's first statement), nor when
 * which one failed is not known.
 */
function ownFailure(err: unknown, delivery: { readonly streamSequence: number }, since: number | undefined): number | undefined {
  return isSentAheadFailure(err, since) ? undefined : delivery.streamSequence;
}

/**
 * Inside the savepoint of a batch run again after an event failed without
 * savepoints: that event fails the same way at once, its handler not run a
 * second time for one delivery; the outer steps decide (retry, dead letter).
 */
function knownFailures(failed: Map<number, unknown>): DeliveryMiddleware {
  return (next) => async (delivery, tx) => {
    if (!failed.has(delivery.streamSequence)) return next(delivery, tx);
    const err = failed.get(delivery.streamSequence);
    failed.delete(delivery.streamSequence);
    throw err;
  };
}

export interface PipelineOptions {
  readonly binding: ConsumerBinding<any>;
  readonly outbox: Outbox;
  readonly checker?: MessageChecker;
  /** The consumer's logger; the pipeline binds the consumer and stream to it unless it names the consumer already (startConsumers binds both). */
  readonly logger: Logger;
  /** A service's own steps (metrics, tracing), outermost first, around the default chain. */
  readonly middleware?: readonly DeliveryMiddleware[];
  /** The `ce-source` the stream's events must carry (its owner); not checked when not set. */
  readonly expectedSource?: string;
  /**
   * "each" (the default): every event in a savepoint of its own.
   * "none": no savepoints; a failure voids the batch (noSavepointStep), and
   * the consumer runs it again with a pipeline of "each".
   */
  readonly savepoints?: "each" | "none";
  /** With savepoints "each": errors by stream sequence, of events that failed without savepoints, given to them again. */
  readonly failed?: Map<number, unknown>;
  /** With savepoints "none": the inbox claims of the batch's transaction, which the consumer begins (see BatchClaims). */
  readonly batchClaims?: BatchClaims;
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
 *                 (or, with savepoints "none", the whole batch's are, and it runs again)
 *   inbox         an event processed already is acked without running the handler
 *   unfinished    a redelivery whose last attempt died with its process is dead-lettered, not run
 *   handler       ce-type and contract rules checked, payload decoded, the handler run
 *
 * Every step runs inside the batch's transaction; the consumer settles each
 * event once it has committed.
 */
export function consumerPipeline(options: PipelineOptions): DeliveryHandler {
  const { binding, outbox, checker } = options;
  // The steps' lines leave the consumer to the logger: bound twice, a key would be written twice on each line.
  const logger = Object.hasOwn(options.logger.bindings(), "consumer") ? options.logger : options.logger.child({ consumer: binding.spec.durable, stream: binding.spec.stream });
  const tracing = traceDeliveries(binding.spec);
  const chain: DeliveryMiddleware[] = [
    ...(tracing ? [tracing] : []),
    ...(options.middleware ?? []),
    deadLetter(),
    ...(options.expectedSource === undefined ? [] : [sourceCheck(options.expectedSource)]),
    retryWithBackoff({ maxDeliver: binding.spec.maxDeliver, backoffMs: binding.spec.backoffMs, logger }),
    ...(options.savepoints === "none" ? [noSavepointStep] : [savepointStep, ...(options.failed ? [knownFailures(options.failed)] : [])]),
    inboxStep(createInbox(), logger, options.savepoints === "none" ? options.batchClaims : undefined),
    unfinishedAttempts(binding.spec.maxDeliver),
  ];
  return chain.reduceRight<DeliveryHandler>((next, step) => step(next), typedHandler({ binding, outbox, checker }));
}
