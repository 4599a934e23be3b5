/**
 * The configuration file of a nats-server Concord manages: the test
 * harness's, `npm start`'s and the bench's. Flags cannot say everything
 * needed: `sync_interval` lives in the jetstream block, and a cluster needs
 * its cluster block with routes.
 */
import { chmodSync, closeSync, constants, fstatSync, lstatSync, openSync, readlinkSync, readSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { notRegularFile } from "../../platform/config/setting-file.js";

/** One node of a cluster on loopback: its cluster name, its own route port, and every node's route port (its own included). */
export interface ClusterRoutes {
  readonly name: string;
  readonly port: number;
  readonly routePorts: readonly number[];
  /**
   * The password every node's routes present and require (user "route";
   * letters and digits). Without it the route port takes any process that
   * connects as a server, and that server's clients act on every subject
   * and stream with none of the users' permissions.
   */
  readonly secret?: string;
}

export interface NatsServerConfig {
  /** Unique within a cluster; names the stream and consumer leaders in `nats stream info`. */
  readonly serverName: string;
  /** Client port on 127.0.0.1. */
  readonly port: number;
  readonly storeDir: string;
  /**
   * true: `sync_interval: always`, every write fsynced before it is
   * acknowledged, so an acknowledged event survives the machine crashing.
   * false: the server's default, fsync every 2 minutes.
   */
  readonly syncAlways: boolean;
  /** Monitoring port on 127.0.0.1 (`/healthz`, `/jsz`); none when not set. */
  readonly monitorPort?: number;
  readonly cluster?: ClusterRoutes;
  /** Log file; standard error when not set. */
  readonly logFile?: string;
  /**
   * A file holding the `authorization` block (tools/nats/authorization.ts),
   * included by its name, so it must sit next to the configuration file.
   * None: clients connect without credentials.
   */
  readonly authorizationInclude?: string;
}

/**
 * The most messages a consumer may hold delivered and unacknowledged, and
 * what one that names no limit gets: JetStream's own default, which the
 * services' durables take. Unbounded, a consumer asking for more holds its
 * stream whole: four of the observer's, each with max_ack_pending 10^9,
 * pulling 200,000 events and acking none took a server from 93 to 231 MiB,
 * and sixteen may be made on each stream.
 */
export const maxAckPending = 1_000;

/**
 * The environment of a nats-server Concord starts: `env` with GOMAXPROCS 1,
 * unless `env` sets GOMAXPROCS itself. Such a server shares the machine with
 * the services it serves, and with one Go scheduler thread it does the same
 * work for about a fifth less CPU: JetStream publishes, pulls and acks of
 * 200-byte messages on 2 cores took 101 to 103 µs of the server's CPU a
 * message with Go's default (a thread per core) against 80 µs at 800 a
 * second, and 21 to 22 against 17 to 18 µs at 15,000 a second, every one
 * delivered either way. Go's idle threads look for work each time one is
 * woken; a server given more cores by GOMAXPROCS takes more load.
 */
export function natsServerEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return env.GOMAXPROCS ? env : { ...env, GOMAXPROCS: "1" };
}

/** The user name routes authenticate as when the cluster has a secret. */
const routeUser = "route";

