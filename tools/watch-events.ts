/**
 * Prints the domain events as they go by, one JSON line each, decoded with the
 * generated codecs by their `ce-type` header. Reads every stream the contracts
 * declare, plus the dead letter stream, in order through consumers of the
 * observer's names, deleted when it ends (nothing is acknowledged or changed).
 */
import { connectNats, defaultNatsUrl, exitOnSignals, exitQuietlyOnClosedOutput, natsUrlProblem, reason, seedFileToUse, watchEvents } from "./event-watch.js";
import { parseArgs } from "node:util";
import { parseArgsProblem, usageProblemLine } from "./parse-args-problem.js";
import { payloadPrinter, readableLimits } from "./concord/readable-payload.js";

const usage = `Usage: npx tsx tools/watch-events.ts [--all] [--full] [--nats URL] [--nkey FILE]

Prints each event as a JSON line: stream, sequence, subject, type, id, source,
time, a dead letter's reason and the decoded payload. Ctrl-C stops. Once it follows the streams, it
says so on standard error, naming them, the server and from where on it
prints; standard output holds the events alone. A stream that is missing, or
on which the server refuses a consumer, is named on standard error; when no
stream can be read, it exits with status 1.
  --all        start from the first stored event instead of new ones only
  --full       print payloads whole on a terminal too, where strings past
               ${readableLimits.characters} characters and lists past ${readableLimits.items} items are cut, each
               marked where cut (output to a file or pipe is never cut)
  --nats URL   NATS server, nats://host:port, several comma-separated for a cluster
               (default: $NATS_URL, else nats://127.0.0.1:$NATS_PORT when set, and
               the cluster's other two when the \`npm start -- --cluster\` running
               on DATA_DIR put its first there; else the server(s) the \`npm start\`
               running on DATA_DIR gave its services,
               DATA_DIR defaulting to .data; else nats://127.0.0.1:4222); one that
               is not a NATS URL, given here or as NATS_URL, is refused as the
               services refuse NATS_URL (exit 2), and so is a NATS_PORT that
               \`npm start\` refuses (not a whole number from 1 to 65535)
  --nkey FILE  the nkey seed to connect with, the observer's for a server that
               \`npm start\` runs (default: $NATS_NKEY_SEED, else
               $DATA_DIR/nats-credentials/observer.nk when it exists, DATA_DIR
               defaulting to .data; none: no credentials); one others may
               read or write is refused, as the services refuse it (exit 1)`;

const options = { all: { type: "boolean" }, full: { type: "boolean" }, nats: { type: "string" }, nkey: { type: "string" }, help: { type: "boolean" } } as const;

async function main(args: string[]): Promise<void> {
  let values;
  try {
    values = parseArgs({ args, options }).values;
  } catch (err) {
    console.error(usageProblemLine("watch-events", parseArgsProblem(err, Object.keys(options)), "npx tsx tools/watch-events.ts --help"));
    process.exitCode = 2;
    return;
  }
  if (values.help) return console.log(usage);
  const natsProblem = natsUrlProblem(values.nats);
  if (natsProblem) {
    console.error(`watch-events: ${natsProblem}`);
    process.exitCode = 2;
    return;
  }
  const nc = await connectNats(values.nats ?? defaultNatsUrl(), "watch-events", seedFileToUse(values.nkey));
  exitOnSignals(nc);
  try {
    const readable = payloadPrinter("watch-events", { terminal: process.stdout.isTTY === true, whole: values.full === true, note: (line) => console.error(line) });
    await watchEvents({ nc, name: "watch-events", all: values.all === true, print: (line) => console.log(JSON.stringify(readable(line))) });
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
