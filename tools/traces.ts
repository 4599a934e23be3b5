/**
 * Receives traces from the services and prints one order's trace as a tree.
 */
import { existsSync, mkdirSync, readFileSync, realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { optionsElsewhere, parseArgsProblem, usageProblemLine } from "./parse-args-problem.js";
import { formatTraces, isWholeNanos, type ReceivedSpan, startTraceReceiver } from "./traces/otlp-receiver.js";
import { pinnedZipkin, type RunningZipkin, startZipkin } from "./traces/zipkin.js";
import { dataDir as dataDirOf } from "./client-security.js";

/** The usage of the traces commands, called as `prog`. */
export const usageOf = (prog: string) => `Usage:
  ${prog} serve [--port 4318] [--file DATA_DIR/traces.jsonl] [--zipkin [--zipkin-port 9411]]
      Receives spans over OTLP/HTTP (JSON) and appends them to the file.
      Start the services with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318.
      --zipkin also starts Zipkin ${pinnedZipkin.version}, a trace viewer (Java 17 or newer;
      its jar is fetched from Maven Central into .tools/zipkin the first time),
      and hands it every span: open http://127.0.0.1:9411/zipkin/.
  ${prog} show <text> [--file DATA_DIR/traces.jsonl]
      Prints every trace with a span whose attributes contain <text> (an order
      id: it is in the subjects of the order's events), or whose id or trace
      id is <text> (a log line's span_id or trace_id), as a tree: span,
      service, kind, start offset, duration, and the server a call went to
      (to host:port) or the peer a call came from (from host:port). The
      services send their spans every 5 s, so an order placed just now shows
      a few seconds later.
  DATA_DIR defaults to .data, as for \`npm start\`.`;

/** Bad usage: exit status 2, in one line naming --help, or as the calling tool says it (`badUsage` of tracesCommand). */
class UsageError extends Error {
  constructor(
    message: string,
    /** The command it was given to, when it names one (serve, show). */
    readonly command?: string,
  ) {
    super(message);
  }
}

type Options = NonNullable<ParseArgsConfig["options"]>;
const common: Options = { file: { type: "string" }, help: { type: "boolean", short: "h" } };
/** Each command's options: one meant for the other command is refused, naming that command. */
export const tracesOptions: Readonly<Record<string, Options>> = {
  serve: { ...common, port: { type: "string" }, zipkin: { type: "boolean" }, "zipkin-port": { type: "string" } },
  show: common,
};

/**
 * The command's options and operands; a mistyped option is named with the one
 * it likely meant, and an option of the other command with that command, or
 * with the command lines `beyond` gives for it (those of a tool calling this one).
 */
function parse(command: string, args: string[], prog: string, beyond: Readonly<Record<string, readonly string[]>>) {
  const options = tracesOptions[command]!;
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    const elsewhere = optionsElsewhere(tracesOptions, prog, (other) => other === command);
    for (const [name, lines] of Object.entries(beyond)) (elsewhere[name] ??= []).push(...lines);
    throw new UsageError(parseArgsProblem(err, Object.keys(options), elsewhere), command);
  }
}

function portOf(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const port = Number(value);
  if (typeof value !== "string" || !/^\d+$/.test(value) || port > 65535) throw new UsageError(`--${name} must be a port number`, "serve");
  return port;
}

/** How a tool runs the traces commands as its own (`npx concord traces`); by default, tools/traces.ts itself. */
export interface TracesCaller {
  /** How the user called them, for the help text: `npx concord traces`. */
  readonly prog: string;
  /** The command lines of the calling tool's other commands that take an option traces lacks, to name them when it is given here. */
  readonly elsewhere?: Readonly<Record<string, readonly string[]>>;
  /**
   * Says bad usage, given the problem and the command it was given to
   * (serve, show; none when it named none); resolves with the exit status.
   * By default, the problem and where the usage is, in one line, exit 2.
   */
  readonly badUsage?: (problem: string, command: string | undefined) => number;
  /** What begins the lines a command says on standard error (`concord traces show`); by default the program, as its bad usage says it. */
  readonly nameOf?: (command: string) => string;
}

/** How tools/traces.ts names itself on standard error: as it was called, without npx. */
const programOf = (prog: string) => prog.replace(/^npx (tsx )?/, "");

/** tools/traces.ts run by itself. */
const standalone: TracesCaller = { prog: "npx tsx tools/traces.ts" };

/** Runs the traces command with `argv` (after the program name), called as `caller` says; resolves with the exit status. */
export async function tracesCommand(argv: string[], caller = standalone): Promise<number> {
  const { prog, elsewhere = {}, badUsage } = caller;
  try {
    return await run(argv, prog, elsewhere, caller.nameOf ?? (() => programOf(prog)));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    if (badUsage) return badUsage(err.message, err.command);
    console.error(usageProblemLine(programOf(prog), err.message, `${prog} --help`));
    return 2;
  }
}

