import type { ConsumerBinding, EventContext } from "./event-handler.js";
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

/**
 * Pairs a generated consumers map with an object implementing the generated
 * handlers interface, key by key, into the bindings `startConsumers` takes.
 * Throws when a handler is missing, so a new subscription cannot go unhandled.
 */
export function bindConsumers<C extends ConsumerMap>(consumers: C, handlers: HandlersFor<C>): ConsumerBinding<any>[] {
  return Object.entries(consumers).map(([key, { spec, event }]) => {
    const handler = (handlers as Record<string, unknown>)[key];
    if (typeof handler !== "function") throw new Error(`bindConsumers: no handler for ${key} (consumer ${spec.durable})`);
    return { spec, descriptor: event, handle: (message: unknown, context: EventContext) => handler.call(handlers, message, context) };
  });
}