/** The text of a nats-server configuration file for `config`, everything on 127.0.0.1. */
export function natsServerConfigText(config: NatsServerConfig): string {
  const q = (s: string) => JSON.stringify(s);
  const lines = [
    "# Written by Concord for a server it manages; rewritten at every start.",
    `server_name: ${q(config.serverName)}`,
    `listen: ${q(`127.0.0.1:${config.port}`)}`,
  ];
  if (config.monitorPort !== undefined) lines.push(`http: ${q(`127.0.0.1:${config.monitorPort}`)}`);
  if (config.logFile !== undefined) lines.push(`log_file: ${q(config.logFile)}`);
  if (config.authorizationInclude !== undefined) {
    if (/[/\\]/.test(config.authorizationInclude)) throw new Error(`authorizationInclude names a file next to the configuration, got ${config.authorizationInclude}`);
    lines.push(`include ${q(config.authorizationInclude)}`);
  }
  lines.push("jetstream {", `  store_dir: ${q(config.storeDir)}`);
  if (config.syncAlways) lines.push("  sync_interval: always");
  lines.push(`  limits { max_ack_pending: ${maxAckPending} }`, "}");
  if (config.cluster) {
    const { name, port, routePorts, secret } = config.cluster;
    if (secret !== undefined && !/^[A-Za-z0-9]{16,}$/.test(secret)) throw new Error("the route secret must be 16 or more letters and digits");
    const credentials = secret === undefined ? "" : `${routeUser}:${secret}@`;
    lines.push(
      "cluster {",
      `  name: ${q(name)}`,
      `  listen: ${q(`127.0.0.1:${port}`)}`,
      ...(secret === undefined ? [] : [`  authorization { user: ${q(routeUser)}, password: ${q(secret)} }`]),
      `  routes: [${routePorts.filter((p) => p !== port).map((p) => q(`nats-route://${credentials}127.0.0.1:${p}`)).join(", ")}]`,
      "}",
    );
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Writes the configuration file for `config` to `path`, readable by its
 * owner only (it may hold the route secret); returns the arguments that
 * start nats-server with it.
 */
export function writeNatsServerConfig(path: string, config: NatsServerConfig): string[] {
  replaceOwnerFile(path, natsServerConfigText(config));
  return ["-c", path];
}

/**
 * Why `program` (nats-server by default; PostgreSQL's server too) may not be
 * given `path` for its log, or undefined once it may: nats-server opens its
 * log file following a symbolic link, as a child's output appended to a file
 * opened for it would, and would append to whatever file one there names
 * (and a FIFO would hold it up). A log file missing is made here, new,
 * readable by its owner only, and one there is opened as this user without
 * following a link (O_NOFOLLOW), so that a link put there meanwhile is
 * refused too.
 */
export function logFileProblem(path: string, program = "nats-server"): string | undefined {
  const found = lstatSync(path, { throwIfNoEntry: false });
  const link = () => `${path} is a symbolic link (to ${readlinkSync(path)}), which ${program} would follow, writing its log into the file it names; remove the link (the log is made anew there)`;
  if (found?.isSymbolicLink()) return link();
  const kind = found && notRegularFile(found);
  if (kind) return `${path} is ${kind}, not a log file ${program} can append to; remove it (the log is made anew there)`;
  try {
    closeSync(openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ELOOP") return link();
    throw err;
  }
  return undefined;
}

/** The size of the log file at `path` (0 when there is none): where what a server writes from now on starts, for `fatalLogLine`. */
export function logFileSize(path: string): number {
  return lstatSync(path, { throwIfNoEntry: false })?.size ?? 0;
}

/** The most of a log's end `fatalLogLine` reads: a fatal line is among a server's last. */
const fatalLineSearchBytes = 64 * 1024;

/**
 * The last fatal line nats-server wrote to its log at `path` after byte
 * `from` (`[FTL] Can't start JetStream: storage directory is not a
 * directory`), without its prefix, or undefined when there is none: why a
 * server that exited at start-up did, which its exit code does not say.
 */
export function fatalLogLine(path: string, from: number): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(from, size - fatalLineSearchBytes);
    if (size <= start) return undefined;
    const buffer = Buffer.alloc(size - start);
    const read = readSync(fd, buffer, 0, buffer.length, start);
    const lines = buffer.subarray(0, read).toString("utf8").split("\n");
    for (let i = lines.length - 1; i >= 0; i--) {
      const fatal = /\[FTL\] (.*)$/.exec(lines[i].trimEnd());
      if (fatal) return fatal[1];
    }
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * Puts `text` at `path` as a new file readable by its owner only: written
 * to `partial` (default `<path>.partial`), made new, and renamed over
 * `path`, so that a symbolic link at either name is replaced, not written
 * through (it had the start overwrite, and make 0600, whatever file it
 * pointed to).
 */
export function replaceOwnerFile(path: string, text: string, partial = `${path}.partial`): void {
  rmSync(partial, { force: true });
  writeFileSync(partial, text, { mode: 0o600, flag: "wx" });
  chmodSync(partial, 0o600);
  renameSync(partial, path);
}
