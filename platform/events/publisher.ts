import type { NatsConnection } from "nats";
import { encodeEvent } from "./cloud-events.js";
import { toNatsHeaders } from "./nats-internals.js";
import type { EventDescriptor } from "./types.js";
import { checkOptions, positiveInteger } from "../options/index.js";

export interface EventPublisherOptions {
  readonly nc: NatsConnection;
  /** The publishing service, sent as `ce-source`. */
  readonly source: string;
  /** How long to wait for JetStream's PubAck. Default 5 s. */
  readonly timeoutMs?: number;
}

/** What JetStream answered for one published event. */
export interface PublishedEvent {
  readonly eventId: string;
  readonly subject: string;
  readonly stream: string;
  readonly streamSequence: number;
  /** True when JetStream already held an event with this id (inside its duplicate window). */
  readonly duplicate: boolean;
}

/**
 * Publishes events straight to JetStream, outside any database transaction.
 * State changes should use the outbox instead, so that the change and its
 * events commit together; this is for tools, tests and events with no state.
 */
export interface EventPublisher {
  /** Resolves on the PubAck; rejects when the subject cannot be built or JetStream does not acknowledge. */
  publish<T>(descriptor: EventDescriptor<T>, message: T, options?: { readonly traceparent?: string; readonly tracestate?: string }): Promise<PublishedEvent>;
}

/** Creates a publisher that sends CloudEvents-headed protobuf events with their id as `Nats-Msg-Id`. */
export function createEventPublisher(options: EventPublisherOptions): EventPublisher {
  checkOptions("createEventPublisher", options, ["nc", "source", "timeoutMs"]);
  const { nc, source } = options;
  validateSource("createEventPublisher", source);
  const timeoutMs = positiveInteger("createEventPublisher", "timeoutMs", options.timeoutMs, 5_000);
  const js = nc.jetstream({ timeout: timeoutMs });
  return {
    async publish(descriptor, message, publishOptions = {}) {
      const event = encodeEvent(descriptor, message, { source, traceparent: publishOptions.traceparent, tracestate: publishOptions.tracestate });
      try {
        const ack = await js.publish(event.subject, event.payload, { msgID: event.id, headers: toNatsHeaders(event.headers) });
        return { eventId: event.id, subject: event.subject, stream: ack.stream, streamSequence: ack.seq, duplicate: ack.duplicate };
      } catch (err) {
        throw new Error(`publishing ${event.type} ${event.id} on ${event.subject} failed: ${(err as Error).message}`, { cause: err });
      }
    },
  };
}

/** `ce-source` goes into a header: it must be a non-empty single line. */
export function validateSource(factory: string, source: unknown): void {
  if (typeof source !== "string" || source.trim() === "" || /[\r\n]/.test(source)) {
    throw new Error(`${factory}: source (the publishing service's name) must be a non-empty single line, got ${JSON.stringify(source)}`);
  }
}
