/*
 * The consumer pipeline's vocabulary: a delivered message, what becomes of
 * it, and middleware as `(next) => handler` wrappers, one concern each.
 */

/** One message as a durable consumer received it, before decoding. */
export interface Delivery {
  /** Durable consumer name. */
  readonly consumer: string;
  readonly stream: string;
  readonly subject: string;
  readonly streamSequence: number;
  /** 1 on the first delivery. */
  readonly deliveryCount: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly data: Uint8Array;
  /** When JetStream stored the message. */
  readonly storedAt: Date;
}

/** Ack removes the message from the consumer's pending set; retry asks for redelivery after a delay. */
export type Settlement = { readonly kind: "ack" } | { readonly kind: "retry"; readonly delayMs: number };

/**
 * Handles one delivery: returns its settlement, or throws to let an outer
 * middleware decide. A step that can decide at once returns the settlement
 * itself; only a step that must wait (publishing a dead letter) returns a
 * promise. The consumer settles what is known as soon as the batch commits,
 * so acks leave in the same write as the events the handlers emitted.
 */
export type DeliveryHandler = (delivery: Delivery) => Settlement | Promise<Settlement>;

/** Whether a handler's result still has to be awaited. */
export function isPending(result: Settlement | Promise<Settlement>): result is Promise<Settlement> {
  return typeof (result as Promise<Settlement>).then === "function";
}

/**
 * Runs `next` and hands its failure to `onFailure`, whether it throws at once
 * or its promise rejects later; a settlement known at once stays synchronous.
 * What middleware that acts on failures (retry, dead letter) shares.
 */
export function onFailure(
  next: DeliveryHandler,
  delivery: Delivery,
  recover: (err: unknown) => Settlement | Promise<Settlement>,
): Settlement | Promise<Settlement> {
  let result;
  try {
    result = next(delivery);
  } catch (err) {
    return recover(err);
  }
  return isPending(result) ? result.catch(recover) : result;
}

/** Wraps a handler with one concern (retry, dead letter, ...). */
export type DeliveryMiddleware = (next: DeliveryHandler) => DeliveryHandler;

/**
 * An event that can never be processed (undecodable, wrong type, no id, or
 * invalid by the contract): retrying is pointless, so it goes to the dead
 * letter stream at once. Handlers may throw it too.
 */
export class UnprocessableEventError extends Error {
  override readonly name: string = "UnprocessableEventError";
}

/** A header by name, ignoring case: other publishers may capitalise CloudEvents headers. */
export function headerValue(headers: Readonly<Record<string, string>>, name: string): string | undefined {
  if (name in headers) return headers[name];
  const lower = name.toLowerCase();
  for (const [key, value] of Object.entries(headers)) if (key.toLowerCase() === lower) return value;
  return undefined;
}
