import { afterAll, beforeAll } from "vitest";
import { type LocalPostgres, startLocalPostgres } from "../../tools/postgres/local-postgres.js";

export type PostgresServerHandle = LocalPostgres;

export interface PostgresServerOptions {
  /**
   * Data directory, kept after `stop`. Default: a fresh temp dir, removed by
   * `stop`. As root the server runs as the postgres user, which must be able to
   * reach it: a dir inside createTempDir's (mode 0700) needs that one opened first.
   */
  readonly dataDir?: string;
  /** Port on 127.0.0.1. Default: a free port. */
  readonly port?: number;
  /** Database created for the suite and named in `url`. Default "concord". */
  readonly database?: string;
}

/**
 * Starts a real, throwaway PostgreSQL server for one test suite (initdb in a
 * temp dir, `postgres` on a free loopback port) and resolves once it accepts
 * connections. Nothing waits for the disk (fsync=off): a killed server keeps
 * every commit, a crash of the machine would not, which a test never needs.
 */
export async function startPostgresServer(options: PostgresServerOptions = {}): Promise<PostgresServerHandle> {
  const known = new Set(["dataDir", "port", "database"]);
  for (const key of Object.keys(options)) if (!known.has(key)) throw new Error(`startPostgresServer: unknown option ${key}`);
  return await startLocalPostgres({ ...options, fsync: false });
}

/**
 * A PostgreSQL server for the enclosing `describe` block: started before its
 * tests, stopped after them. The returned function gives the server inside a test.
 */
export function usePostgresServer(): () => PostgresServerHandle {
  let server: PostgresServerHandle | undefined;
  beforeAll(async () => {
    server = await startPostgresServer();
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
  });
  return () => {
    if (!server) throw new Error("usePostgresServer: the server is there only inside the block's tests");
    return server;
  };
}
