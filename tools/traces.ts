/**
 * Receives traces from the services and prints one order's trace as a tree.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { formatTraces, type ReceivedSpan, startTraceReceiver } from "./traces/otlp-receiver.js";

const usage = `Usage:
  npx tsx tools/traces.ts serve [--port 4318] [--file .data/traces.jsonl]
      Receives spans over OTLP/HTTP (JSON) and appends them to the file.
      Start the services with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318.
  npx tsx tools/traces.ts show <text> [--file .data/traces.jsonl]
      Prints every trace with a span whose attributes contain <text> (an order
      id: it is in the subjects of the order's events), or whose id is <text>,
      as a tree: span, service, kind, start offset and duration.`;

function flag(args: string[], name: string, fallback: string): string {
  const at = args.indexOf(`--${name}`);
  if (at === -1) return fallback;
  const value = args[at + 1];
  if (value === undefined || value.startsWith("--")) throw new Error(`--${name} needs a value`);
  args.splice(at, 2);
  return value;
}

async function main(argv: string[]): Promise<number> {
  const args = [...argv];
  if (args.length === 0 || args.includes("--help") || args.includes("-h")) {
    console.log(usage);
    return args.length === 0 ? 2 : 0;
  }
  const command = args.shift();
  const file = flag(args, "file", ".data/traces.jsonl");
  if (command === "serve") {
    const port = Number(flag(args, "port", "4318"));
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be a port number`);
    if (args.length > 0) throw new Error(`unexpected ${args.join(" ")}`);
    mkdirSync(dirname(file), { recursive: true });
    const receiver = await startTraceReceiver({ port, file });
    console.log(`receiving traces on ${receiver.url}/v1/traces, appending to ${file}`);
    console.log(`start the services with OTEL_EXPORTER_OTLP_ENDPOINT=${receiver.url}`);
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
    await receiver.close();
    return 0;
  }
  if (command === "show") {
    const text = args.shift();
    if (!text || args.length > 0) throw new Error("show takes one <text>");
    if (!existsSync(file)) throw new Error(`${file} does not exist; run \`npx tsx tools/traces.ts serve\` while the services run`);
    const spans = readFileSync(file, "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as ReceivedSpan);
    const out = formatTraces(spans, text);
    if (out === "") {
      console.error(`no trace in ${file} has a span mentioning ${JSON.stringify(text)}`);
      return 1;
    }
    console.log(out);
    return 0;
  }
  throw new Error(`unknown command ${JSON.stringify(command)}\n\n${usage}`);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`traces: ${err.message}`);
    process.exit(2);
  },
);
