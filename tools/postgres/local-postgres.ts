/**
 * A PostgreSQL server of our own on loopback, for the tests and for `npm
 * start`: its own data directory (a temp dir, or one that is kept), its own
 * port, never the system cluster (/var/lib/postgresql, port 5432) nor
 * systemd. As root it runs as the `postgres` user (./cluster.ts).
 *
 * Authentication is `trust` on 127.0.0.1 and on the Unix socket unless a
 * `password` is given: anyone who can open a connection on this machine gets
 * in as any role, the superuser too, which suits a test's throwaway server
 * alone. With a password (`npm start --postgres`), TCP asks for it
 * (scram-sha-256); the socket, in the data dir, keeps trust.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Client } from "pg";
import { freePort } from "../free-port.js";
import { logFileProblem } from "../nats/server-config.js";
import { checkDatabaseName, hasCluster, initCluster, prepareDataDir, requirePassword, runAs, serverAccount, superuser } from "./cluster.js";
import { findPostgresBinDir } from "./find-postgres.mjs";
import { type ServerProcess, spawnServer } from "./server-process.js";
import { startWatchdog } from "./watchdog.js";

export interface LocalPostgresOptions {
  /** Data directory: initdb runs there when it holds no cluster yet; kept by `stop`. Default: a fresh temp dir, removed by `stop`. */
  readonly dataDir?: string;
  /** Port on 127.0.0.1. Default: a free port. */
  readonly port?: number;
  /** Database to create (when missing) and name in `url`. Default "concord". */
  readonly database?: string;
  /**
   * false for a throwaway server: initdb --no-sync, fsync=off and
   * full_page_writes=off, so nothing waits for the disk. A commit still
   * reaches the kernel before it returns (synchronous_commit stays on), so a
   * killed server keeps everything committed; a crash of the machine could
   * corrupt the cluster. Default true: PostgreSQL's own durable settings.
   */
  readonly fsync?: boolean;
  /** File the server's log is appended to. Default: kept in memory; its last lines are shown when starting fails. */
  readonly logFile?: string;
  /**
   * The superuser's password (hex), asked of every connection over TCP
   * (scram-sha-256, see `requirePassword`), which then passes it (PGPASSWORD,
   * or its `password`); without it every user of the machine gets in as the
   * superuser. Default: none, trust, for the tests' throwaway servers.
   */
  readonly password?: string;
  /**
   * Called when a server that had started exits while nothing here asked it
   * to (killed, crashed), with how it ended ("ended by SIGKILL"): `restart`
   * starts it again. Default: nothing is told.
   */
  readonly onExit?: (status: string) => void;
}

/** A running local PostgreSQL server, owned by whoever started it. */
export interface LocalPostgres {
  /** "postgres://postgres@127.0.0.1:PORT/DATABASE": superuser `postgres`, no password. */
  readonly url: string;
  readonly port: number;
  readonly database: string;
  readonly dataDir: string;
  /** The Unix socket's directory (the data dir), or undefined when that path is too long for a socket: TCP only then. */
  readonly socketDir: string | undefined;
  /** Creates another database on this server when it is missing; resolves to its URL. */
  createDatabase(name: string): Promise<string>;
  /**
   * Fast shutdown (clients disconnected, a checkpoint written); removes a temp
   * data dir. Final: no restart after it. Should the starting process end
   * without it, even by SIGKILL, the server is stopped all the same.
   */
  stop(): Promise<void>;
  /** Stops (fast shutdown, when running) and starts again on the same port and data; resolves when connections are accepted. */
  restart(): Promise<void>;
  /** Fast shutdown, keeping port and data for `restart`: the database going away for a while. */
  stopForRestart(): Promise<void>;
  /** SIGKILL to the server and its backends, as a crash would; `restart` then recovers from the WAL. */
  kill(): Promise<void>;
}

const readyTimeoutMs = 30_000; // a restart after a crash replays the WAL first
/** Longest Unix socket path Linux takes (sun_path is 108 bytes with its NUL). */
const maxSocketPath = 107;

/**
 * Runs initdb (when the data dir holds no cluster) and `postgres` on
 * 127.0.0.1, and resolves once the server accepts connections and the
 * database exists. Fails, with initdb's or the server's own output, when the
 * server is not installed, the data dir is unusable or it does not start.
 */
