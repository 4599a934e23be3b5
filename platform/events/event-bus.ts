import type { Stats } from "node:fs";
import { connect, nkeyAuthenticator, nkeys, type JetStreamClient, type JetStreamManager, type NatsConnection } from "nats";
import { readSettingFileAndStats, settingFileExposure } from "../config/index.js";
import { causeChain } from "../errors/index.js";
import { processName, type Logger } from "../log/index.js";
import { checkOptions, positiveInteger } from "../options/index.js";
import { closeAbandonedDials } from "./nats-internals.js";

export interface EventBusOptions {
  /** NATS server URL(s), e.g. "nats://127.0.0.1:4222"; several comma-separated for a cluster. */
  readonly url: string;
  /** The service's name: the connection's name shown by the server (`nats server report connections`, /connz), with `instance`. */
  readonly name: string;
  /**
   * Which process of the service this is (the `instance` of its log lines):
   * the connection is named `<name> (<instance>)`, so that two instances'
   * connections can be told apart. Default: named `name` alone.
   */
  readonly instance?: string;
  readonly logger: Logger;
  /** Pause between reconnect attempts. Default 250 ms (with jitter). */
  readonly reconnectTimeWaitMs?: number;
  /**
   * A file holding the NATS user's nkey seed (`SU...`), read at connect time,
   * refused when others than its owner may read it or another user than this
   * process's and root owns it; none: connect without credentials (a server
   * without authorization).
   */
  readonly nkeySeedFile?: string;
  /**
   * Prefix of the connection's reply subjects: the server lets a user's
   * replies through on its own prefix only. Default `_INBOX_<name>`, whatever the instance.
   */
  readonly inboxPrefix?: string;
}

/** A service's connection to NATS and JetStream. */
export interface EventBus {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  /**
   * Whether the connection is up: false from a disconnect (a server gone, or
   * one that hangs, after two unanswered pings) until nats.js reconnects.
   */
  connected(): boolean;
  /** Drains (pending publishes and acks go out) and closes; a server that does not drain it within 5 s is left undrained, in one warning. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * Connects with reconnects that never give up, so that a NATS restart is a
 * pause rather than an outage: the outbox keeps events and consumers resume.
 * Fails at once when the first connection or JetStream cannot be reached.
 */
export async function connectEventBus(options: EventBusOptions): Promise<EventBus> {
  checkOptions("connectEventBus", options, ["url", "name", "instance", "logger", "reconnectTimeWaitMs", "nkeySeedFile", "inboxPrefix"]);
  const { url, name } = options;
  if (typeof url !== "string" || url.trim() === "") throw new Error("connectEventBus: url is required");
  if (typeof name !== "string" || name.trim() === "") throw new Error("connectEventBus: name is required");
  const reconnectTimeWait = positiveInteger("connectEventBus", "reconnectTimeWaitMs", options.reconnectTimeWaitMs, 250);
  const drainTimeoutMs = 5_000;
  const logger = options.logger.child({ component: "event-bus" });
  const inboxPrefix = options.inboxPrefix ?? `_INBOX_${name}`;
  const authenticator = options.nkeySeedFile === undefined ? undefined : nkeyAuthenticator(readSeed(options.nkeySeedFile));

  closeAbandonedDials();
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: url.split(",").map((s) => s.trim()),
      name: processName(name, options.instance),
      inboxPrefix,
      ...(authenticator && { authenticator }),
      maxReconnectAttempts: -1,
      reconnectTimeWait,
      reconnectJitter: Math.min(reconnectTimeWait, 100),
      // A server that hangs (a stopped process, a stalled machine) keeps its socket open: only unanswered
      // pings tell. Two missed (maxPingOut) and the client moves to another server of the cluster.
      pingInterval: 2_000,
      // Async stack traces cost an Error object per request (10% of publishing CPU) for nicer stacks only.
      noAsyncTraces: true,
    });
  } catch (err) {
    throw new Error(`connecting to NATS at ${url} failed: ${(err as Error).message}`, { cause: err });
  }
  let up = true;
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === "disconnect") {
        up = false;
        logger.warn({ server: status.data }, "disconnected from NATS; reconnecting");
      } else if (status.type === "reconnect") {
        up = true;
        logger.info({ server: status.data }, "reconnected to NATS");
      } else if (status.type === "error") {
        // A permissions violation names the subject: the server refused it to this service's user.
        const refused = status.permissionContext;
        if (refused) logger.error({ operation: refused.operation, subject: refused.subject }, `NATS refused ${refused.operation} to ${refused.subject}: not in the permissions of this service's user`);
        else logger.error({ err: status.data }, "NATS connection error");
      }
    }
  })().catch(() => undefined);

  let jsm: JetStreamManager;
  try {
    jsm = await nc.jetstreamManager();
  } catch (err) {
    await nc.close();
    throw new Error(`JetStream is not available at ${url} (is nats-server running with -js?): ${(err as Error).message}`, { cause: err });
  }
  let closed: Promise<void> | undefined;
  return {
    nc,
    js: nc.jetstream(),
    jsm,
    connected: () => up && !nc.isClosed(),
    close() {
      closed ??= (async () => {
        if (nc.isClosed()) return;
        // Draining needs the server; with NATS down it would wait for ever.
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`not drained within ${drainTimeoutMs} ms`)), drainTimeoutMs);
        });
        try {
          await Promise.race([nc.drain(), timeout]);
        } catch (err) {
          // One line, no stack: the reason is a timeout or the connection's own error, and what it means is said here.
          const reason = (err as Error).message;
          logger.warn(
            { reason },
            `closed the NATS connection without draining it (${reason}): publishes and acks still in flight went unconfirmed; ` +
              "nothing is lost: events not confirmed stay in the outbox and are published again once the outbox is relayed (at the next start), " +
              "and messages not acknowledged are delivered again, their inboxes skipping those already handled",
          );
          await nc.close();
        } finally {
          clearTimeout(timer);
        }
      })();
      return closed;
    },
  };
}

