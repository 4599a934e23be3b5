/**
 * Reading the domain events off JetStream for the operator tools
 * (watch-events, `concord events tail`, `concord dlq`): connecting, decoding
 * a payload by its `ce-type` with the generated codecs, and following every
 * stream in order through consumers of the observer's names (nothing is
 * acknowledged or changed).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DeliverPolicy, type JsMsg, type NatsConnection, type NatsError, connect, nkeyAuthenticator } from "nats";
import { allEvents, allStreams } from "../gen/ts/concord_streams.js";
import { deadLetterStreamSpec, type EventDescriptor, readSeedFile, receivedHeaders, seedGivenForItsFile, userSeedOf } from "../platform/events/index.js";
import { natsUrl, settingFileModeExposure, urlsWithoutPasswords } from "../platform/config/index.js";
import { dataDir as dataDirOf } from "./client-security.js";
import { portSetting } from "./port-setting.js";
import { openObserverReader, type ReaderStart } from "./nats/observer-consumer.js";
import { readStartedServices } from "./started-services.js";
import { listed } from "./services.js";

/**
 * Ends the process quietly, with status 0, when what reads its output stops
 * reading (`concord status | head -1`, `watch-events.ts --all | head`): the next write fails with EPIPE,
 * which would otherwise be an unhandled error with its stack trace.
 */
export function exitQuietlyOnClosedOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE") process.exit(0);
      throw err;
    });
  }
}

/**
 * The NATS URL(s) the tools use unless told otherwise: $NATS_URL; else the
 * server `npm start` runs on $NATS_PORT (all three of a cluster when the
 * `npm start` running on DATA_DIR put its first there); else those the
 * `npm start` running on DATA_DIR gave its services
 * (DATA_DIR/start-services.json: its NATS_PORT, its three with --cluster);
 * else nats://127.0.0.1:4222.
 */
export function defaultNatsUrl(env: NodeJS.ProcessEnv = process.env): string {
  if (env.NATS_URL) return env.NATS_URL;
  const recorded = readStartedServices(dataDirOf(env))?.nats;
  if (!env.NATS_PORT) return recorded ?? "nats://127.0.0.1:4222";
  const named = `nats://127.0.0.1:${env.NATS_PORT}`;
  // The port the running start gave its first server (set in the shell it was started from, say): its record keeps a
  // cluster's other two, through which a tool still connects while that server is down.
  return recorded?.split(",")[0]?.trim() === named ? recorded : named;
}

/**
 * What is wrong with the NATS URL(s) a tool was given, by its --nats or
 * else NATS_URL, read as the services read NATS_URL (`natsUrl`), or else with
 * NATS_PORT, read as `npm start` reads it: one line naming the option or the
 * variable, without a password; undefined when nothing is.
 */
