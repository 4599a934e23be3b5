/**
 * A real PgBouncer in front of a test's PostgreSQL server (Debian's pgbouncer
 * package, which `node tools/setup.mjs --for-tests` installs): its own ini and
 * userlist in a temp dir, a free port on 127.0.0.1, no Unix socket. As root
 * it runs as the postgres user, as the server does (PgBouncer refuses to run
 * as root).
 */
import { chownSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "pg";
import { findBinary } from "../../tools/find-binary.mjs";
import { runAs, serverAccount, superuser } from "../../tools/postgres/cluster.js";
import { type ServerProcess, spawnServer } from "../../tools/postgres/server-process.js";
import { freePort } from "../../tools/free-port.js";
import type { PostgresServerHandle } from "./postgres.js";

export interface PgBouncerOptions {
  /** How server sessions are shared between clients: "session" (one client's until it leaves), "transaction" or "statement". */
  readonly poolMode: "session" | "transaction" | "statement";
  /** Whether the startup parameters PgBouncer does not know are ignored, as the README says to configure it (default), or refused. */
  readonly ignoreStartupParameters?: boolean;
  /** Server connections per database (default_pool_size; default 20, PgBouncer's own default). */
  readonly poolSize?: number;
  /** How long a client's statement waits for a free server connection before PgBouncer fails it, s (query_wait_timeout; default 120, PgBouncer's). */
  readonly queryWaitTimeoutS?: number;
}

/** A running PgBouncer, owned by the test that started it. */
export interface PgBouncerHandle {
  /** The PostgreSQL server's database `database` through the pooler. */
  urlOf(database: string): string;
  readonly port: number;
  /** Stops it (SIGINT: at once, clients disconnected) and removes its temp dir. */
  stop(): Promise<void>;
}

const readyTimeoutMs = 10_000;

/**
 * Starts PgBouncer in front of `postgres` and resolves once it answers a
 * query through to the server. Every database of the server is reachable
 * through it as the server's superuser, without a password (auth_type
 * trust). The startup parameters the platform sends that PgBouncer does not
 * know (`options`, statement_timeout, idle_in_transaction_session_timeout)
 * are ignored, as the README says a pooler must be told to, unless
 * `ignoreStartupParameters` is false.
 */
export async function startPgBouncer(postgres: PostgresServerHandle, options: PgBouncerOptions): Promise<PgBouncerHandle> {
  const program = findBinary("pgbouncer");
  if (!program) throw new Error("pgbouncer is not installed; `node tools/setup.mjs --for-tests` installs it, or run: apt-get install -y pgbouncer");
  const account = serverAccount();
  const dir = mkdtempSync(join(tmpdir(), "concord-pgbouncer-"));
  const port = await freePort();
  let server: ServerProcess | undefined;
  const killOnExit = () => server?.kill();
  try {
    writeFileSync(join(dir, "userlist.txt"), `"${superuser}" ""\n`);
    writeFileSync(
      join(dir, "pgbouncer.ini"),
      [
        "[databases]",
        `* = host=127.0.0.1 port=${postgres.port}`,
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        `listen_port = ${port}`,
        "unix_socket_dir =",
        "auth_type = trust",
        `auth_file = ${join(dir, "userlist.txt")}`,
        `pool_mode = ${options.poolMode}`,
        ...(options.ignoreStartupParameters === false ? [] : ["ignore_startup_parameters = options,statement_timeout,idle_in_transaction_session_timeout"]),
        "max_client_conn = 200",
        `default_pool_size = ${options.poolSize ?? 20}`,
        `query_wait_timeout = ${options.queryWaitTimeoutS ?? 120}`,
        "",
      ].join("\n"),
    );
    if (account) chownSync(dir, account.uid, account.gid);
    server = spawnServer(program, [join(dir, "pgbouncer.ini")], dir, undefined, runAs(account));
    process.on("exit", killOnExit);
    await untilReady(server, `postgres://${superuser}@127.0.0.1:${port}/postgres`);
  } catch (err) {
    server?.kill();
    await server?.exited;
    process.off("exit", killOnExit);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    port,
    urlOf: (database) => `postgres://${superuser}@127.0.0.1:${port}/${database}`,
    async stop() {
      server?.signal("SIGINT");
      await server?.exited;
      process.off("exit", killOnExit);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls until a query goes through the pooler to the server; fails with PgBouncer's log when it exits or never does. */
async function untilReady(server: ServerProcess, url: string): Promise<void> {
  const deadline = Date.now() + readyTimeoutMs;
  let lastError = "";
  while (Date.now() < deadline) {
    const status = server.exitStatus();
    if (status !== undefined) throw new Error(`pgbouncer ${status}; its log:\n${server.log().join("\n")}`);
    const client = new Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
    client.on("error", () => {});
    try {
      await client.connect();
      await client.query("SELECT 1");
      return;
    } catch (err) {
      lastError = (err as Error).message;
    } finally {
      await client.end().catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`pgbouncer not ready after ${readyTimeoutMs} ms: ${lastError}; its log:\n${server.log().join("\n")}`);
}
