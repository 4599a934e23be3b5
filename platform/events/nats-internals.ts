/**
 * Every read of nats.js internals, in one file: each saves work on a hot
 * path, falls back to the public API when the internal is not there, and
 * has a canary test beside it (nats-internals.test.ts) that fails when the
 * fast path stops being taken, so a client upgrade is this file's work.
 * Written against the `nats` package 2.29.
 */
import { createRequire } from "node:module";
import type { Socket } from "node:net";
import { createInbox, headers as natsHeaders, MsgHdrsImpl, type ConsumerMessages, type JsMsg, type Msg, type MsgHdrs, type NatsConnection } from "nats";

/**
 * The headers of a received JetStream message as a plain record (first
 * value of each). Fast path: the header block as it came off the wire
 * (`JsMsgImpl.msg`, then `MsgImpl._rdata` up to `_msg.hdr`), read in one
 * pass, which costs a consumer far less than nats.js's general decoder.
 * Otherwise the public `headers` getter. With `repeats`, every value of each
 * header the message carries more than once is set in it, in the order
 * received (readers disagree on which value such a header has).
 */
export function receivedHeaders(msg: JsMsg | Msg, repeats?: Map<string, string[]>): Record<string, string> {
  const core = ((msg as unknown as { msg?: Msg }).msg ?? msg) as unknown as { _rdata?: unknown; _msg?: { hdr?: unknown } };
  const hdr = core._msg?.hdr;
  const data = core._rdata;
  if (typeof hdr !== "number" || !(data instanceof Uint8Array)) return headersRecord(msg.headers, repeats);
  const record: Record<string, string> = {};
  if (hdr <= 0) return record;
  const block = Buffer.from(data.buffer, data.byteOffset, hdr).toString("utf8");
  // The first line is "NATS/1.0", with a status code after it on status messages.
  let start = block.indexOf("\r\n") + 2;
  while (start > 1 && start < block.length) {
    let end = block.indexOf("\r\n", start);
    if (end < 0) end = block.length;
    const colon = block.indexOf(":", start);
    if (colon > start && colon < end) {
      const name = block.slice(start, colon);
      const again = Object.hasOwn(record, name);
      if (!again || repeats) {
        // The value trimmed of white space in place (one string per value instead of two);
        // String.prototype.trim for the rare value that begins or ends past ASCII.
        let from = colon + 1;
        let to = end;
        while (from < to && asciiSpace(block.charCodeAt(from))) from++;
        while (to > from && asciiSpace(block.charCodeAt(to - 1))) to--;
        const raw = block.slice(from, to);
        const value = from < to && (block.charCodeAt(from) > 127 || block.charCodeAt(to - 1) > 127) ? raw.trim() : raw;
        if (!again) record[name] = value;
        else {
          const values = repeats!.get(name);
          if (values) values.push(value);
          else repeats!.set(name, [record[name], value]);
        }
      }
    }
    start = end + 2;
  }
  return record;
}

/** Tab, line feed, vertical tab, form feed, carriage return, space: the ASCII white space String.prototype.trim removes. */
const asciiSpace = (c: number): boolean => c === 32 || (c >= 9 && c <= 13);

/** A plain record of headers (first value of each), through the public API; `repeats` as for receivedHeaders. */
export function headersRecord(h: MsgHdrs | undefined, repeats?: Map<string, string[]>): Record<string, string> {
  const record: Record<string, string> = {};
  if (!h) return record;
  // Iterating the entries once: h.get(name) looks every name up by walking all of them.
  for (const [name, values] of h) {
    if (values.length === 0) continue;
    record[name] = values[0];
    if (repeats && values.length > 1) repeats.set(name, [...values]);
  }
  return record;
}

/**
 * Headers already in wire form, handed to `nc.publish` as they are: nats.js
 * sends what `encode` returns (a `MsgHdrsImpl` subclass). Without the
 * class, the block is decoded into public headers and encoded again.
 */