export function natsUrlProblem(given: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const [source, raw] = given !== undefined ? ["--nats ", given] : env.NATS_URL ? ["NATS_URL=", env.NATS_URL] : [undefined, undefined];
  if (source === undefined) {
    // NATS_PORT, read as `npm start` reads it: "42x" failed only once connecting, as "Invalid URL". Else npm start's record or the default.
    try {
      portSetting("NATS_PORT", env.NATS_PORT, 4222);
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  }
  try {
    natsUrl(raw);
    return undefined;
  } catch (err) {
    return `${source}${urlsWithoutPasswords(raw)} is invalid: ${(err as Error).message}`;
  }
}

/** The seed file to connect with, if any: --nkey, $NATS_NKEY_SEED, or the seed of `user` (the observer, or the operator) that `npm start` made. */
export function seedFileToUse(given: string | undefined, user: "observer" | "operator" = "observer"): string | undefined {
  if (given) return given;
  if (process.env.NATS_NKEY_SEED) return process.env.NATS_NKEY_SEED;
  const made = join(dataDirOf(), "nats-credentials", `${user}.nk`);
  return existsSync(made) ? made : undefined;
}

/** An nkey authenticator for the seed in `file`; the seed never appears in a message. */
function authenticatorOf(file: string) {
  const seedGiven = seedGivenForItsFile(file);
  if (seedGiven !== undefined) throw new Error(seedGiven);
  let read: ReturnType<typeof readSeedFile>;
  try {
    read = readSeedFile(file);
  } catch (err) {
    throw new Error(`cannot read the nkey seed file ${file}: ${(err as Error).message}`);
  }
  // Refused as the services refuse one (a seed others may read is exposed whoever reads it), but not for its owner:
  // the seed gives the tool no more than its user's rights, and `sudo npx concord` reads seeds of the user who started the system.
  const exposed = settingFileModeExposure(file, "the NATS nkey seed file", "secret", "connect to NATS as its user", read.stats);
  if (exposed !== undefined) throw new Error(exposed);
  return nkeyAuthenticator(userSeedOf(file, read.text));
}

/**
 * Connects as `name` to `url` (several comma-separated for a cluster), with
 * the nkey seed in `seedFile` (default: seedFileToUse's choice), waiting at
 * most `timeoutMs` for a server to greet it; rejects with a message naming
 * the URL. A server that takes the connection and never answers (stopped,
 * hung) leaves nats.js's socket open, which keeps the process from ending by
 * itself: a command ends with `endProcess`.
 */
export async function connectNats(url: string, name: string, seedFile = seedFileToUse(undefined), timeoutMs = 20_000): Promise<NatsConnection> {
  const authenticator = seedFile === undefined ? undefined : authenticatorOf(seedFile);
  return connect({ servers: url.split(",").map((u) => u.trim()), name, timeout: timeoutMs, ...(authenticator && { authenticator }) }).catch((err: NatsError) => {
    const why =
      err.code === "TIMEOUT"
        ? `no answer within ${timeoutMs / 1000} s (a server that takes connections and sends nothing is stopped or hung, or is no NATS server: a gRPC or metrics address, say)`
        : err.code === "CONNECTION_REFUSED"
          ? `CONNECTION_REFUSED: nothing listens there (is the system running? --nats, NATS_URL or NATS_PORT as \`npm start\` was given them, or the DATA_DIR of the start that runs it, names another server)`
          : err.message;
    if (/Authorization Violation/i.test(err.message)) throw new Error(`NATS at ${url} refused the connection: Authorization Violation: ${credentialsProblem(seedFile)}`);
    throw new Error(`cannot reach NATS at ${url}: ${why}`);
  });
}

/** Why a server that wants credentials refused these: none found (where they were looked for), or a seed it does not know. */
function credentialsProblem(seedFile: string | undefined): string {
  if (seedFile === undefined) {
    return `it wants credentials, and no seed was given: NATS_NKEY_SEED is unset and ${join(dataDirOf(), "nats-credentials")} holds none (\`npm start\` makes them in its DATA_DIR: set DATA_DIR to the directory it uses, or NATS_NKEY_SEED to a seed file)`;
  }
  return `it does not know the seed in ${seedFile} (one made by another DATA_DIR's \`npm start\`, or replaced since: use the seeds of the start that runs this server)`;
}

/**
 * Ends the process with `code` once what it printed is written. A command
 * does not wait for the event loop to empty: a NATS connection that never
 * got its server's greeting keeps a socket open that nats.js never closes.
 */
export function endProcess(code: number): void {
  process.exitCode = code;
  let writing = 2;
  const written = () => {
    if (--writing === 0) process.exit(code);
  };
  process.stdout.write("", written);
  process.stderr.write("", written);
}

/** What to do before the connection closes on Ctrl-C or SIGTERM: readers give their consumers' names back. */
const beforeQuit = new Set<() => Promise<void>>();

/**
 * Ctrl-C or SIGTERM deletes the consumers `watchEvents` reads through,
 * closes `nc` and exits with status 0 (within 2 s, however that goes).
 */
export function exitOnSignals(nc: NatsConnection): void {
  const quit = () => {
    setTimeout(() => process.exit(0), 2_000).unref();
    void Promise.allSettled([...beforeQuit].map((close) => close()))
      .then(() => nc.close())
      .then(() => process.exit(0));
  };
  process.once("SIGINT", quit);
  process.once("SIGTERM", quit);
}

/**
 * The server's reason for an error, with its JetStream error code when it
 * gave one. A refused subscription to _INBOX says whose seed that is: a
 * service's user takes replies on an inbox of its own, so every request of
 * a tool connected with it fails so. A refused publish says that the
 * commands that change things take the operator's seed: the observer's
 * (NATS_NKEY_SEED set for the nats CLI, say) may publish nothing.
 */
export function reason(err: unknown): string {
  const apiError = (err as NatsError).api_error;
  const message = apiError?.description ?? (err instanceof Error ? err.message : String(err));
  if (/^'?Permissions Violation for Subscription to "_INBOX\./.test(message)) {
    return `${message.replace(/^'|'$/g, "")}: the seed connected with is not the observer's or the operator's (a service's user takes replies only on an inbox of its own); the tools read with the observer's seed and change dead letters and streams with the operator's: leave NATS_NKEY_SEED (and watch-events' --nkey) unset for npm start's, in DATA_DIR/nats-credentials`;
  }
  if (/^'?Permissions Violation for Publish to "/.test(message)) {
    return `${message.replace(/^'|'$/g, "")}: the seed connected with is not the operator's; dlq replay, dlq purge, consumer redeliver and streams provision act as the operator: leave NATS_NKEY_SEED unset for npm start's operator.nk, in DATA_DIR/nats-credentials, or name the operator's seed in it`;
  }
  if (/(^|: )TIMEOUT$/.test(message)) {
    // nats.js says no more when a request gets no answer in time.
    return `${message}: NATS did not answer in time (its server stopped, hung or overloaded?; \`concord status\` says whether it answers)`;
  }
  return apiError?.err_code ? `${message} (err_code ${apiError.err_code})` : message;
}

const byType = new Map<string, EventDescriptor<unknown>>(allEvents.map((e) => [e.typeName, e as EventDescriptor<unknown>]));

/** A payload as JSON by its `ce-type`, or a note saying why it cannot be shown. */
export function decodedPayload(type: string, data: Uint8Array): unknown {
  const descriptor = byType.get(type);
  if (!descriptor) return `<${data.length} bytes of an unknown type>`;
  try {
    return (descriptor.codec as unknown as { toJSON(m: unknown): unknown }).toJSON(descriptor.codec.decode(data));
  } catch (err) {
    // The decoder's own words ("cant skip wire type 7") say little alone: what the bytes were meant to be comes first.
    return `<${data.length} bytes that do not decode as ${type}: ${(err as Error).message}>`;
  }
}

/** One event as the tools print it. */
export interface EventLine {
  readonly stream: string;
  readonly seq: number;
  readonly subject: string;
  readonly type: string;
  readonly id?: string;
  readonly source?: string;
  readonly time?: string;
  readonly dlqReason?: string;
  readonly payload: unknown;
}

/** A message read from a stream, as printed. */
export function eventLine(stream: string, msg: JsMsg): EventLine {
  // Read from the block as it came: nats.js's own decoder (msg.headers) throws on a header it would not have sent
  // (a name with a space, a lone line feed), which another client may have stored, and the tool would stop there.
  const headers = receivedHeaders(msg);
  const header = (name: string) => headers[name] || undefined;
  const type = headers["ce-type"] ?? "";
  return { stream, seq: msg.seq, subject: msg.subject, type, id: header("ce-id"), source: header("ce-source"), time: header("ce-time"), dlqReason: header("concord-dlq-reason"), payload: decodedPayload(type, msg.data) };
}

/** Where a stream is read from: its first stored message (sequence 1 or the first after it) for a replay, else what comes next. */
export function startAt(all: boolean): ReaderStart {
  return all ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 1 } : { deliver_policy: DeliverPolicy.New };
}

