import { encodeMessage, itemCountBytes, type MessageChecker } from "../contracts/index.js";
import type { Transaction } from "../sql/index.js";
import { contentTypeProblem, eventHeaders, isRfc3339Time } from "./cloud-events.js";
import { headerValue, repeatedAttribute, repeatedAttributeProblem, UnprocessableEventError, type Delivery, type DeliveryHandler } from "./delivery.js";
import { describeViolations } from "./event-rules.js";
import { eventIdOf } from "./inbox.js";
import type { Outbox } from "./outbox.js";
import { subjectFor } from "./subject.js";
import { traceparentFrom, tracestateFrom } from "./trace-context.js";
import type { ConsumerSpec, EventDescriptor } from "./types.js";

/** What a handler knows about the event besides its payload, the transaction it runs in, and how it emits events of its own. */
export interface EventContext {
  /** `ce-id`: the same on every redelivery and re-publish of this event; one that is a UUID in lower case (see eventIdOf). */
  readonly eventId: string;
  readonly subject: string;
  /** `ce-time`, when the event happened (the store time when the header is missing). */
  readonly time: Date;
  /** The event's trace (its consumer span's while tracing is on); emitted events continue it. */
  readonly traceparent: string;
  /** Vendor trace state that goes with `traceparent`, when the event had one. */
  readonly tracestate: string | undefined;
  /** 1 on the first delivery. */
  readonly deliveryCount: number;
  readonly streamSequence: number;
  readonly headers: Readonly<Record<string, string>>;
  /** The handler's transaction: its store calls go through it, and commit with its inbox row and the events it emits. */
  readonly tx: Transaction;
  /**
   * Adds an event to the outbox in the handler's own transaction, so it is
   * published only if the handler's effects and inbox row commit. Returns its id.
   */
  emit<U>(descriptor: EventDescriptor<U>, message: U, options?: { readonly traceparent?: string; readonly tracestate?: string }): string;
}

/**
 * Business logic for one event type, run inside the service's database
 * transaction (`context.tx`): resolve to have the event acked, throw to have
 * it retried (or `UnprocessableEventError` to dead-letter it at once). It
 * must not wait on anything outside the database.
 */
export type EventHandler<T> = (event: T, context: EventContext) => Promise<void> | void;

/**
 * Takes, at the start of a transaction that handles several events of one
 * consumer, every lock their handlers will take, in the one order all of
 * the service's transactions take them (rows sorted by key, in one
 * statement): two instances' batches then wait for each other in turn,
 * never in a circle. Given the events that pass their checks, in stream
 * order; it must not write. Run on PostgreSQL only (SQLite's one writer
 * takes no locks). Its lock waits end after a quarter of the consumer's
 * ack wait (twice what a transaction's handlers may take): what is held
 * longer is held by something else than another instance's batch, and the
 * transaction runs again without it. A lock it does not foresee is still
 * taken by the handler, and waited for as briefly as without it.
 */
export type BatchLocks<T> = (events: readonly T[], tx: Transaction) => Promise<void>;

/** One durable consumer: its spec, the descriptor of the event it takes, and the handler. */
export interface ConsumerBinding<T> {
  readonly spec: ConsumerSpec;
  readonly descriptor: EventDescriptor<T>;
  handle(event: T, context: EventContext): Promise<void> | void;
  /** Optional: the locks a batch of these events will take, taken first (see BatchLocks). */
  readonly lockBatch?: BatchLocks<T>;
}

/** Helps inference: the handler's event type comes from the descriptor. */
export function bindConsumer<T>(binding: ConsumerBinding<T>): ConsumerBinding<T> {
  return binding;
}

export interface TypedHandlerOptions<T> {
  readonly binding: ConsumerBinding<T>;
  readonly outbox: Outbox;
  /** The contracts' rules, which every consumed event must pass; one that breaks them is unprocessable. */
  readonly checker?: MessageChecker;
}

/**
 * The innermost step of the pipeline: checks `ce-type`, `ce-specversion`,
 * `ce-time`, `ce-datacontenttype` and `content-type`, decodes, checks the payload against its contract's
 * rules and the subject against the one its fields make, and runs the
 * handler. Problems with the message itself throw `UnprocessableEventError`.
 */
