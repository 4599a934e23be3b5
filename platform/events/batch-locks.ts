import type { MessageChecker } from "../contracts/index.js";
import type { Database, Transaction } from "../sql/index.js";
import { eventHeaders } from "./cloud-events.js";
import { headerValue, type Delivery } from "./delivery.js";
import { checkedEvent, keepLockedEvent, type ConsumerBinding } from "./event-handler.js";

/** Takes the locks of the deliveries about to run in `tx`, before the first of them runs. */
export type BatchLocker = (deliveries: readonly Delivery[], tx: Transaction) => Promise<void>;

/**
 * The consumer's side of a binding's `lockBatch`: the deliveries are checked
 * (their source too, when `expectedSource` is set) and decoded as their
 * handlers will get them, and those that pass (two at least) are handed to
 * it, and kept for their handlers' first run, which then decodes none of
 * them again. One that does not pass is left out and left to the pipeline,
 * which dead-letters it as before; so is one decided a dead letter already. Undefined when there is nothing to do: the binding has no
 * `lockBatch`, or the database is SQLite, whose one writer takes no locks.
 */
export function batchLocker(binding: ConsumerBinding<unknown>, db: Database, checker: MessageChecker | undefined, expectedSource: string | undefined): BatchLocker | undefined {
  const { lockBatch } = binding;
  if (lockBatch === undefined || db.dialect.name === "sqlite") return undefined;
  return async (deliveries, tx) => {
    const events: unknown[] = [];
    for (const delivery of deliveries) {
      if (delivery.deadLetterReason !== undefined) continue;
      if (expectedSource !== undefined && headerValue(delivery.headers, eventHeaders.source) !== expectedSource) continue;
      let event: unknown;
      try {
        event = checkedEvent(delivery, binding, checker);
      } catch {
        // Its handler never runs: the pipeline finds the same problem and dead-letters it.
        continue;
      }
      events.push(event);
      keepLockedEvent(delivery, event);
    }
    // One event's handler takes its locks in order by itself.
    if (events.length > 1) await lockBatch(events, tx);
  };
}
