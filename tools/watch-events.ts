/**
 * Prints the domain events as they go by, one JSON line each, decoded with the
 * generated codecs by their `ce-type` header. Reads every stream the contracts
 * declare, plus the dead letter stream, through ordered consumers (nothing is
 * acknowledged or changed).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AckPolicy, ConsumerEvents, DeliverPolicy, type JetStreamManager, type NatsError, connect, nanos, nkeyAuthenticator, type OrderedConsumerOptions } from "nats";
import { allEvents, allStreams } from "../gen/ts/concord_streams.js";
import { deadLetterStreamSpec, type EventDescriptor } from "../platform/events/index.js";
import { repoRoot } from "./repo-root.js";

const usage = `Usage: npx tsx tools/watch-events.ts [--all] [--nats URL] [--nkey FILE]

Prints each event as a JSON line: stream, sequence, subject, type, id, source,
time and the decoded payload. Ctrl-C stops. A stream that is missing, or on
which the server refuses a consumer, is named on standard error; when no
stream can be read, it exits with status 1.
  --all        start from the first stored event instead of new ones only
  --nats URL   NATS server, several comma-separated for a cluster (default: $NATS_URL or nats://127.0.0.1:4222)
  --nkey FILE  the nkey seed to connect with, the observer's for a server that
               \`npm start\` runs (default: $NATS_NKEY_SEED, else
               $DATA_DIR/nats-credentials/observer.nk when it exists, DATA_DIR
               defaulting to .data; none: no credentials)`;

/** The seed file to connect with, if any: --nkey, $NATS_NKEY_SEED, or the observer's seed `npm start` made. */
function seedFileToUse(given: string | undefined): string | undefined {
  if (given) return given;
  if (process.env.NATS_NKEY_SEED) return process.env.NATS_NKEY_SEED;
  const observer = join(process.env.DATA_DIR || join(repoRoot, ".data"), "nats-credentials", "observer.nk");
  return existsSync(observer) ? observer : undefined;
}

/** An nkey authenticator for the seed in `file`; the seed never appears in a message. */
function authenticatorOf(file: string) {
  let seed: string;
  try {
    seed = readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new Error(`cannot read the nkey seed file ${file}: ${(err as Error).message}`);
  }
  if (!/^SU[A-Z2-7]+$/.test(seed)) throw new Error(`${file} does not hold a NATS user nkey seed (one line starting with SU)`);
  return nkeyAuthenticator(new TextEncoder().encode(seed));
}

/**
 * Where the ordered consumer starts. For a replay, a start sequence of 1
 * (the first message still stored): nats.js sends `opt_start_seq` with
 * whatever deliver policy it is given, and the server refuses "all" together
 * with a start sequence (err_code 10094).
 */
function startAt(all: boolean): Partial<OrderedConsumerOptions> {
  return all ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 1 } : { deliver_policy: DeliverPolicy.New };
}

/**
 * Creates, then deletes, an ephemeral consumer like the ordered consumer the
 * watcher reads with. nats.js retries a refused ordered consumer in silence
 * (for minutes); this way a refusal (permissions, limits, options) is
 * thrown with the server's own words at once.
 */
async function checkConsumerAllowed(jsm: JetStreamManager, stream: string, all: boolean): Promise<void> {
  const { deliver_policy, opt_start_seq } = startAt(all);
  const info = await jsm.consumers.add(stream, {
    ack_policy: AckPolicy.None,
    deliver_policy,
    ...(opt_start_seq === undefined ? {} : { opt_start_seq }),
    mem_storage: true,
    num_replicas: 1,
    inactive_threshold: nanos(10_000),
  });
  await jsm.consumers.delete(stream, info.name).catch(() => undefined);
}

/** The server's reason for an error, with its JetStream error code when it gave one. */
function reason(err: unknown): string {
  const apiError = (err as NatsError).api_error;
  const message = apiError?.description ?? (err instanceof Error ? err.message : String(err));
  return apiError?.err_code ? `${message} (err_code ${apiError.err_code})` : message;
}

