import type { MessageChecker } from "../contracts/index.js";
import type { Logger } from "../log/index.js";
import { eventHeaders } from "./cloud-events.js";
import { headerValue, UnprocessableEventError, type Delivery, type DeliveryHandler } from "./delivery.js";
import { describeViolations } from "./event-rules.js";
import type { Inbox } from "./inbox.js";
import type { Outbox } from "./outbox.js";
import { traceparentFrom } from "./trace-context.js";
import type { ConsumerSpec, EventDescriptor } from "./types.js";

/** What a handler knows about the event besides its payload, and how it emits events of its own. */
export interface EventContext {
  /** `ce-id`: the same on every redelivery and re-publish of this event. */
  readonly eventId: string;
  readonly subject: string;
  /** `ce-time`, when the event happened (the store time when the header is missing). */
  readonly time: Date;
  /** The event's trace; emitted events continue it. */
  readonly traceparent: string;
  /** 1 on the first delivery. */
  readonly deliveryCount: number;
  readonly streamSequence: number;
  readonly headers: Readonly<Record<string, string>>;
  /**
   * Adds an event to the outbox in the handler's own transaction, so it is
   * published only if the handler's effects and inbox row commit. Returns its id.
   */
  emit<U>(descriptor: EventDescriptor<U>, message: U, options?: { readonly traceparent?: string }): string;
}

/**
 * Business logic for one event type. Synchronous, because it runs inside a
 * better-sqlite3 transaction: return to have the event acked, throw to have it
 * retried (or `UnprocessableEventError` to dead-letter it at once).
 */
export type EventHandler<T> = (event: T, context: EventContext) => void;

/** One durable consumer: its spec, the descriptor of the event it takes, and the handler. */
export interface ConsumerBinding<T> {
  readonly spec: ConsumerSpec;
  readonly descriptor: EventDescriptor<T>;
  handle(event: T, context: EventContext): void;
}

/** Helps inference: the handler's event type comes from the descriptor. */
export function bindConsumer<T>(binding: ConsumerBinding<T>): ConsumerBinding<T> {
  return binding;
}

export interface TypedHandlerOptions<T> {
  readonly binding: ConsumerBinding<T>;
  readonly inbox: Inbox;
  readonly outbox: Outbox;
  readonly logger: Logger;
  /** The contracts' rules, which every consumed event must pass; one that breaks them is unprocessable. */
  readonly checker?: MessageChecker;
}

/**
 * The innermost step of the pipeline: checks `ce-type` and `ce-id`, checks
 * the payload against its contract's rules, decodes, and runs the handler
 * once per event id through the inbox. Problems with the message itself
 * throw `UnprocessableEventError`.
 */
export function typedHandler<T>(options: TypedHandlerOptions<T>): DeliveryHandler {
  const { binding, inbox, outbox, logger, checker } = options;
  const { spec, descriptor } = binding;
  return (delivery) => {
    const type = headerValue(delivery.headers, eventHeaders.type);
    if (type !== spec.eventType) {
      throw new UnprocessableEventError(`consumer ${spec.durable} takes ${spec.eventType}, but the message's ce-type is ${type === undefined ? "missing" : JSON.stringify(type)}`);
    }
    const eventId = headerValue(delivery.headers, eventHeaders.id);
    if (!eventId) throw new UnprocessableEventError(`the ${type} message has no ce-id header, so it cannot be deduplicated`);
    const violations = checker?.check(type, delivery.data);
    if (violations && violations.length > 0) throw new UnprocessableEventError(`the ${type} event breaks its contract's rules: ${describeViolations(violations)}`);
    let event: T;
    try {
      event = descriptor.codec.decode(delivery.data);
    } catch (err) {
      throw new UnprocessableEventError(`the ${type} payload cannot be decoded: ${(err as Error).message}`, { cause: err });
    }
    const time = new Date(headerValue(delivery.headers, eventHeaders.time) ?? Number.NaN);
    const traceparent = traceparentFrom(headerValue(delivery.headers, eventHeaders.traceparent));
    const context = new DeliveryContext(delivery, eventId, Number.isNaN(time.getTime()) ? delivery.storedAt : time, traceparent, outbox);
    const ran = inbox.runOnce(spec.durable, eventId, () => {
      const result: unknown = binding.handle(event, context);
      if (result && typeof (result as PromiseLike<unknown>).then === "function") {
        (result as Promise<unknown>).catch?.(() => undefined);
        throw new Error(`the handler of ${spec.durable} returned a promise; handlers must be synchronous so that they run inside the inbox transaction`);
      }
    });
    if (!ran) logger.debug({ consumer: spec.durable, eventId, streamSequence: delivery.streamSequence }, "event already processed; acked without running the handler");
    return { kind: "ack" };
  };
}

/** The EventContext of one delivery; a class, so no closures are made per event. */
class DeliveryContext implements EventContext {
  readonly subject: string;
  readonly deliveryCount: number;
  readonly streamSequence: number;
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    delivery: Delivery,
    readonly eventId: string,
    readonly time: Date,
    readonly traceparent: string,
    private readonly outbox: Outbox,
  ) {
    this.subject = delivery.subject;
    this.deliveryCount = delivery.deliveryCount;
    this.streamSequence = delivery.streamSequence;
    this.headers = delivery.headers;
  }

  emit<U>(descriptor: EventDescriptor<U>, message: U, options?: { readonly traceparent?: string }): string {
    return this.outbox.add(descriptor, message, { traceparent: options?.traceparent ?? this.traceparent });
  }
}
