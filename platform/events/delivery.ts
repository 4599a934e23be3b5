/*
 * The consumer pipeline's vocabulary: a delivered message, what becomes of
 * it, and middleware as `(next) => handler` wrappers, one concern each.
 */
import type { Transaction } from "../sql/index.js";
import type { TraceHeaders } from "./trace-context.js";

/** One message as a durable consumer received it, before decoding. */
export interface Delivery {
  /** Durable consumer name. */
  readonly consumer: string;
  readonly stream: string;
  readonly subject: string;
  readonly streamSequence: number;
  /** 1 on the first delivery. */
  readonly deliveryCount: number;
  /**
   * A redelivery's attempt, counted in the database before it ran (the
   * consumer runs a redelivery alone, see consumer.ts): an attempt whose
   * process died before it settled counts too, so an event that kills its
   * process is not delivered for ever. Undefined on a first delivery, whose
   * attempt is counted only when it fails.
   */
  readonly attempt?: number;
  /**
   * With `attempt`: the reason an earlier delivery was decided a dead letter
   * for, when filing it did not complete; it is filed with this reason.
   */
  readonly deadLetterReason?: string;
  readonly headers: Readonly<Record<string, string>>;
  /**
   * Every value, in the order received, of each header the message carries
   * more than once (`headers` holds the first): undefined when there are none.
   */
  readonly repeatedHeaders?: Readonly<Record<string, readonly string[]>>;
  readonly data: Uint8Array;
  /** When JetStream stored the message. */
  readonly storedAt: Date;
  /**
   * The trace context the handler continues: its consumer span's, set by the
   * tracing step; without it, the event's own (its `traceparent` header).
   */
  readonly trace?: TraceHeaders;
}

/**
 * What becomes of a delivery once its transaction has committed: ack
 * removes it from the consumer's pending set; retry asks for redelivery
 * after a delay; deadLetter files it in the dead letter stream with the
 * reason, then acks it (or retries, when filing fails).
 */
export type Settlement =
  | { readonly kind: "ack" }
  | {
      readonly kind: "retry";
      readonly delayMs: number;
      /** Why, when an attempt failed: its error's message, which the delivery's span reports. */
      readonly reason?: string;
    }
  | {
      readonly kind: "deadLetter";
      readonly reason: string;
      /**
       * Called once the dead letter is in the dead letter stream, and not
       * when it was there already. A filing that fails (NATS away) is
       * retried by redelivery and decided again, so what should count each
       * event once counts here, not at the commit.
       */
      readonly filed?: () => void;
      /** The trace context of the consumer span of the attempt that decided it (`Delivery.trace`), for its log line. */
      readonly trace?: TraceHeaders;
    };

/**
 * Handles one delivery inside the transaction of its batch: resolves with
 * its settlement, or rejects to let an outer middleware decide. The
 * consumer settles each delivery after the commit.
 */
export type DeliveryHandler = (delivery: Delivery, tx: Transaction) => Promise<Settlement>;

/**
 * Wraps a handler with one concern (retry, dead letter, inbox, metrics, ...).
 * A delivery may pass through more than once before its batch commits (the
 * batch runs again after a failing event or a write conflict), so what
 * should happen once per delivery (counting it, say) is registered with
 * `tx.afterCommit`.
 */
export type DeliveryMiddleware = (next: DeliveryHandler) => DeliveryHandler;

/**
 * An event that can never be processed (undecodable, wrong type, no id, or
 * invalid by the contract): retrying is pointless, so it goes to the dead
 * letter stream at once. Handlers may throw it too.
 */
export class UnprocessableEventError extends Error {
  override readonly name: string = "UnprocessableEventError";
}

/**
 * The first CloudEvents attribute (a `ce-` header) the delivery carries more
 * than once with different values, or undefined. Each attribute has one
 * value (CloudEvents): readers differ on which of several they take
 * (nats.js and nats.go the first, nats-py the last), so consumers in two
 * languages would see two different events in one message.
 */
export function repeatedAttribute(delivery: Delivery): string | undefined {
  const repeats = delivery.repeatedHeaders;
  const repeated = repeats && Object.keys(repeats).find((name) => /^ce-/i.test(name) && repeats[name].some((value) => value !== repeats[name][0]));
  return repeated ?? attributeSpelledTwice(delivery.headers);
}

