/**
 * `npx concord streams provision`: the operator creates the streams the
 * contracts declare and the dead letter stream, and brings existing ones in
 * line with their specs (ensureStreams as the operator: replicas and
 * max_msg_size moved down as well as up, the description set), as the services' own users may only
 * read them, and a service's own provisioning does neither. `npm start` runs it before the services start; a
 * deployment runs it before its services, and again after a contract
 * changes a stream's settings.
 */
import type { NatsConnection } from "nats";
import { allStreams } from "../../gen/ts/concord_streams.js";
import { deadLetterStreamFor, ensureStreams, isNatsUnreachable, JetStreamLimitError, StreamConflictError, StreamSubjectsHeldError, type StreamSpec } from "../../platform/events/index.js";
import type { Logger } from "../../platform/log/index.js";

/** The streams the operator provisions: the contracts' own and the dead letter stream, whose max_msg_size follows theirs. */
export const provisionedStreams: readonly StreamSpec[] = [...allStreams, deadLetterStreamFor(allStreams)];

/**
 * Provisioning refused over what the operator is to settle: a limit of the
 * server's or the account's configuration to raise, an existing stream whose
 * settings conflict with its contract (storage, retention, subjects) to
 * migrate, or another stream holding a stream's subjects to narrow. A
 * setting, as bad usage is (`concord streams provision` and `npm start` exit
 * 2), not a failure.
 */
export class ProvisionRefused extends Error {}

/** One provisioned stream as the server now has it. */
export interface ProvisionedStream {
  readonly stream: string;
  readonly subjects: readonly string[];
  readonly replicas: number;
  readonly messages: number;
  readonly atomicBatch: boolean;
  /** What provisioning widened to the contract, this time ("max_age (ms): existing ..., wanted ..."); empty when nothing. */
  readonly widened: readonly string[];
  /** What the stream keeps more of than its contract, left so, as provisioning never narrows a stream; empty when nothing. */
  readonly keepsMore: readonly string[];
  /**
   * The replicas or max_msg_size provisioning moved down to the contract's, this time ("num_replicas: existing 3,
   * wanted 1", "max_msg_size (bytes): existing none, wanted 8192"), which the services never do; empty when not.
   */
  readonly lowered: readonly string[];
}

/** What provisioning did to `stream` beyond its spec, or left, each said as a phrase ("widened to its contract: ..."); none when nothing. */
export function differencesSaid(stream: ProvisionedStream): string[] {
  return [
    ...(stream.widened.length > 0 ? [`widened to its contract: ${stream.widened.join("; ")}`] : []),
    ...(stream.keepsMore.length > 0 ? [`keeps more than its contract, left so: ${stream.keepsMore.join("; ")}`] : []),
    ...(stream.lowered.length > 0 ? [`lowered to its contract: ${stream.lowered.join("; ")}`] : []),
  ];
}

/**
 * How long provisioning asks again while JetStream gives no answer. A cluster
 * whose servers have all just started reports healthy (`/healthz`) once it has
 * a meta leader, while each stream elects a leader of its own in the seconds
 * after, and a request about a stream without one goes unanswered (TIMEOUT):
 * `npm start -- --cluster` on a DATA_DIR whose cluster held streams stopped
 * there, every time.
 */
const unansweredWaitMs = 30_000;

/**
 * Provisions `provisionedStreams` over `nc` (the operator's connection); resolves with each as the server now has it.
 * Throws ProvisionRefused, saying what the operator can do, at a stream whose settings conflict with its spec, whose
 * subjects another stream holds, or that JetStream's limits leave no room for: it and the streams after it are left as
 * they are. JetStream not answering is asked again, for up to `unansweredWaitMs`.
 */
export async function provisionStreams(nc: NatsConnection, logger?: Logger): Promise<ProvisionedStream[]> {
  const until = Date.now() + unansweredWaitMs;
  for (let told = false; ; told = true) {
    try {
      return await provisionOnce(nc, logger);
    } catch (err) {
      if (!isNatsUnreachable(err) || Date.now() >= until) throw err;
      if (!told) logger?.warn({ err: (err as Error).message }, "JetStream did not answer (a cluster just started elects its streams' leaders); asking again");
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

async function provisionOnce(nc: NatsConnection, logger: Logger | undefined): Promise<ProvisionedStream[]> {
  const jsm = await nc.jetstreamManager();
  const { atomicBatch, widened, keepsMore, lowered } = await ensureStreams(jsm, provisionedStreams, { operator: true, ...(logger && { logger }) }).catch((err: unknown) => {
    if (!(err instanceof StreamConflictError || err instanceof JetStreamLimitError || err instanceof StreamSubjectsHeldError)) throw err;
    const rest = provisionedStreams.slice(provisionedStreams.findIndex((spec) => spec.name === err.stream) + 1).map((spec) => spec.name);
    if (!(err instanceof StreamConflictError)) {
      throw new ProvisionRefused(`${err.message}; ${[err.stream, ...rest].join(", ")} not provisioned`, { cause: err });
    }
    throw new ProvisionRefused(
      `${err.conflict}: left as it is${rest.length > 0 ? `, and ${rest.join(", ")} not provisioned` : ""}; ` +
        "change the contract back to what the stream has, or migrate the stream deliberately (for example with the nats CLI), then run `npx concord streams provision` (or `npm start`) again",
      { cause: err },
    );
  });
  const provisioned: ProvisionedStream[] = [];
  for (const spec of provisionedStreams) {
    const { config, state } = await jsm.streams.info(spec.name);
    provisioned.push({
      stream: spec.name,
      subjects: config.subjects ?? [],
      replicas: config.num_replicas,
      messages: state.messages,
      atomicBatch: atomicBatch.includes(spec),
      widened: widened.find((w) => w.stream === spec.name)?.settings ?? [],
      keepsMore: keepsMore.find((k) => k.stream === spec.name)?.settings ?? [],
      lowered: lowered.find((l) => l.stream === spec.name)?.settings ?? [],
    });
  }
  return provisioned;
}