export interface WatchOptions {
  readonly nc: NatsConnection;
  /** The tool's name, for what it says on standard error. */
  readonly name: string;
  /** From the first stored event instead of new ones only. */
  readonly all: boolean;
  /** Only events on a subject matching this NATS subject filter; all when absent. */
  readonly subject?: string;
  /** Only events of this ce-type; all when absent. */
  readonly type?: string;
  readonly print: (line: EventLine) => void;
}

/** What a watcher waits for, once its streams are open: where, from where on, and which events it prints. */
function followingSaid(streams: readonly string[], server: string, { all, subject, type }: Pick<WatchOptions, "all" | "subject" | "type">): string {
  const only = [subject !== undefined && `on a subject matching ${subject}`, type !== undefined && `of type ${type}`].filter(Boolean).join(", ");
  const from = all ? "the stored events from the first, then each new one" : "each new event from now on";
  return `following ${listed(streams)} at ${server}: printing ${from}${only ? ` (only those ${only})` : ""}; Ctrl-C stops`;
}

/**
 * Follows every stream the contracts declare, plus the dead letter stream,
 * printing each event that matches. A stream that is missing, or on which
 * the server refuses a consumer, is named on standard error; once the
 * others are open, it says there, once, which it follows, where, from where
 * on and which events it prints (nothing is printed until an event comes,
 * and a quiet system looked like a hung tool), standard output keeping the
 * events alone. Rejects when no stream can be read. Runs until the
 * connection closes.
 */