export async function startLocalPostgres(options: LocalPostgresOptions = {}): Promise<LocalPostgres> {
  const known = new Set(["dataDir", "port", "database", "fsync", "logFile", "onExit", "password"]);
  for (const key of Object.keys(options)) if (!known.has(key)) throw new Error(`startLocalPostgres: unknown option ${key}`);
  const database = options.database ?? "concord";
  checkDatabaseName(database);
  if (options.port !== undefined && !(Number.isInteger(options.port) && options.port > 0 && options.port < 65536)) {
    throw new Error(`startLocalPostgres: port must be an integer from 1 to 65535, not ${options.port}`);
  }
  // Checked before anything is made: the server's output is never appended through a link put where its log goes.
  const logProblem = options.logFile === undefined ? undefined : logFileProblem(options.logFile, "PostgreSQL");
  if (logProblem !== undefined) throw new Error(logProblem);
  const durable = options.fsync ?? true;
  const binDir = findPostgresBinDir();
  if (!binDir) {
    throw new Error(
      "the PostgreSQL server is not installed (no initdb and postgres in /usr/lib/postgresql/<version>/bin or on PATH); `node tools/setup.mjs --for-tests` installs it, or run: apt-get install -y postgresql",
    );
  }
  const account = serverAccount();
  const ownsDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir === undefined ? mkdtempSync(join(tmpdir(), "concord-pg-")) : resolve(options.dataDir);
  const removeOwnDataDir = () => {
    if (ownsDataDir) rmSync(dataDir, { recursive: true, force: true, maxRetries: 3 });
  };
  try {
    prepareDataDir(dataDir, account);
    if (!hasCluster(dataDir)) initCluster(binDir, dataDir, account, durable);
    if (options.password !== undefined) requirePassword(binDir, dataDir, account, options.password);
  } catch (err) {
    removeOwnDataDir();
    throw err;
  }
  const port = options.port ?? (await freePort());
  // The socket goes into the data dir, which the server owns, rather than
  // /var/run/postgresql, which belongs to the system cluster.
  const socketDir = `${dataDir}/.s.PGSQL.${port}`.length <= maxSocketPath ? dataDir : undefined;
  const settings: Record<string, string> = {
    listen_addresses: "127.0.0.1",
    port: String(port),
    // A list, split at commas unless quoted; "" stands for a quote.
    unix_socket_directories: socketDir === undefined ? "" : `"${socketDir.replaceAll('"', '""')}"`,
    ...(durable ? {} : { fsync: "off", full_page_writes: "off" }),
  };
  const args = ["-D", dataDir, ...Object.entries(settings).flatMap(([name, value]) => ["-c", `${name}=${value}`])];
  const admin = { host: "127.0.0.1", port, user: superuser, database: "postgres", password: options.password };

  let server: ServerProcess | undefined;
  let stopped = false;
  /** Set while this code stops or kills the server: its exit then is no news to `onExit`. */
  let stopAsked = false;
  // A crashed test run must not leave servers behind: the exit handler acts
  // when Node exits on its own, the watchdog when it is killed by a signal.
  const killOnExit = () => {
    server?.kill();
    removeOwnDataDir();
  };
  process.on("exit", killOnExit);
  const watchdog = startWatchdog(dataDir, ownsDataDir);

  const launch = async (): Promise<void> => {
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      const run = spawnServer(join(binDir, "postgres"), args, dataDir, options.logFile, runAs(account));
      server = run;
      const failure = await untilReady(run, admin, dataDir, deadline);
      if (failure === undefined) {
        stopAsked = false;
        void run.exited.then(() => {
          if (!stopAsked && server === run) options.onExit?.(run.exitStatus() ?? "exited");
        });
        return;
      }
      run.kill();
      await run.exited;
      const log = run.log();
      // Backends of a killed server may take a moment to go; until then the server refuses to start.
      if (Date.now() < deadline && log.some((line) => line.includes("pre-existing shared memory block"))) {
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      throw new Error(`postgres on port ${port} (data ${dataDir}) did not start (${failure}); its log:\n${log.join("\n")}`);
    }
  };

  const createDatabase = async (name: string): Promise<string> => {
    checkDatabaseName(name);
    await withClient(admin, async (client) => {
      const found = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
      if (found.rowCount === 0) await client.query(`CREATE DATABASE "${name}"`);
    });
    return `postgres://${superuser}@127.0.0.1:${port}/${name}`;
  };

  // SIGINT is PostgreSQL's fast shutdown: clients are disconnected rather than waited for.
  const shutDown = async (): Promise<void> => {
    stopAsked = true;
    server?.signal("SIGINT");
    await server?.exited;
  };

  try {
    await launch();
    await createDatabase(database);
  } catch (err) {
    stopAsked = true;
    server?.kill();
    await server?.exited;
    process.off("exit", killOnExit);
    removeOwnDataDir();
    watchdog.release();
    throw err;
  }
  return {
    url: `postgres://${superuser}@127.0.0.1:${port}/${database}`,
    port,
    database,
    dataDir,
    socketDir,
    createDatabase,
    async stop() {
      stopped = true;
      await shutDown();
      process.off("exit", killOnExit);
      removeOwnDataDir();
      watchdog.release();
    },
    async restart() {
      if (stopped) throw new Error(`postgres on port ${port} was stopped for good; start a new one`);
      await shutDown();
      await launch();
    },
    stopForRestart: shutDown,
    async kill() {
      stopAsked = true;
      server?.kill();
      await server?.exited;
    },
  };
}

/**
 * Polls until the server answers a query (undefined), or says why it never
 * will. The answer must come from this data dir: a port taken meanwhile by
 * another server answers too, while ours fails to bind and exits.
 */
async function untilReady(server: ServerProcess, admin: ClientConfig, dataDir: string, deadline: number): Promise<string | undefined> {
  let lastError = "";
  while (Date.now() < deadline) {
    const status = server.exitStatus();
    if (status !== undefined) return status;
    try {
      const served = await withClient(admin, async (client) => (await client.query("SELECT current_setting('data_directory') AS dir")).rows[0]?.dir);
      if (served === dataDir) return undefined;
      lastError = `port ${admin.port} is served by another PostgreSQL server (data ${served})`;
    } catch (err) {
      lastError = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return `not ready after ${readyTimeoutMs} ms: ${lastError}`;
}

interface ClientConfig {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly database: string;
}

/** Connects, runs `work` and always closes. */
async function withClient<T>(config: ClientConfig, work: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({ ...config, connectionTimeoutMillis: 2_000 });
  client.on("error", () => {}); // the server going away meanwhile; the query in flight fails with it
  try {
    await client.connect();
    return await work(client);
  } finally {
    await client.end().catch(() => {});
  }
}

