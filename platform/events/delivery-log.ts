import { spanLogFields, type SpanLogFields } from "../tracing/index.js";
import { eventHeaders } from "./cloud-events.js";
import { headerValue, type Delivery } from "./delivery.js";
import { eventIdProblem } from "./inbox.js";
import type { TraceHeaders } from "./trace-context.js";

/** What ties a consumer's line about one event to the event and to its trace. */
export type DeliveryLogFields = Partial<SpanLogFields> & { readonly eventId?: string };

/**
 * The fields of a log line about `delivery`: its `ce-id` as it came, as
 * `eventId` (left out when it could not key the inbox, eventIdProblem:
 * missing, too long or not text, which the line's reason says), and the
 * `trace_id` and `span_id` of the consumer span of its attempt, `trace`
 * (the tracing step's, `Delivery.trace`), while that span records.
 */
export function deliveryLogFields(delivery: Delivery, trace: Partial<TraceHeaders> | undefined = delivery.trace): DeliveryLogFields {
  const id = headerValue(delivery.headers, eventHeaders.id);
  const span = spanLogFields(trace);
  if (eventIdProblem(id) !== undefined) return span ?? {};
  return span ? { eventId: id, ...span } : { eventId: id };
}
