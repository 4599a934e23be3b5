import { OrderCancelledEvent } from "../../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import type { Outbox } from "../../../platform/events/index.js";
import type { Logger } from "../../../platform/log/index.js";
import { checkOptions, positiveInteger } from "../../../platform/options/index.js";
import { startPeriodic } from "../../../platform/tasks/index.js";
import { type Database, isDatabaseRefusingWrites, isLockTimeout, limitLockWaits } from "../../../platform/sql/index.js";
import { expirePending, type OrderRecord, pendingTimeoutReason } from "../domain/order.js";
import type { OrderStore, PendingCursor } from "../store/order-store.js";

export interface SagaTimeoutOptions {
  readonly db: Database;
  readonly store: OrderStore;
  readonly outbox: Outbox;
  /** How long an order may stay PENDING after it entered PENDING (placed, or its lines changed). */
  readonly timeoutMs: number;
  /** How often timed-out orders are looked for. Default `sweepIntervalOf(timeoutMs)`. */
  readonly intervalMs?: number;
  /** Most orders read at once; each is cancelled in a transaction of its own. Default 50. */
  readonly batchSize?: number;
  /** Called once for each order cancelled, after its transaction committed (a metric's counter). */
  readonly onTimedOut?: () => void;
  readonly logger: Logger;
  readonly now?: () => number;
}

/** The order side of the saga's timeout: cancels orders the product service never answered for. */
export interface SagaTimeout {
  /** Cancels every order whose time ran out, one transaction each; resolves with how many it cancelled. One sweep at a time: a call during one joins it. */
  sweep(): Promise<number>;
  /** Stops the timer, and a sweep under way after its current order. Safe to call twice. */
  stop(): Promise<void>;
}

/** Most order ids a sweep's warning names (`orderIds`); its count covers the rest. */
const namedOrdersMax = 20;

/** How long cancelling an order waits for its row (PostgreSQL), which another transaction may hold. */
const orderLockWaitMs = 1_000;

/**
 * An event in the outbox this long means publishing lags (NATS away, the
 * relay held up): the orders placed meanwhile have not reached the product
 * service, which answers within moments once they do.
 */
export const publishingLagMs = 30_000;

/** A tenth of the timeout, within 1 s and 60 s: an order is cancelled at most that long after its time ran out. */
export function sweepIntervalOf(timeoutMs: number): number {
  return Math.min(60_000, Math.max(1_000, Math.floor(timeoutMs / 10)));
}

/**
 * Every `intervalMs`, the PENDING orders that entered PENDING `timeoutMs`
 * ago or longer are cancelled, as CancelOrder cancels them: in one
 * transaction each, the order written only if its version is still the one
 * read, with its OrderCancelled in the outbox, so the product service
 * releases whatever it holds for the order (or, its OrderPlaced still to
 * come, reserves nothing for it). An order that changed in between (its
 * answer came, its customer cancelled it or changed its lines, another
 * instance's sweep took it), or whose row another transaction holds for
 * over a second, is left as it is: several instances on one database may
 * sweep at once, and one of them wins each order. A sweep
 * that fails (the database away) is logged once until one succeeds again.
 * While the outbox holds an event for publishingLagMs or more, and for a
 * timeout after this process last found it so (at its start too, before its
 * relay publishes what an earlier process left), no order is cancelled: an
 * outage of NATS longer than the timeout would otherwise cancel every
 * order placed during it, whose OrderPlaced never left.
 */
