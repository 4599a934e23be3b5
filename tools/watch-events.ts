/**
 * Prints the domain events as they go by, one JSON line each, decoded with the
 * generated codecs by their `ce-type` header. Reads every stream the contracts
 * declare, plus the dead letter stream, in order through consumers of the
 * observer's names, deleted when it ends (nothing is acknowledged or changed).
 */
import { connectNats, defaultNatsUrl, exitOnSignals, exitQuietlyOnClosedOutput, reason, seedFileToUse, watchEvents } from "./event-watch.js";

const usage = `Usage: npx tsx tools/watch-events.ts [--all] [--nats URL] [--nkey FILE]

Prints each event as a JSON line: stream, sequence, subject, type, id, source,
time and the decoded payload. Ctrl-C stops. A stream that is missing, or on
which the server refuses a consumer, is named on standard error; when no
stream can be read, it exits with status 1.
  --all        start from the first stored event instead of new ones only
  --nats URL   NATS server, several comma-separated for a cluster (default: $NATS_URL,
               else nats://127.0.0.1:$NATS_PORT when set, else the server(s) the
               \`npm start\` running on DATA_DIR gave its services, DATA_DIR
               defaulting to .data; else nats://127.0.0.1:4222)
  --nkey FILE  the nkey seed to connect with, the observer's for a server that
               \`npm start\` runs (default: $NATS_NKEY_SEED, else
               $DATA_DIR/nats-credentials/observer.nk when it exists, DATA_DIR
               defaulting to .data; none: no credentials)`;

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
  const url = natsIndex >= 0 ? args[natsIndex + 1] : defaultNatsUrl();
  const seedFile = seedFileToUse(nkeyIndex >= 0 ? args[nkeyIndex + 1] : undefined);
  const nc = await connectNats(url, "watch-events", seedFile);
  exitOnSignals(nc);
  try {
    await watchEvents({ nc, name: "watch-events", all: args.includes("--all"), print: (line) => console.log(JSON.stringify(line)) });
  } catch (err) {
    await nc.close();
    throw err;
  }
}

exitQuietlyOnClosedOutput();
main(process.argv.slice(2)).catch((err) => {
  console.error(`watch-events: ${reason(err)}`);
  process.exitCode = 1;
});