async function main(args: string[]): Promise<void> {
  if (args.includes("--help")) return console.log(usage);
  const natsIndex = args.indexOf("--nats");
  const nkeyIndex = args.indexOf("--nkey");
  const known = new Set(["--all", "--nats", "--nkey", ...(natsIndex >= 0 ? [args[natsIndex + 1]] : []), ...(nkeyIndex >= 0 ? [args[nkeyIndex + 1]] : [])]);
  const unknown = args.filter((a) => !known.has(a));
  const missing = natsIndex >= 0 && !args[natsIndex + 1] ? "--nats needs a URL" : nkeyIndex >= 0 && !args[nkeyIndex + 1] ? "--nkey needs a file" : undefined;
  if (unknown.length > 0 || missing) {
    console.error(`watch-events: bad arguments: ${unknown.join(" ") || missing}\n\n${usage}`);
    process.exitCode = 2;
    return;
  }
  const url = natsIndex >= 0 ? args[natsIndex + 1] : process.env.NATS_URL || "nats://127.0.0.1:4222";
  const seedFile = seedFileToUse(nkeyIndex >= 0 ? args[nkeyIndex + 1] : undefined);
  const authenticator = seedFile === undefined ? undefined : authenticatorOf(seedFile);
  const nc = await connect({ servers: url.split(",").map((u) => u.trim()), name: "watch-events", ...(authenticator && { authenticator }) }).catch((err: Error) => {
    throw new Error(`cannot reach NATS at ${url}: ${err.message}`);
  });
  const byType = new Map<string, EventDescriptor<unknown>>(allEvents.map((e) => [e.typeName, e as EventDescriptor<unknown>]));
  const js = nc.jetstream();
  const jsm = await nc.jetstreamManager();
  const quit = () => {
    setTimeout(() => process.exit(0), 2_000).unref();
    void nc.close().then(() => process.exit(0));
  };
  process.once("SIGINT", quit);
  process.once("SIGTERM", quit);
  const streams = [...allStreams.map((s) => s.name), deadLetterStreamSpec.name];
  const all = args.includes("--all");
  /** The stream's messages, or undefined (said on standard error) when it cannot be read. */
  const open = async (stream: string) => {
    try {
      await jsm.streams.info(stream);
    } catch (err) {
      const missing = (err as NatsError).api_error?.err_code === 10059;
      console.error(`watch-events: stream ${stream} ${missing ? "does not exist yet (start the services first)" : `cannot be read: ${reason(err)}`}; skipping it`);
      return undefined;
    }
    try {
      await checkConsumerAllowed(jsm, stream, all);
      return await (await js.consumers.get(stream, startAt(all))).consume();
    } catch (err) {
      console.error(`watch-events: the server refused a consumer on stream ${stream}: ${reason(err)}`);
      return undefined;
    }
  };
  const opened = await Promise.all(streams.map(async (stream) => ({ stream, messages: await open(stream) })));
  if (opened.every((o) => o.messages === undefined)) {
    await nc.close();
    throw new Error(`no stream can be read (${streams.join(", ")})`);
  }
  await Promise.all(
    opened.map(async ({ stream, messages }) => {
      if (!messages) return;
      void (async () => {
        for await (const status of await messages.status()) {
          if (status.type === ConsumerEvents.StreamNotFound || status.type === ConsumerEvents.NoResponders || status.type === ConsumerEvents.HeartbeatsMissed) {
            console.error(`watch-events: stream ${stream}: ${status.type} (${status.data})`);
          }
        }
      })();
      for await (const msg of messages) {
        const type = msg.headers?.get("ce-type") ?? "";
        const descriptor = byType.get(type);
        let payload: unknown;
        try {
          payload = descriptor ? (descriptor.codec as unknown as { toJSON(m: unknown): unknown }).toJSON(descriptor.codec.decode(msg.data)) : `<${msg.data.length} bytes of an unknown type>`;
        } catch (err) {
          payload = `<undecodable: ${(err as Error).message}>`;
        }
        const header = (name: string) => msg.headers?.get(name) || undefined;
        console.log(JSON.stringify({ stream, seq: msg.seq, subject: msg.subject, type, id: header("ce-id"), source: header("ce-source"), time: header("ce-time"), dlqReason: header("concord-dlq-reason"), payload }));
      }
    }),
  );
}

main(process.argv.slice(2)).catch((err) => {
  console.error(`watch-events: ${err instanceof Error ? err.message : err}`);
  process.exitCode = 1;
});
