import { randomUUID } from "node:crypto";
import type { Msg, NatsConnection, Subscription } from "nats";
import { replyInbox, stopStatusIterator, wireHeaders } from "./nats-internals.js";

/** One event to publish: its subject, payload and NATS header block in wire form. */
export interface WireEvent {
  readonly subject: string;
  readonly payload: Uint8Array;
  readonly headers: Uint8Array;
}

/**
 * What JetStream answered for one event: stored (perhaps a duplicate of one
 * it held), or not. A permanent failure is one that sending the same bytes
 * again can never cure.
 */
export type PublishOutcome = { readonly ok: true; readonly duplicate: boolean } | { readonly ok: false; readonly error: string; readonly permanent: boolean };

/**
 * A sliding window of JetStream publishes: events go out with plain
 * `nc.publish` and a reply subject, unique per send, on an inbox of the
 * window's own, where one subscription collects the PubAcks; one timer
 * fails those unanswered after `publishTimeoutMs`. A publish the server
 * refuses for the user's permissions fails at once, for good. Cheaper than nats.js's
 * `js.publish`, which makes a timer and an error object per request.
 */
export interface PublishWindow<T> {
  /** Publishes `event`; `onOutcome` hears of it with `tag` (at once for a failure nats.js throws on). */
  send(event: WireEvent, tag: T): void;
  /**
   * Publishes `events`, all to one stream that allows it, as one atomic batch
   * (nats-server 2.12 and later): the stream stores all of them or none, and
   * answers once, for the last. `onOutcome` hears of each, in order, when
   * that answer comes: all stored, or all failed (never permanently: sent
   * alone, an event can still be stored, or refused for what it is). A batch
   * holding an event the stream already has (a `Nats-Msg-Id` inside its
   * duplicate window) fails whole.
   */
  sendBatch(events: ReadonlyArray<{ readonly event: WireEvent; readonly tag: T }>): void;
  /** Events sent and not answered yet. */
  readonly inFlight: number;
  /** Fails every event in flight at once (with `reason`), as when no answer can come any more. */
  abandon(reason: string): void;
  /** Stops listening for PubAcks and stops the timer. */
  close(): void;
}

export interface PublishWindowOptions<T> {
  readonly nc: NatsConnection;
  /** How long to wait for one PubAck (checked about every quarter of it). */
  readonly publishTimeoutMs: number;
  /** Hears the outcome of each send, once, in the order the answers come. */
  readonly onOutcome: (tag: T, outcome: PublishOutcome) => void;
}

/**
 * JetStream errors that refuse an event for what it is, not for the state
 * of the server (nats-server errors.json): message over the stream's
 * max_msg_size (10054), headers over 64 KiB (10097).
 */
const permanentApiErrors = new Set([10054, 10097]);

/** nats.js errors thrown on publish for what the message is: over max_payload, a subject or header it cannot send. */
const permanentClientErrors = new Set(["MAX_PAYLOAD_EXCEEDED", "BAD_SUBJECT", "BAD_HEADER"]);

/**
 * Why the server could not read `subject` off a PUB line, or undefined. It
 * splits the line at spaces and tabs and ends it at a line break, nats.js
 * checks neither, and the server answers such a line by closing the
 * connection: a row holding one (written by hand, or by an older version)
 * dropped the service's connection at each retry, its consumers' with it.
 */
function unsendableSubject(subject: string): string | undefined {
  return /[ \t\r\n]/.test(subject) ? `the subject ${JSON.stringify(subject)} cannot be sent: NATS subjects hold no white space` : undefined;
}

