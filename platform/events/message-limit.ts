/**
 * The largest message a contract's stream stores (its max_msg_size), from
 * what its events may be. JetStream counts a message's header block (the
 * "NATS/1.0" line and every header as sent, atomic batch headers included)
 * together with its payload against max_msg_size, and refuses a message over
 * it with err_code 10054; messages stored before a limit was set or lowered
 * stay where they are.
 */

/**
 * Room for an event's headers in its stream's limit. Concord's own come to
 * under 2 KiB: the CloudEvents headers, traceparent and a tracestate of at
 * most 512 characters (each twice, see cloud-events.ts), Nats-Msg-Id, and
 * the headers of an atomic batch (publish-window.ts); the rest is for
 * another producer's.
 */
export const eventHeaderBytes = 4 * 1024;

/**
 * Room for what a dead letter adds to the event it files (dead-letter.ts):
 * a reason of at most 1,024 characters (3 KiB in UTF-8), the source subject
 * (at most 4 KiB, the server's max_control_line), the stream and consumer
 * names, sequence, delivery count and time, and its own Nats-Msg-Id. The
 * event's own headers are counted in its stream's limit already. A dead
 * letter over the limit all the same is filed without its payload, as one
 * over the server's max_payload is.
 */
export const deadLetterHeaderBytes = 12 * 1024;

/**
 * The max_msg_size of a stream whose event types' payloads may take up to
 * `payloadLimits` bytes each (sizeLimit: what a consumer decodes of each):
 * the largest plus `eventHeaderBytes`. 0, no limit, when one of them is
 * unbounded (a contract that leaves a string, list or map open) or there
 * are none: an event the contract allows is never refused.
 */
export function streamMessageBytes(payloadLimits: readonly number[]): number {
  if (payloadLimits.length === 0 || !payloadLimits.every(Number.isFinite)) return 0;
  return Math.max(...payloadLimits) + eventHeaderBytes;
}

/**
 * The max_msg_size of the dead letter stream for consumers of `streams`:
 * the largest of theirs plus `deadLetterHeaderBytes`, so that every event a
 * stream takes can be filed whole; 0, no limit, when one of them has none
 * or its spec does not say.
 */
export function deadLetterMessageBytes(streams: ReadonlyArray<{ readonly maxMessageBytes?: number }>): number {
  const limits = streams.map((s) => s.maxMessageBytes ?? 0);
  if (limits.length === 0 || limits.some((limit) => limit <= 0)) return 0;
  return Math.max(...limits) + deadLetterHeaderBytes;
}