/**
 * A `ce-` header the headers give under two spellings of its name (`ce-type`
 * and `CE-Type`) with different values, or undefined: the same attribute
 * twice to a reader that ignores case, as headerValue does when the
 * lower-case name is missing. One of two such spellings is not in lower
 * case, so the usual event, its names in lower case, costs a look at each
 * name and no allocation. Otherwise the names are grouped by their spelling
 * in lower case, in one pass: comparing each name with every other took a
 * message of 3,800 `CE-A0000`-like headers (60 KB) about 4 s of the
 * consumer's event loop, every gRPC call of the service waiting meanwhile.
 */
function attributeSpelledTwice(headers: Readonly<Record<string, string>>): string | undefined {
  let spelledOtherwise: string | undefined;
  for (const name in headers) {
    if (isAttributeName(name) && name !== name.toLowerCase()) {
      spelledOtherwise = name;
      break;
    }
  }
  if (spelledOtherwise === undefined) return undefined;
  // Per spelling in lower case: the first value met, and whether another differs from it.
  const values = new Map<string, { readonly first: string; differ: boolean }>();
  for (const name in headers) {
    if (!isAttributeName(name)) continue;
    const key = asciiLowerCase(name);
    const seen = values.get(key);
    if (!seen) values.set(key, { first: headers[name], differ: false });
    else if (seen.first !== headers[name]) seen.differ = true;
  }
  // Each spelling of a name given two values differs from another of them: the first not in lower case is named.
  for (const name in headers) {
    if (isAttributeName(name) && name !== name.toLowerCase() && values.get(asciiLowerCase(name))!.differ) return name;
  }
  return undefined;
}

/** Whether `name` begins with `ce-` in any case. */
function isAttributeName(name: string): boolean {
  return name.length > 3 && (name.charCodeAt(0) | 32) === 99 && (name.charCodeAt(1) | 32) === 101 && name.charCodeAt(2) === 45;
}

/** `name` with A to Z in lower case and every other character as it is: two names a reader that ignores ASCII case takes for one give one key. */
function asciiLowerCase(name: string): string {
  return name.replace(/[A-Z]+/g, (letters) => letters.toLowerCase());
}

/** Why a delivery that repeats `name` (see repeatedAttribute) is refused, for its dead letter. */
export function repeatedAttributeProblem(delivery: Delivery, name: string): string {
  const type = headerValue(delivery.headers, "ce-type") ?? "event";
  return `the ${type} message carries ${name} more than once, with different values: consumers in other languages may read another value than this one, so it is refused (a CloudEvents attribute is sent once)`;
}

/** A header by name, ignoring case: other publishers may capitalise CloudEvents headers. */
export function headerValue(headers: Readonly<Record<string, string>>, name: string): string | undefined {
  if (name in headers) return headers[name];
  // Several headers an event may lack are asked for on every delivery (tracestate, ce-traceparent):
  // the scan allocates nothing and lower-cases only names of the same length.
  let lower: string | undefined;
  for (const key in headers) if (key.length === name.length && key.toLowerCase() === (lower ??= name.toLowerCase())) return headers[key];
  return undefined;
}

/**
 * The event's writes met another transaction's locks: they lost a deadlock
 * or serialization conflict, or waited longer than a batch may (another
 * instance's batch holding the same rows). Its savepoint is undone; the
 * consumer then commits the events before it and starts the next
 * transaction with this one, or, when the conflict makes the whole
 * transaction void, runs the batch again. Middleware passes it on untouched.
 */
export class BatchConflictError extends Error {
  override readonly name: string = "BatchConflictError";
  constructor(cause: unknown, message = "the event's writes met a concurrent transaction's locks") {
    super(message, { cause });
  }
}

/**
 * An event failed in a transaction whose events ran without a savepoint each
 * (the fast way, see `noSavepointStep`): its writes cannot be undone alone,
 * so the consumer rolls the transaction back and runs its events again, each
 * in a savepoint. Middleware passes it on untouched, as any batch conflict.
 */
export class SavepointNeededError extends BatchConflictError {
  override readonly name: string = "SavepointNeededError";
  /**
   * The delivery that failed (its stream sequence): the run with savepoints
   * gives it this error instead of running it again. Undefined when whose
   * failure it was is not known (a statement an earlier event sent ahead
   * failed with this one's): every event then runs again.
   */
  constructor(
    cause: unknown,
    readonly streamSequence: number | undefined,
  ) {
    // Said as what failed: it read as a lock conflict, which it is not, on the spans of failed attempts.
    super(cause, `the event failed in a transaction without savepoints, run again with one: ${cause instanceof Error ? cause.message : String(cause)}`);
  }
}