/** Opens a publish window on `nc`. */
export function createPublishWindow<T>(options: PublishWindowOptions<T>): PublishWindow<T> {
  const { nc, publishTimeoutMs, onOutcome } = options;
  /** Sent and not answered, by send id, in sending order: one event, or the events of one batch. */
  const inFlight = new Map<number, { readonly tags: readonly T[]; readonly subjects: readonly string[]; readonly sentAt: number }>();
  let events = 0;
  let lastSendId = 0;
  const prefix = replyInbox(nc);

  const settle = (sendId: number, outcome: PublishOutcome): void => {
    const sent = inFlight.get(sendId);
    // A late answer to a send that already timed out: the event is sent again and deduplicated.
    if (!sent) return;
    inFlight.delete(sendId);
    events -= sent.tags.length;
    const each: PublishOutcome = sent.tags.length > 1 && !outcome.ok ? { ok: false, error: `the atomic batch failed: ${outcome.error}`, permanent: false } : outcome;
    for (const tag of sent.tags) onOutcome(tag, each);
  };
  const acks: Subscription = nc.subscribe(`${prefix}.*`, {
    callback: (err, msg) => {
      if (!err) settle(Number(msg.subject.slice(prefix.length + 1)), readAck(msg));
    },
  });
  // The server refuses a publish outside the user's permissions with an error on the connection, not an answer to
  // the reply subject: without this the event would wait for its PubAck in vain. Sending it again cannot help.
  const statuses = nc.status();
  void (async () => {
    for await (const status of statuses) {
      const refused = status.permissionContext;
      if (status.type !== "error" || refused?.operation !== "publish") continue;
      for (const [sendId, sent] of inFlight) {
        if (!sent.subjects.includes(refused.subject)) continue;
        settle(sendId, { ok: false, error: `NATS refused the publish to ${refused.subject}: it is not in the permissions of this connection's user`, permanent: true });
        break;
      }
    }
  })().catch(() => undefined);
  const timeouts = setInterval(
    () => {
      const expired = Date.now() - publishTimeoutMs;
      for (const [sendId, sent] of inFlight) {
        if (sent.sentAt > expired) break;
        settle(sendId, { ok: false, error: `no PubAck within ${publishTimeoutMs} ms`, permanent: false });
      }
    },
    Math.max(10, Math.floor(publishTimeoutMs / 4)),
  );
  timeouts.unref();

  return {
    send(event, tag) {
      const sendId = ++lastSendId;
      inFlight.set(sendId, { tags: [tag], subjects: [event.subject], sentAt: Date.now() });
      events++;
      const unsendable = unsendableSubject(event.subject);
      if (unsendable) return settle(sendId, { ok: false, error: unsendable, permanent: true });
      try {
        nc.publish(event.subject, event.payload, { reply: `${prefix}.${sendId}`, headers: wireHeaders(event.headers) });
      } catch (err) {
        settle(sendId, { ok: false, error: (err as Error).message, permanent: permanentClientErrors.has((err as { code?: string }).code ?? "") });
      }
    },
    sendBatch(batch) {
      if (batch.length === 0) return;
      const sendId = ++lastSendId;
      inFlight.set(sendId, { tags: batch.map((b) => b.tag), subjects: batch.map((b) => b.event.subject), sentAt: Date.now() });
      events += batch.length;
      const batchId = randomUUID();
      // Failed whole, not for good: sent alone, the others are stored and that one parked.
      let unsendable: string | undefined;
      for (const { event } of batch) if ((unsendable = unsendableSubject(event.subject))) break;
      if (unsendable) return settle(sendId, { ok: false, error: unsendable, permanent: false });
      try {
        batch.forEach(({ event }, i) => {
          const commit = i === batch.length - 1;
          const headers = wireHeaders(withBatchHeaders(event.headers, batchId, i + 1, commit));
          // Only the commit is answered; the server drops a batch whose messages do not all arrive.
          nc.publish(event.subject, event.payload, commit ? { reply: `${prefix}.${sendId}`, headers } : { headers });
        });
      } catch (err) {
        settle(sendId, { ok: false, error: (err as Error).message, permanent: false });
      }
    },
    get inFlight() {
      return events;
    },
    abandon(reason) {
      for (const sendId of [...inFlight.keys()]) settle(sendId, { ok: false, error: reason, permanent: false });
    },
    close() {
      clearInterval(timeouts);
      stopStatusIterator(statuses);
      if (!nc.isClosed()) acks.unsubscribe();
    },
  };
}

/** A NATS header block ("NATS/1.0\r\n...\r\n\r\n") with the headers of message `seq` of atomic batch `batchId` added. */
function withBatchHeaders(block: Uint8Array, batchId: string, seq: number, commit: boolean): Uint8Array {
  const added = Buffer.from(`Nats-Batch-Id: ${batchId}\r\nNats-Batch-Sequence: ${seq}\r\n${commit ? "Nats-Batch-Commit: 1\r\n" : ""}\r\n`);
  // The block ends with the empty line that closes it: the new lines go before it.
  const head = block.subarray(0, block.byteLength - 2);
  const out = new Uint8Array(head.byteLength + added.byteLength);
  out.set(head, 0);
  out.set(added, head.byteLength);
  return out;
}

/** What one PubAck (or the server's answer in its place) says. */
function readAck(msg: Msg): PublishOutcome {
  // A 503 status instead of a PubAck: no stream captures the subject.
  if (msg.headers?.code === 503) return { ok: false, error: "no stream captures the subject (503 no responders)", permanent: false };
  if (msg.headers && msg.headers.code >= 400) return { ok: false, error: `status ${msg.headers.code} ${msg.headers.description}`, permanent: false };
  try {
    const ack = JSON.parse(Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength).toString()) as {
      stream?: string;
      duplicate?: boolean;
      error?: { code?: number; err_code?: number; description?: string };
    };
    if (ack.error) {
      const code = ack.error.err_code;
      return { ok: false, error: `JetStream refused the event: ${ack.error.description ?? "error"} (${code ?? ack.error.code ?? "?"})`, permanent: code !== undefined && permanentApiErrors.has(code) };
    }
    if (typeof ack.stream !== "string") return { ok: false, error: "the PubAck names no stream", permanent: false };
    return { ok: true, duplicate: ack.duplicate === true };
  } catch {
    return { ok: false, error: "the PubAck is not JSON", permanent: false };
  }
}
