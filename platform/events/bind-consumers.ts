import type { BatchLocks, ConsumerBinding, EventContext } from "./event-handler.js";
import type { Transaction } from "../sql/index.js";
import type { ConsumerSpec, EventDescriptor } from "./types.js";

/**
 * The shape of a generated consumers map: each handler name pairs a consumer
 * spec with its event's descriptor (`any`: each entry has its own event type).
 */
export type ConsumerMap = Readonly<Record<string, { readonly spec: ConsumerSpec; readonly event: EventDescriptor<any> }>>;

/** The event type a descriptor carries. */
export type EventOf<D> = D extends EventDescriptor<infer T> ? T : never;

/** One handler per entry of a consumers map, with the event type of that entry. */
export type HandlersFor<C extends ConsumerMap> = { readonly [K in keyof C]: (event: EventOf<C[K]["event"]>, context: EventContext) => Promise<void> | void };

/** For some entries of a consumers map, the locks a batch of that entry's events takes first (see BatchLocks). */
export type BatchLocksFor<C extends ConsumerMap> = { readonly [K in keyof C]?: BatchLocks<EventOf<C[K]["event"]>> };

/**
 * Pairs a generated consumers map with an object implementing the generated
 * handlers interface, key by key, into the bindings `startConsumers` takes,
 * each with its entry of `batchLocks` when it has one. Throws when a handler
 * is missing, so a new subscription cannot go unhandled, and when
 * `batchLocks` names an entry the map does not have.
 */
export function bindConsumers<C extends ConsumerMap>(consumers: C, handlers: HandlersFor<C>, batchLocks?: BatchLocksFor<C>): ConsumerBinding<any>[] {
  for (const key of Object.keys(batchLocks ?? {})) {
    if (!Object.hasOwn(consumers, key)) throw new Error(`bindConsumers: batch locks for ${key}, which is no consumer of this service`);
  }
  return Object.entries(consumers).map(([key, { spec, event }]) => {
    const handler = (handlers as Record<string, unknown>)[key];
    if (typeof handler !== "function") throw new Error(`bindConsumers: no handler for ${key} (consumer ${spec.durable})`);
    const lockBatch = (batchLocks as Record<string, BatchLocks<unknown> | undefined> | undefined)?.[key];
    if (lockBatch !== undefined && typeof lockBatch !== "function") throw new Error(`bindConsumers: the batch locks for ${key} are not a function`);
    return {
      spec,
      descriptor: event,
      handle: (message: unknown, context: EventContext) => handler.call(handlers, message, context),
      ...(lockBatch && { lockBatch: (events: readonly unknown[], tx: Transaction) => lockBatch.call(batchLocks, events, tx) }),
    };
  });
}