export function startSagaTimeout(options: SagaTimeoutOptions): SagaTimeout {
  checkOptions("startSagaTimeout", options, ["db", "store", "outbox", "timeoutMs", "intervalMs", "batchSize", "onTimedOut", "logger", "now"]);
  const { db, store, outbox, timeoutMs, onTimedOut } = options;
  const intervalMs = options.intervalMs ?? sweepIntervalOf(timeoutMs);
  const batchSize = options.batchSize ?? 50;
  const now = options.now ?? Date.now;
  for (const [option, v] of Object.entries({ timeoutMs, intervalMs, batchSize })) positiveInteger("startSagaTimeout", option, v, v);
  const logger = options.logger.child({ component: "saga-timeout" });
  const reason = pendingTimeoutReason(timeoutMs);

  const timeOut = async (order: OrderRecord): Promise<boolean> => {
    try {
      return await db.transaction(async (tx) => {
        // A row another transaction holds for longer is being changed (its answer, its customer): the next sweep sees what became of it.
        await limitLockWaits(tx, orderLockWaitMs);
        // The order as the batch read it: a change since moved its version, and the replace below writes nothing.
        const cancelled = expirePending(order, timeoutMs, now());
        if (!cancelled) return false;
        if (!(await store.replace(tx, cancelled, order.version))) return false;
        outbox.add(tx, OrderCancelledEvent, { orderId: cancelled.id, customerId: cancelled.customerId, reason });
        if (onTimedOut) tx.afterCommit(onTimedOut);
        return true;
      });
    } catch (err) {
      if (isLockTimeout(err)) return false;
      throw err;
    }
  };

  /** When this process last found publishing lagging (see publishingLagMs). */
  let lagSeenAt: number | undefined;
  /** Whether the sweep is to wait: publishing lags, or did less than a timeout ago. */
  const publishingLags = async (): Promise<boolean> => {
    const oldest = await outbox.oldestAddedAt();
    const at = now();
    if (oldest !== undefined && at - oldest >= publishingLagMs) {
      if (lagSeenAt === undefined || at - lagSeenAt >= timeoutMs) {
        logger.warn(
          { waitingForMs: at - oldest },
          "the outbox holds an event not yet published for 30 s or more (NATS away, or the relay held up): no order is timed out until a timeout after it has caught up",
        );
      }
      lagSeenAt = at;
      return true;
    }
    return lagSeenAt !== undefined && at - lagSeenAt < timeoutMs;
  };
  // Events an earlier process left in the outbox (stopped or killed while NATS was away) are looked at now, before this
  // process's relay can publish them, which it does within moments of reaching NATS: the first sweep comes a tenth of
  // the timeout later, and would take the orders they are for, however old, as answered late.
  const leftByEarlierProcess = publishingLags().catch(() => false);

  const sweepAll = async (stopping: () => boolean): Promise<number> => {
    // Orders whose OrderPlaced waited in the outbox have been with the product service for less than they look.
    await leftByEarlierProcess;
    if (await publishingLags()) return 0;
    const before = now() - timeoutMs;
    let after: PendingCursor | undefined;
    let cancelled = 0;
    // The first it cancels, named in the warning: an operator looks up which orders a sweep cancelled.
    const named: string[] = [];
    // After the last order seen, not from the start again: an order skipped is not read twice in one sweep.
    while (!stopping()) {
      const batch = await store.listPendingSince(db, before, after, batchSize);
      for (const order of batch) {
        if (stopping()) break;
        let timedOut: boolean;
        try {
          timedOut = await timeOut(order);
        } catch (err) {
          // The database away fails the sweep, logged once; one order that cannot be cancelled (a transaction that keeps
          // losing to others, say) is logged and left to the next sweep, so that it does not hold back those after it.
          if (isDatabaseRefusingWrites(err)) throw err;
          logger.error({ err, orderId: order.id }, "cancelling a PENDING order out of time failed; the next sweep tries it again");
          continue;
        }
        if (timedOut) {
          cancelled++;
          if (named.length < namedOrdersMax) named.push(order.id);
          logger.debug({ orderId: order.id, pendingSince: new Date(order.pendingSince).toISOString() }, "cancelled a PENDING order out of time");
        }
      }
      if (batch.length < batchSize) break;
      after = batch.at(-1);
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (cancelled > 0) logger.warn({ cancelled, timeoutMs, orderIds: named }, `cancelled ${cancelled} PENDING orders: ${reason}`);
    return cancelled;
  };

  const task = startPeriodic({ what: "looking for PENDING orders out of time", intervalMs, run: sweepAll, logger });
  return { sweep: task.runNow, stop: task.stop };
}