export function typedHandler<T>(options: TypedHandlerOptions<T>): DeliveryHandler {
  const { binding, outbox, checker } = options;
  return async (delivery, tx) => {
    const event = (takeLockedEvent(delivery) as T | undefined) ?? checkedEvent(delivery, binding, checker);
    const eventId = eventIdOf(delivery) ?? "";
    const time = new Date(headerValue(delivery.headers, eventHeaders.time) ?? Number.NaN);
    const given = delivery.trace?.traceparent ?? headerValue(delivery.headers, eventHeaders.traceparent) ?? headerValue(delivery.headers, eventHeaders.ceTraceparent);
    const traceparent = traceparentFrom(given);
    const tracestate = traceparent !== given ? undefined : tracestateFrom(delivery.trace ? delivery.trace.tracestate : (headerValue(delivery.headers, eventHeaders.tracestate) ?? headerValue(delivery.headers, eventHeaders.ceTracestate)));
    await binding.handle(event, new DeliveryContext(delivery, eventId, Number.isNaN(time.getTime()) ? delivery.storedAt : time, traceparent, tracestate, tx, outbox));
    return { kind: "ack" };
  };
}

/** Events a batch's locks were taken for (batch-locks.ts), decoded and checked already, until their handlers run. */
const lockedEvents = new WeakMap<Delivery, unknown>();

/**
 * Keeps `event`, checked and decoded from `delivery` for the batch's locks,
 * for its handler's first run, which then neither checks nor decodes it
 * again. A run after a rollback decodes it afresh.
 */
export function keepLockedEvent(delivery: Delivery, event: unknown): void {
  lockedEvents.set(delivery, event);
}

function takeLockedEvent(delivery: Delivery): unknown {
  const event = lockedEvents.get(delivery);
  if (event !== undefined) lockedEvents.delete(delivery);
  return event;
}

/**
 * The delivery's event, decoded, once its `ce-type`, `ce-specversion`,
 * `ce-time`, `ce-datacontenttype` and `content-type`, contract rules and subject are checked; throws
 * `UnprocessableEventError` naming what is wrong with the message.
 */
export function checkedEvent<T>(delivery: Delivery, binding: ConsumerBinding<T>, checker: MessageChecker | undefined): T {
  const { spec, descriptor } = binding;
  const repeated = repeatedAttribute(delivery);
  if (repeated !== undefined) throw new UnprocessableEventError(repeatedAttributeProblem(delivery, repeated));
  const type = headerValue(delivery.headers, eventHeaders.type);
  if (type !== spec.eventType) {
    throw new UnprocessableEventError(`consumer ${spec.durable} takes ${spec.eventType}, but the message's ce-type is ${type === undefined ? "missing" : JSON.stringify(type)}`);
  }
  const version = headerValue(delivery.headers, eventHeaders.specversion);
  if (version !== "1.0") throw new UnprocessableEventError(`the ${type} message is not a CloudEvents 1.0 event: its ce-specversion is ${version === undefined ? "missing" : JSON.stringify(version)}`);
  // Optional, but when present RFC 3339 (CloudEvents 1.0), as a declared content type must be one this consumer reads:
  // a time no one can read is the producer's mistake, and the handler would be told another (the store time, or the
  // 2 March that JavaScript makes of 30 February).
  const time = headerValue(delivery.headers, eventHeaders.time);
  if (time !== undefined && !isRfc3339Time(time)) {
    throw new UnprocessableEventError(`the ${type} message's ce-time ${JSON.stringify(time.length > 64 ? `${time.slice(0, 64)}...` : time)} is not an RFC 3339 time (such as 2026-12-07T19:42:40.123Z)`);
  }
  // The binding's own header for datacontenttype is the plain content-type (CloudEvents SDKs write that alone), so
  // a payload either one declares as something else is not read as protobuf: a JSON event failed as "premature EOF",
  // and protobuf declared JSON was handled here and not by a consumer that believes the header.
  for (const header of [eventHeaders.dataContentType, eventHeaders.contentType]) {
    const contentType = headerValue(delivery.headers, header);
    const problem = contentType === undefined ? undefined : contentTypeProblem(contentType, type);
    if (problem !== undefined) throw new UnprocessableEventError(`the ${type} payload is declared ${JSON.stringify(contentType)} (${header}), which ${problem}`);
  }
  // Cheap limits first: a payload larger than its contract allows is not decoded, as a request is not (bind-service.ts).
  if (checker) {
    const oversize = oversizeProblem(checker, type, delivery.data);
    if (oversize !== undefined) throw new UnprocessableEventError(oversize);
  }
  // What ts-proto's decoder would read past or stop at without a word (field number 0, say: see wire-shape.ts).
  const malformed = checker?.wireProblem(type, delivery.data);
  if (malformed !== undefined) throw new UnprocessableEventError(`the ${type} payload cannot be decoded: ${malformed}`);
  let event: T;
  try {
    event = descriptor.codec.decode(delivery.data);
  } catch (err) {
    // A value the generated types cannot carry (an int64 beyond 2^53) is named by the full check.
    const named = checker?.check(type, delivery.data) ?? [];
    const why = named.length > 0 ? `breaks its contract's rules: ${describeViolations(named)}` : `cannot be decoded: ${(err as Error).message}`;
    throw new UnprocessableEventError(`the ${type} payload ${why}`, { cause: err });
  }
  // The subject its producer made from its fields as they came, before their UUIDs are put in lower case.
  let expected: string | undefined;
  let noSubject: unknown;
  try {
    expected = subjectFor(descriptor, event);
  } catch (err) {
    noSubject = err;
  }
  // Ids in the case the services issue and store them, as a request's are (bind-service.ts): an event from a
  // producer that writes UUIDs in upper case names the same order or product, and its handler finds it.
  const lowered = checker?.lowerCaseUuids(type, event) ?? false;
  const violations = checker && (checker.checkDecoded(type, event) ?? checker.check(type, lowered ? encodeMessage(descriptor.codec, event) : delivery.data));
  if (violations && violations.length > 0) throw new UnprocessableEventError(`the ${type} event breaks its contract's rules: ${describeViolations(violations)}`);
  // Consumers are routed by subject: one that does not match the event's own fields was forged or misrouted.
  if (expected === undefined) throw new UnprocessableEventError(`the ${type} event has no subject of its own: ${(noSubject as Error).message}`, { cause: noSubject });
  // A producer that lowered its ids for the subject alone made it from the same fields.
  if (expected !== delivery.subject && !(lowered && subjectFor(descriptor, event) === delivery.subject)) {
    throw new UnprocessableEventError(`the ${type} event came on ${delivery.subject}, but its fields make its subject ${expected}`);
  }
  return event;
}