async function run(argv: string[], prog: string, elsewhere: Readonly<Record<string, readonly string[]>>, nameOf: (command: string) => string): Promise<number> {
  const usage = usageOf(prog);
  const [command = "", ...rest] = argv;
  if (!Object.hasOwn(tracesOptions, command)) {
    if (argv.length === 0) {
      // Bad usage, said on standard error as `concord dlq` alone says it: the commands, exit 2.
      console.error(`${programOf(prog)}: name a command, ${Object.keys(tracesOptions).join(" or ")}\n\n${usage}`);
      return 2;
    }
    if (!argv.includes("--help") && !argv.includes("-h")) throw new UsageError(`unknown command ${JSON.stringify(command)}; the commands are ${Object.keys(tracesOptions).join(", ")}`);
    console.log(usage);
    return 0;
  }
  const { values, positionals } = parse(command, rest, prog, elsewhere);
  if (values.help) {
    console.log(usage);
    return 0;
  }
  // Beside the rest of the running system's files: npm start's DATA_DIR.
  const file = (values.file as string | undefined) ?? join(dataDirOf(), "traces.jsonl");
  if (command === "serve") {
    const port = portOf(values.port, "port", 4318);
    const zipkinPort = portOf(values["zipkin-port"], "zipkin-port", 9411);
    if (positionals.length > 0) throw new UsageError(`unexpected ${positionals.join(" ")}`, command);
    mkdirSync(dirname(file), { recursive: true });
    let zipkin: RunningZipkin | undefined;
    if (values.zipkin) {
      console.log(`starting Zipkin ${pinnedZipkin.version} on 127.0.0.1:${zipkinPort} (its output: ${dirname(file)}/zipkin.log)`);
      zipkin = await startZipkin({ port: zipkinPort, logFile: join(dirname(file), "zipkin.log"), progress: (line) => console.log(line) });
    }
    let refusals = 0;
    const receiver = await startTraceReceiver({
      port,
      file,
      keepSpans: false,
      onSpans: (spans) =>
        void zipkin?.send(spans).catch((err: Error) => {
          // Said once, then every 100th time: the spans are in the file all the same.
          if (refusals++ % 100 === 0) console.error(`${nameOf(command)}: ${err.message}`);
        }),
    }).catch(async (err: NodeJS.ErrnoException) => {
      await zipkin?.stop();
      if (err.code !== "EADDRINUSE") throw err;
      throw new UsageError(
        `port ${port} on 127.0.0.1 is in use (another traces serve, or another OTLP receiver?); give another with --port, and start the services with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<that port>`,
        command,
      );
    });
    console.log(`receiving traces on ${receiver.url}/v1/traces, appending to ${file}`);
    console.log(`start the services with OTEL_EXPORTER_OTLP_ENDPOINT=${receiver.url}`);
    if (zipkin) console.log(`see the traces at ${zipkin.url}/zipkin/ (search by serviceName, or by tag, such as an order id in messaging.destination.name)`);
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
    await receiver.close();
    await zipkin?.stop();
    return 0;
  }
  // show
  const [text] = positionals;
  if (!text || positionals.length > 1) throw new UsageError("show takes one <text>", command);
  if (!existsSync(file)) throw new Error(`${file} does not exist; run \`${prog} serve\` and start the services with OTEL_EXPORTER_OTLP_ENDPOINT set to the URL it prints (http://127.0.0.1:4318 by default): without it they export no spans (it makes the file once the first spans come; the services send theirs every 5 s by default)`);
  const { spans, skipped } = readSpans(file);
  // A receiver killed while it appended leaves a line cut short, which the next append continues: the rest still shows.
  if (skipped.length > 0) console.error(`${nameOf(command)}: ${file}: ${skipped.length} line(s) hold no whole span and were skipped (line ${skipped.slice(0, 5).join(", ")}${skipped.length > 5 ? ", ..." : ""})`);
  const out = formatTraces(spans, text);
  if (out === "") {
    console.error(`${nameOf(command)}: no trace in ${file} has a span mentioning ${JSON.stringify(text)} (the services send their spans every 5 s by default: for an order placed just now, try again in a few seconds; one placed while they ran without OTEL_EXPORTER_OTLP_ENDPOINT naming \`${prog} serve\` has none)`);
    return 1;
  }
  console.log(out);
  return 0;
}

/** The spans of a file `serve` appended to, one JSON object a line, and the numbers of the lines that hold none. */
function readSpans(file: string): { spans: ReceivedSpan[]; skipped: number[] } {
  const spans: ReceivedSpan[] = [];
  const skipped: number[] = [];
  readFileSync(file, "utf8")
    .split("\n")
    .forEach((line, i) => {
      if (line.trim() === "") return;
      try {
        const span = JSON.parse(line) as ReceivedSpan | null;
        // Times that are not whole nanoseconds (an older receiver took any) could not be placed in the tree.
        if (typeof span?.traceId === "string" && typeof span.spanId === "string" && isWholeNanos(span.startNs) && isWholeNanos(span.endNs)) return void spans.push(span);
      } catch {
        // Not JSON: counted as skipped below.
      }
      skipped.push(i + 1);
    });
  return { spans, skipped };
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  tracesCommand(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: Error) => {
      console.error(`${programOf(standalone.prog)}: ${err.message}`);
      process.exit(1);
    },
  );
}
