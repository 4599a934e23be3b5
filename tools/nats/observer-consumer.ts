/**
 * The consumers the observer and the operator read streams through. Their
 * NATS users may create consumers only under a few names
 * (`natsAuthorization.observer.consumerNames`, `observer-1` ...), so a
 * reader takes the first of those free on its stream, and gives it back
 * when it closes. It reads as nats.js's ordered consumer does: nothing is
 * acknowledged, messages come in stream order, each once, and after a gap
 * (a pull lost with a reconnect, the consumer gone with a server restart or
 * its inactivity) the consumer is made again from the next sequence.
 */
import { AckPolicy, DeliverPolicy, type ConsumerConfig, type JsMsg, type NatsConnection, type NatsError, nanos, nuid } from "nats";
import { natsAuthorization } from "../../gen/ts/concord_nats.js";

/** How long the server keeps a reader's consumer once nobody pulls from it: a reader that died gives its name back by then. */
export const readerInactiveMs = 60_000;

/** Where a reader starts. */
export type ReaderStart = { readonly deliver_policy: DeliverPolicy.New } | { readonly deliver_policy: DeliverPolicy.StartSequence; readonly opt_start_seq: number };

export interface ObserverReaderOptions {
  readonly stream: string;
  readonly start: ReaderStart;
  /** One filter subject; the whole stream when absent. */
  readonly filterSubject?: string;
  /** The names it may take, in order; the observer's by default. */
  readonly names?: readonly string[];
}

/** One pull: at most this many messages or bytes, waiting at most `expires` ms. */
export interface ReaderPull {
  readonly max_messages?: number;
  readonly max_bytes?: number;
  readonly expires: number;
}

/** A stream read in order through a consumer of one of the observer's names. */
export interface ObserverReader {
  /** The consumer's name while the reader holds it. */
  readonly name: string;
  /** The next messages in stream order, read to the pull's end (empty when none came within `expires`). */
  fetch(pull: ReaderPull): Promise<JsMsg[]>;
  /** Every message from the start on, as each arrives, until `close` or the connection closes. */
  messages(): AsyncIterable<JsMsg>;
  /** Deletes the consumer, giving its name back. */
  close(): Promise<void>;
}

/** How long a reader tries to make its consumer again before it gives up, rejecting with the server's last reason. */
const remakeForMs = 30_000;

/** JetStream's error code for a consumer created under a name another consumer holds. */
const alreadyExists = 10148;

const errCode = (err: unknown) => (err as NatsError).api_error?.err_code;

/**
 * Creates a consumer on `options.stream` under the first of the names not
 * in use there and returns a reader of it. Rejects with the server's reason
 * when it refuses the consumer (a missing stream, permissions), and, naming
 * them, when every name is in use.
 */
export async function openObserverReader(nc: NatsConnection, options: ObserverReaderOptions): Promise<ObserverReader> {
  const { stream, filterSubject } = options;
  const names = options.names ?? natsAuthorization.observer.consumerNames;
  const jsm = await nc.jetstreamManager();
  const js = nc.jetstream();
  // Its own mark: the server takes a create whose configuration equals that of the consumer under the name (a second
  // listing of the same stream from the same start) as that consumer, and the two would share its messages.
  const description = `read by ${nuid.next()}`;
  const configFrom = (name: string, start: ReaderStart): Partial<ConsumerConfig> => ({
    name,
    description,
    ack_policy: AckPolicy.None,
    ...start,
    ...(filterSubject === undefined ? {} : { filter_subject: filterSubject }),
    mem_storage: true,
    num_replicas: 1,
    max_deliver: 1,
    inactive_threshold: nanos(readerInactiveMs),
  });
  /** Takes a free name for a consumer starting at `start`; resolves with the stream sequence it has read up to. */
  const claim = async (start: ReaderStart): Promise<{ name: string; streamSeq: number }> => {
    for (const name of names) {
      try {
        // nats.js asks to create, not to update: a name in use is another reader's consumer.
        const info = await jsm.consumers.add(stream, configFrom(name, start));
        if (info.config.description === description) return { name, streamSeq: info.delivered.stream_seq };
      } catch (err) {
        if (errCode(err) !== alreadyExists) throw err;
      }
    }
    throw new Error(
      `every consumer name this user may read stream ${stream} with is in use (${names[0]} to ${names.at(-1)}); wait a minute for readers that died to give theirs back, or delete one that stays (nats consumer rm ${stream} <name>)`,
    );
  };

  let held = await claim(options.start);
  let deliverSeq = 0;
  let closed = false;
  /**
   * The consumer made again, from the message after the last one handed on. Tried again for a while: after a
   * server restart JetStream answers only once it has recovered its streams.
   */
  const remake = async () => {
    const until = Date.now() + remakeForMs;
    for (let wait = 100; ; wait = Math.min(wait * 2, 2_000)) {
      try {
        await jsm.consumers.delete(stream, held.name).catch(() => undefined);
        held = await claim({ deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: held.streamSeq + 1 });
        deliverSeq = 0;
        return;
      } catch (err) {
        if (closed || nc.isClosed() || Date.now() + wait > until) throw err;
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  };
  /** One pull's messages that follow on the last one handed on; the consumer is made again after a gap or a failed pull. */
  async function* pullOnce(pull: ReaderPull): AsyncGenerator<JsMsg> {
    let failed = false;
    try {
      const consumer = await js.consumers.get(stream, held.name);
      for await (const msg of await consumer.fetch(pull)) {
        if (msg.info.deliverySequence !== deliverSeq + 1) {
          failed = true;
          break;
        }
        deliverSeq = msg.info.deliverySequence;
        held.streamSeq = msg.info.streamSequence;
        yield msg;
      }
    } catch {
      // The consumer is gone (a restart, its inactivity, deleted), or the pull was lost: made again below.
      failed = true;
    }
    if (failed && !closed && !nc.isClosed()) await remake();
  }
  return {
    get name() {
      return held.name;
    },
    async fetch(pull) {
      const got: JsMsg[] = [];
      for await (const msg of pullOnce(pull)) got.push(msg);
      return got;
    },
    async *messages() {
      while (!closed && !nc.isClosed()) yield* pullOnce({ max_messages: 256, expires: 5_000 });
    },
    async close() {
      closed = true;
      if (!nc.isClosed()) await jsm.consumers.delete(stream, held.name).catch(() => undefined);
    },
  };
}