class WireHeaders extends MsgHdrsImpl {
  constructor(private readonly wire: Uint8Array) {
    super();
  }
  override encode(): Uint8Array {
    return this.wire;
  }
}

/** Publish headers for a header block stored in NATS wire form ("NATS/1.0\r\n...\r\n\r\n"). */
export function wireHeaders(block: Uint8Array): MsgHdrs {
  if (typeof (MsgHdrsImpl as { prototype?: { encode?: unknown } }).prototype?.encode === "function") return new WireHeaders(block);
  return MsgHdrsImpl.decode(block);
}

/**
 * A reply inbox on the connection's own inbox prefix (`nc.options.inboxPrefix`,
 * the one its account permissions let replies through on), for PubAcks sent
 * to a subscription of our own; the default `_INBOX` when it is not there.
 */
export function replyInbox(nc: NatsConnection): string {
  return createInbox((nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
}

/** Ends an iterator of `nc.status()` (its `stop`), so a stopped relay leaves nothing listening. */
export function stopStatusIterator(statuses: AsyncIterable<unknown>): void {
  (statuses as { stop?: () => void }).stop?.();
}

/** Plain headers from a record, for publishing through the public API: a header given several values is sent once with each, in order. */
export function toNatsHeaders(record: Readonly<Record<string, string | readonly string[]>>): MsgHdrs {
  const h = natsHeaders();
  for (const [name, value] of Object.entries(record)) for (const one of typeof value === "string" ? [value] : value) h.append(name, one);
  return h;
}

/**
 * Calls `onChange` when the server tells a pull request that its consumer's
 * leader moved (status `409 Leadership Change`, which a current nats-server
 * sends to the requests waiting at the old leader, unknown to the new one;
 * 2.9.10 does not). nats.js 2.29 passes it on from a fetch only as a debug
 * status whose text is the status line; without this the request would
 * wait out its expiry. Resolves once listening.
 */
export async function onLeadershipChange(messages: ConsumerMessages, onChange: () => void): Promise<void> {
  const statuses = await messages.status();
  void (async () => {
    for await (const status of statuses) {
      if (status.type === "debug" && /^409 leadership change/i.test(String(status.data))) onChange();
    }
  })().catch(() => undefined);
}

/** What closeAbandonedDials reads of nats.js's Node transport: one per connection attempt. */
interface NodeTransportShape {
  connected?: boolean;
  socket?: Socket;
  close(err?: Error): Promise<void>;
}

let abandonedDialsClosed = false;

/** The prototype of the class `name` that the nats.js module `path` exports, to extend; undefined when it is not there. */
function natsPrototype<T>(path: string, name: string): T | undefined {
  try {
    return (createRequire(import.meta.url)(path) as Record<string, { prototype?: T } | undefined>)[name]?.prototype;
  } catch {
    return undefined;
  }
}

/**
 * Makes nats.js close the socket of a connection attempt it gave up on.
 * An attempt waits for the server's INFO for the connection's `timeout`
 * (20 s by default), then closes its transport; but the transport
 * (`NodeTransport` in nats/lib/src/node_transport.js) closes a socket only
 * once it has connected. Against a server that hangs (a stopped process: the
 * kernel still accepts connections, nothing answers) every reconnect
 * attempt left its socket open for as long as the server hung, and the
 * server got them all when it resumed. Now closing a transport that never
 * connected destroys its socket too. Applied once per process; false when
 * the transport is not where this looks (its canary test then fails).
 */
export function closeAbandonedDials(): boolean {
  if (abandonedDialsClosed) return true;
  const proto = natsPrototype<NodeTransportShape>("nats/lib/src/node_transport.js", "NodeTransport");
  if (!proto || typeof proto.close !== "function") return false;
  const close = proto.close;
  proto.close = function (this: NodeTransportShape, err?: Error): Promise<void> {
    if (this.connected !== true && this.socket && !this.socket.destroyed) this.socket.destroy();
    return close.call(this, err);
  };
  abandonedDialsClosed = true;
  return true;
}

/** Where a fetch's options carry the max_bytes of its pull request (see allowPullMaxBytes). */
const pullMaxBytesKey = Symbol("pull max_bytes");

let pullMaxBytesAllowed: boolean | undefined;

/**
 * Lets a fetch send `batch` and `max_bytes` together in its pull request,
 * as JetStream takes them (the server stops at whichever comes first, and
 * ends the request with a 409 at a message that does not fit). nats.js 2.29
 * refuses `max_messages` with `max_bytes` in fetch's options, and with
 * `max_bytes` alone asks for 100 messages. Its pull request is built by
 * `pullOptions` of `PullConsumerMessagesImpl` (nats/lib/jetstream/consumer.js),
 * which this extends to add the byte limit `withPullMaxBytes` puts in the
 * options; nats.js already counts a request's pending bytes down by each
 * message's size and ends the request at the server's 409. One 409 it must
 * not end on: "Batch Completed", which the server sends when a request's
 * batch is full with bytes left, at once, while on a replicated consumer
 * the last messages wait for their delivery's quorum. Ended there, the
 * request drops them when they come, and the server gives them again only
 * after ack_wait. So `parseDiscard`, which reads a status's messages and
 * bytes left, reads none in that one for these requests; whoever fetches
 * ends the request once its batch has come (as the pull intake does).
 * Applied once per process; false when the class is not where this looks
 * (its canary tests then fail, and pulls go by count alone).
 */
export function allowPullMaxBytes(): boolean {
  if (pullMaxBytesAllowed !== undefined) return pullMaxBytesAllowed;
  pullMaxBytesAllowed = false;
  type Discarded = { msgsLeft: number; bytesLeft: number };
  type PullMessages = {
    opts?: Record<symbol, unknown>;
    pending?: { bytes?: number };
    pullOptions(): { max_bytes?: number };
    parseDiscard(headers?: { code?: number; description?: string }): Discarded;
  };
  const proto = natsPrototype<PullMessages>("nats/lib/jetstream/consumer.js", "PullConsumerMessagesImpl");
  if (!proto || typeof proto.pullOptions !== "function" || typeof proto.parseDiscard !== "function") return false;
  const parseDiscard = proto.parseDiscard;
  proto.parseDiscard = function (this: PullMessages, headers) {
    if (this.opts?.[pullMaxBytesKey] !== undefined && headers?.code === 409 && headers.description?.toLowerCase() === "batch completed") return { msgsLeft: 0, bytesLeft: 0 };
    return parseDiscard.call(this, headers);
  };
  const pullOptions = proto.pullOptions;
  proto.pullOptions = function (this: PullMessages) {
    const options = pullOptions.call(this);
    const maxBytes = this.opts?.[pullMaxBytesKey];
    if (typeof maxBytes === "number" && maxBytes > 0) options.max_bytes = maxBytes - (this.pending?.bytes ?? 0);
    return options;
  };
  pullMaxBytesAllowed = true;
  return true;
}

/** Fetch options whose pull request also carries `maxBytes` as max_bytes, once allowPullMaxBytes has returned true. */
export function withPullMaxBytes<T extends object>(options: T, maxBytes: number): T {
  return { ...options, [pullMaxBytesKey]: maxBytes };
}

/**
 * The bytes a received JetStream message counts for in a pull request's
 * max_bytes, as nats-server counts them: subject, reply, headers and data
 * (nats.js's `Msg.size()`, under `JsMsgImpl.msg`). Otherwise, through the
 * public API, subject and data.
 */
export function receivedBytes(msg: JsMsg): number {
  const core = (msg as unknown as { msg?: { size?: () => number } }).msg;
  return typeof core?.size === "function" ? core.size() : msg.subject.length + msg.data.byteLength;
}
