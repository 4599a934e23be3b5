/*
 * Spans of the event runtime, recorded only while tracing is on (see
 * platform/tracing): one producer span when an event is written to the
 * outbox, whose trace context the event carries; one send span from the
 * outbox write to JetStream's answer, child of the producer span; one
 * consumer span per delivery, child of the producer span, whose trace
 * context the events its handler emits carry. No OpenTelemetry
 * instrumentation exists for nats.js; these follow the messaging semantic
 * conventions. With tracing off each function returns at once.
 */
import type { Attributes, Span } from "@opentelemetry/api";
import { activeTracer, linksToParent, parentContext, SpanKind, spanError, traceHeadersOf } from "../tracing/index.js";
import { eventHeaders, type EncodedEvent } from "./cloud-events.js";
import { headerValue, type DeliveryMiddleware } from "./delivery.js";
import type { PublishOutcome } from "./publish-window.js";
import type { TraceHeaders } from "./trace-context.js";
import type { ConsumerSpec } from "./types.js";
import type { Transaction } from "../sql/index.js";

/** A producer span just started: the trace context its event is to carry, and how to end it. */
export interface ProducerSpan {
  readonly trace: TraceHeaders;
  /** Ends the span with the event staged in `tx`, exported once `tx` commits (not at all if it rolls back). */
  written(event: EncodedEvent, tx: Transaction): void;
  /** Ends the span with the error that stopped the event's writing. */
  failed(event: EncodedEvent | undefined, err: unknown): void;
}

/** Starts the producer span of an event of `type` about to be written, child of `parent`; undefined when tracing is off. */
export function startProducerSpan(type: string, parent: Partial<TraceHeaders> | undefined): ProducerSpan | undefined {
  const tracer = activeTracer();
  if (!tracer) return undefined;
  const span = tracer.startSpan(`create ${type}`, { kind: SpanKind.PRODUCER, attributes: { "messaging.system": "nats", "messaging.operation.type": "create", "messaging.operation.name": "create", "cloudevents.event_type": type } }, parentContext(parent));
  const describe = (event: EncodedEvent) =>
    span.setAttributes({ "messaging.destination.name": event.subject, "messaging.message.id": event.id, "cloudevents.event_id": event.id, "cloudevents.event_source": event.headers[eventHeaders.source] });
  return {
    trace: traceHeadersOf(span),
    written(event, tx) {
      describe(event);
      endOnCommit(span, tx);
    },
    failed(event, err) {
      if (event) describe(event);
      failed(span, err);
      span.end();
    },
  };
}

/** What the send span of one outbox row needs. */
export interface SentRow {
  readonly eventId: string;
  readonly subject: string;
  /** The NATS header block as stored. */
  readonly headers: Uint8Array;
  /** When the event was written to the outbox (ms since the epoch). */
  readonly createdAt: number;
}

const lineOf = (name: string) => new RegExp(`\r\n${name}: ([^\r]*)\r\n`);
const storedLines = { traceparent: lineOf(eventHeaders.traceparent), tracestate: lineOf(eventHeaders.tracestate), type: lineOf(eventHeaders.type) };

/**
 * Records the send span of one outbox row once JetStream has answered for
 * it: from the outbox write to the answer (the wait in the outbox and the
 * publish), child of the event's producer span, read from the stored headers.
 * Returns a failed send's span context, for the line that tells the
 * failure; undefined for one that succeeded, and while tracing is off.
 */
export function recordSend(row: SentRow, outcome: PublishOutcome): TraceHeaders | undefined {
  const tracer = activeTracer();
  if (!tracer) return undefined;
  const block = Buffer.from(row.headers.buffer, row.headers.byteOffset, row.headers.byteLength).toString("latin1");
  const parent = { traceparent: storedLines.traceparent.exec(block)?.[1], tracestate: storedLines.tracestate.exec(block)?.[1] };
  const type = storedLines.type.exec(block)?.[1] ?? row.subject;
  const attributes: Attributes = {
    "messaging.system": "nats",
    "messaging.operation.type": "send",
    "messaging.operation.name": "publish",
    "messaging.destination.name": row.subject,
    "messaging.message.id": row.eventId,
  };
  if (outcome.ok) attributes["concord.outbox.duplicate"] = outcome.duplicate;
  const span = tracer.startSpan(`send ${type}`, { kind: SpanKind.CLIENT, startTime: row.createdAt, attributes }, parentContext(parent));
  if (outcome.ok) {
    span.end();
    return undefined;
  }
  span.setStatus({ code: spanError, message: outcome.error });
  span.end();
  return traceHeadersOf(span);
}

/**
 * The consumer's tracing step, outermost in its pipeline while tracing is
 * on (undefined when off): one span per delivery, child of the event's
 * producer span and linked to it, covering retries, inbox and handler; the handler's events
 * continue the span's trace (`delivery.trace`). Exported once the batch's
 * transaction commits: a run rolled back to go again has none.
 */
export function traceDeliveries(spec: ConsumerSpec): DeliveryMiddleware | undefined {
  const tracer = activeTracer();
  if (!tracer) return undefined;
  return (next) => async (delivery, tx) => {
    const headers = delivery.headers;
    const parent = {
      traceparent: headerValue(headers, eventHeaders.traceparent) ?? headerValue(headers, eventHeaders.ceTraceparent),
      tracestate: headerValue(headers, eventHeaders.tracestate) ?? headerValue(headers, eventHeaders.ceTracestate),
    };
    const eventId = headerValue(headers, eventHeaders.id);
    const context = parentContext(parent);
    const span = tracer.startSpan(
      `process ${spec.eventType}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          "messaging.system": "nats",
          "messaging.operation.type": "process",
          "messaging.operation.name": "process",
          "messaging.destination.name": delivery.subject,
          "messaging.consumer.group.name": spec.durable,
          "messaging.nats.stream": delivery.stream,
          "messaging.nats.stream_sequence": delivery.streamSequence,
          "messaging.nats.delivery_count": delivery.deliveryCount,
          ...(eventId !== undefined && { "messaging.message.id": eventId, "cloudevents.event_id": eventId }),
        },
        // Its parent too: the messaging conventions ask for the link, which viewers show where a trace is cut.
        links: linksToParent(context),
      },
      context,
    );
    const settlement = await next({ ...delivery, trace: traceHeadersOf(span) }, tx);
    span.setAttribute("concord.settlement", settlement.kind);
    // A failed attempt given back for a retry failed all the same: its span says why, as a dead letter's does.
    if (settlement.kind === "deadLetter" || (settlement.kind === "retry" && settlement.reason !== undefined)) span.setStatus({ code: spanError, message: settlement.reason });
    endOnCommit(span, tx);
    return settlement;
  };
}

/**
 * Ends `span` now, as far as its duration goes, but only once `tx` has
 * committed: a span never ended is never exported, so a run rolled back (a
 * batch run again with a savepoint per event, a transaction that failed)
 * leaves no span saying it handled or emitted what it did not.
 */
function endOnCommit(span: Span, tx: Transaction): void {
  const at = performance.now();
  tx.afterCommit(() => span.end(at));
}

function failed(span: Span, err: unknown): void {
  if (err instanceof Error) span.recordException(err);
  span.setStatus({ code: spanError, message: err instanceof Error ? err.message : String(err) });
}