/**
 * Why the payload of an event of `type` is refused for its size before it
 * is decoded, or undefined when it is within its type's limit: twice the
 * largest its contract allows plus 1 KiB (room for fields a newer producer
 * adds), at least 4 KiB, none when the contract leaves the size open. Every
 * item of a list is an object once decoded: 450,000 empty lines of an
 * OrderPlaced (900 KB) took the product service past its heap limit, and
 * every redelivery again. A list over its max_items is still named when the
 * payload is at most a few times the limit and well formed. A type without
 * a limit is guarded by the wire check alone, which refuses a list of
 * messages far over its max_items before anything is decoded.
 */
function oversizeProblem(checker: MessageChecker, type: string, data: Uint8Array): string | undefined {
  const limit = checker.sizeLimitOf(type);
  if (data.byteLength <= limit) return undefined;
  // Decoded to name a list over its limit only when well formed, its lists not far over it (see wire-shape.ts).
  if (data.byteLength <= itemCountBytes(limit)) {
    const malformed = checker.wireProblem(type, data);
    if (malformed !== undefined) return `the ${type} payload cannot be decoded: ${malformed}`;
    const overfull = checker.checkItemCounts(type, data);
    if (overfull.length > 0) return `the ${type} event breaks its contract's rules: ${describeViolations(overfull)}`;
  }
  return `the ${type} payload has ${data.byteLength} bytes, more than the ${limit} its contract allows (twice its largest valid one, plus 1 KiB for fields a newer producer adds); it is not decoded`;
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
    readonly tracestate: string | undefined,
    readonly tx: Transaction,
    private readonly outbox: Outbox,
  ) {
    this.subject = delivery.subject;
    this.deliveryCount = delivery.deliveryCount;
    this.streamSequence = delivery.streamSequence;
    this.headers = delivery.headers;
  }

  emit<U>(descriptor: EventDescriptor<U>, message: U, options?: { readonly traceparent?: string; readonly tracestate?: string }): string {
    return this.outbox.add(this.tx, descriptor, message, options?.traceparent ? options : this);
  }
}