export async function watchEvents(options: WatchOptions): Promise<void> {
  const { nc, name, all, subject, type, print } = options;
  const matches = (line: EventLine) => (subject === undefined || subjectMatches(subject, line.subject)) && (type === undefined || line.type === type);
  const jsm = await nc.jetstreamManager();
  const streams = [...allStreams.map((s) => s.name), deadLetterStreamSpec.name];
  /** The stream's messages, or undefined (said on standard error) when it cannot be read. */
  const open = async (stream: string) => {
    try {
      await jsm.streams.info(stream);
    } catch (err) {
      const missing = (err as NatsError).api_error?.err_code === 10059;
      console.error(`${name}: stream ${stream} ${missing ? "does not exist yet (start the services first)" : `cannot be read: ${reason(err)}`}; skipping it`);
      return undefined;
    }
    try {
      return await openObserverReader(nc, { stream, start: startAt(all) });
    } catch (err) {
      console.error(`${name}: the server refused a consumer on stream ${stream}: ${reason(err)}`);
      return undefined;
    }
  };
  const opened = await Promise.all(streams.map(async (stream) => ({ stream, reader: await open(stream) })));
  if (opened.every((o) => o.reader === undefined)) throw new Error(`no stream can be read (${streams.join(", ")})`);
  console.error(`${name}: ${followingSaid(opened.filter((o) => o.reader !== undefined).map((o) => o.stream), nc.getServer(), options)}`);
  await Promise.all(
    opened.map(async ({ stream, reader }) => {
      if (!reader) return;
      const close = () => reader.close();
      beforeQuit.add(close);
      try {
        for await (const msg of reader.messages()) {
          const line = eventLine(stream, msg);
          if (matches(line)) print(line);
        }
      } catch (err) {
        console.error(`${name}: stream ${stream} can no longer be read: ${reason(err)}`);
      } finally {
        beforeQuit.delete(close);
        await reader.close();
      }
    }),
  );
}

/**
 * Whether `subject` matches a NATS subject pattern: `*` stands for one
 * token, a final `>` for one or more.
 */
export function subjectMatches(pattern: string, subject: string): boolean {
  const want = pattern.split(".");
  const have = subject.split(".");
  for (let i = 0; i < want.length; i++) {
    if (want[i] === ">") return i === want.length - 1 && have.length > i;
    if (i >= have.length || (want[i] !== "*" && want[i] !== have[i])) return false;
  }
  return want.length === have.length;
}
