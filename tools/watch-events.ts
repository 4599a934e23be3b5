/**
 * Prints the domain events as they go by, one JSON line each, decoded with the
 * generated codecs by their `ce-type` header. Reads every stream the contracts
 * declare, plus the dead letter stream, through ordered consumers (nothing is
 * acknowledged or changed).
 */
import { DeliverPolicy, connect } from "nats";
import { allEvents, allStreams } from "../gen/ts/concord_streams.js";
import { deadLetterStreamSpec, type EventDescriptor } from "../platform/events/index.js";

const usage = `Usage: npx tsx tools/watch-events.ts [--all] [--nats URL]

Prints each event as a JSON line: stream, sequence, subject, type, id, source,
time and the decoded payload. Ctrl-C stops.
  --all        start from the first stored event instead of new ones only
  --nats URL   NATS server (default: $NATS_URL or nats://127.0.0.1:4222)`;

async function main(args: string[]): Promise<void> {
  if (args.includes("--help")) return console.log(usage);
  const natsIndex = args.indexOf("--nats");
  const known = new Set(["--all", "--nats", ...(natsIndex >= 0 ? [args[natsIndex + 1]] : [])]);
  const unknown = args.filter((a) => !known.has(a));
  if (unknown.length > 0 || (natsIndex >= 0 && !args[natsIndex + 1])) {
    console.error(`watch-events: bad arguments: ${unknown.join(" ") || "--nats needs a URL"}\n\n${usage}`);
    process.exitCode = 2;
    return;
  }
  const url = natsIndex >= 0 ? args[natsIndex + 1] : process.env.NATS_URL || "nats://127.0.0.1:4222";
  const nc = await connect({ servers: url, name: "watch-events" }).catch((err: Error) => {
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
  await Promise.all(
    streams.map(async (stream) => {
      try {
        await jsm.streams.info(stream);
      } catch {
        console.error(`watch-events: stream ${stream} does not exist yet (start the services first); skipping it`);
        return;
      }
      const consumer = await js.consumers.get(stream, { deliver_policy: args.includes("--all") ? DeliverPolicy.All : DeliverPolicy.New });
      for await (const msg of await consumer.consume()) {
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