/** A NATS nkey seed file that cannot be read or holds no user seed. */
export class SeedFileError extends Error {
  override readonly name: string = "SeedFileError";
}

/**
 * Why `file`, given as the name of a seed file, cannot be one: it looks like
 * a seed itself (NATS_NKEY_SEED=SU...), or an account's or an operator's
 * (SA..., SO...), or holds one (a .creds file's text), which a message naming
 * the file would print into the terminal and the logs. Undefined for any
 * other name.
 */
export function seedGivenForItsFile(file: string): string | undefined {
  if (!/^\s*S[UAONCX][A-Z2-7]{20,}\s*$/.test(file) && !/(?<![A-Z2-7])S[UAONCX][A-Z2-7]{56}(?![A-Z2-7])/.test(file)) return undefined;
  return "the nkey seed file given (NATS_NKEY_SEED) is a seed itself, not shown, where the path of a file holding one goes: put the seed in a file and give its path";
}

/** Throws the SeedFileError `connectEventBus` would meet for `file`, one that holds no good NATS user seed; a service checks it before it makes its database. */
export function checkSeedFile(file: string): void {
  readSeed(file);
}

/** The seed in `file`, or a SeedFileError naming the file (one others may read, too); the seed itself is never part of a message. */
function readSeed(file: string): Uint8Array {
  const seedGiven = seedGivenForItsFile(file);
  if (seedGiven !== undefined) throw new SeedFileError(seedGiven);
  let read: ReturnType<typeof readSeedFile>;
  try {
    read = readSeedFile(file);
  } catch (err) {
    throw new SeedFileError(`reading the NATS nkey seed file ${file} failed: ${(err as Error).message}`, { cause: err });
  }
  const exposed = settingFileExposure(file, "the NATS nkey seed file", "secret", "connect to NATS as this service's user", read.stats);
  if (exposed !== undefined) throw new SeedFileError(exposed);
  return userSeedOf(file, read.text);
}

/** The most a seed file may hold: a seed is one line of 58 characters, so a file of more than 4 KiB is none. */
const seedFileBytes = 4096;

/** The text of a seed file, trimmed, with the file's Stats as read (for settingFileExposure). Throws as readSettingFile. */
export function readSeedFile(file: string): { readonly text: string; readonly stats: Stats } {
  const { bytes, stats } = readSettingFileAndStats(file, seedFileBytes);
  return { text: bytes.toString("utf8").trim(), stats };
}

/** The text of a seed file, trimmed. Throws as readSettingFile. */
export const seedFileText = (file: string): string => readSeedFile(file).text;

/**
 * `text`, read from `file`, as a NATS user's nkey seed, or a SeedFileError
 * naming the file. A seed with a character changed (a bad copy, an edit)
 * keeps its form but not its checksum, which nats.js found only as it
 * connected: the tools said NATS could not be reached, the service failed
 * its start with the bare nkeys error.
 */
export function userSeedOf(file: string, text: string): Uint8Array {
  if (!/^SU[A-Z2-7]+$/.test(text)) throw new SeedFileError(`${file} does not hold a NATS user nkey seed (one line starting with SU)`);
  const seed = new TextEncoder().encode(text);
  try {
    nkeys.fromSeed(seed);
  } catch {
    throw new SeedFileError(
      `${file} does not hold a valid NATS user nkey seed: its checksum does not match (the file is damaged, or was edited); put the seed back from a backup, or, with the system stopped, delete the file and start again to have a new one made`,
    );
  }
  return seed;
}

// nats.js codes (and the Node system errors behind them) of a server that is not there, not reachable,
// or not answering in time, JetStream off included ("503", no responders).
const unreachableCodes = new Set([
  "CONNECTION_REFUSED",
  "CONNECTION_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_DRAINING",
  "DISCONNECT",
  "TIMEOUT",
  "503",
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
]);

/**
 * Whether `err`, or an error it was caused by, says that NATS or JetStream
 * could not be reached or did not answer in time: worth trying again later,
 * unlike a refusal such as a stream that conflicts with its spec.
 */
export function isNatsUnreachable(err: unknown): boolean {
  for (const e of causeChain(err, 8)) if (unreachableCodes.has(String((e as { code?: unknown }).code))) return true;
  return false;
}
