/**
 * A PostgreSQL server that stops answering in the middle of a session (a
 * failover to another host, a network that drops packets): statements,
 * transactions, the relay's session lock and LISTEN must find out within
 * their limits instead of waiting until the kernel gives up on the
 * connection, and the pool must serve again once the server is back.
 */
import { createServer, connect, type Server, type Socket } from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startPostgresServer, type PostgresServerHandle } from "../../test/support/postgres.js";
import { Code, StatusError } from "../errors/index.js";
import { migrate } from "./migrate.js";
import { openPostgres, type PostgresOptions } from "./postgres.js";

/**
 * A TCP relay to `target` that can go quiet: from then on the connections it
 * carries pass nothing either way, forever (as to a host that is gone), and
 * the ones made while it is quiet are accepted and never answered.
 */
async function quietableProxy(target: URL): Promise<{ port: number; quiet(on: boolean): void; close(): Promise<void> }> {
  let quiet = false;
  const sockets = new Set<Socket>();
  const dead = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    sockets.add(inbound);
    if (quiet) {
      dead.add(inbound);
      inbound.on("data", () => undefined);
      inbound.on("error", () => undefined);
      return;
    }
    const outbound = connect(Number(target.port), target.hostname);
    sockets.add(outbound);
    const pass = (from: Socket, to: Socket) =>
      from.on("data", (chunk) => {
        if (!dead.has(from)) to.write(chunk);
      });
    pass(inbound, outbound);
    pass(outbound, inbound);
    for (const [a, b] of [
      [inbound, outbound],
      [outbound, inbound],
    ] as const) {
      a.on("error", () => undefined);
      // A pair goes down together only while it is alive: a quiet one stays open, as a connection to a vanished host does.
      a.on("close", () => !dead.has(a) && b.destroy());
    }
    pairs.push([inbound, outbound]);
  });
  const pairs: [Socket, Socket][] = [];
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    quiet(on) {
      quiet = on;
      if (on) for (const pair of pairs.splice(0)) for (const s of pair) dead.add(s);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** How `work` ended: its status code (or "resolved"), and when. */
async function outcome(work: Promise<unknown>): Promise<{ code: Code | string; ms: number }> {
  const started = performance.now();
  return work.then(
    () => ({ code: "resolved", ms: performance.now() - started }),
    (err: unknown) => ({ code: err instanceof StatusError ? err.code : `not a StatusError: ${String(err)}`, ms: performance.now() - started }),
  );
}

describe("a PostgreSQL server that stops answering mid-session", () => {
  let postgres: PostgresServerHandle;
  /** A database opened with `options` through a quietable proxy to the test's server. */
  const behindQuietableProxy = async (options: PostgresOptions) => {
    const proxy = await quietableProxy(new URL(postgres.url));
    const url = new URL(postgres.url);
    url.port = String(proxy.port);
    return { proxy, db: openPostgres(url.toString(), options) };
  };
  beforeAll(async () => {
    postgres = await startPostgresServer();
  }, 60_000);
  afterAll(async () => {
    await postgres?.stop();
  });

  it("fails a statement past its timeout as DEADLINE_EXCEEDED on the same connection; a transaction may ask for another limit, and migrations have none", async () => {
    const db = openPostgres(postgres.url, { poolSize: 1, statementTimeoutMs: 300 });
    const backend = async () => (await db.query<{ pid: number }>("SELECT pg_backend_pid() AS pid"))[0].pid;
    try {
      const pid = await backend();
      const slow = await outcome(db.query("SELECT pg_sleep(2)"));
      // The database answers: a consumer counts this as a failed attempt rather than waiting for the database.
      expect(slow.code).toBe(Code.DEADLINE_EXCEEDED);
      expect(slow.ms).toBeLessThan(1_500);
      expect(await backend()).toBe(pid);
      // The server probes the session, so one whose process vanished ends (and its locks go) within about 25 s.
      expect(await db.query("SELECT current_setting('tcp_keepalives_idle') AS idle, current_setting('tcp_keepalives_count') AS count")).toEqual([{ idle: "10", count: "3" }]);
      expect((await outcome(db.transaction((tx) => tx.query("SELECT pg_sleep(2)")))).code).toBe(Code.DEADLINE_EXCEEDED);
      await db.transaction((tx) => tx.query("SELECT pg_sleep(0.6)"), { statementTimeoutMs: 2_000 });
      // Without a limit, a pause between statements longer than the default's is allowed too.
      await db.transaction(
        async (tx) => {
          await tx.query("SELECT 1");
          await new Promise((resolve) => setTimeout(resolve, 700));
          await tx.query("SELECT 2");
        },
        { statementTimeoutMs: 0 },
      );
      await migrate(db, [{ id: "quiet_0001_slow", sql: "SELECT pg_sleep(0.6)" }]);
      // The limit asked for was the transaction's own.
      expect((await outcome(db.query("SELECT pg_sleep(0.6)"))).code).toBe(Code.DEADLINE_EXCEEDED);
      // Statements sent together in one transaction each have their whole time to be answered (it starts when each is sent).
      await db.transaction((tx) => Promise.all([1, 2, 3, 4].map(() => tx.query("SELECT pg_sleep(0.2)"))));
    } finally {
      await db.close();
    }
  });

  it("runs a statement alone, outside any transaction, on a connection of its own with the limit it asks for", async () => {
    const db = openPostgres(postgres.url, { poolSize: 1, statementTimeoutMs: 300 });
    try {
      await db.run("CREATE TABLE alone (a INTEGER NOT NULL)");
      await expect(db.transaction((tx) => tx.run("CREATE INDEX CONCURRENTLY alone_by_a ON alone (a)"))).rejects.toThrow(/cannot run inside a transaction block/);
      await db.runAlone("SELECT pg_sleep(0.6)", { statementTimeoutMs: 0 });
      expect(await db.runAlone("CREATE INDEX CONCURRENTLY alone_by_a ON alone (a)", { statementTimeoutMs: 0 })).toBe(0);
      expect(await db.query("SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = 'alone_by_a'::regclass")).toEqual([{ valid: true }]);
      expect((await outcome(db.runAlone("SELECT pg_sleep(2)", { statementTimeoutMs: 500 }))).code).toBe(Code.DEADLINE_EXCEEDED);
      // The pooled connection kept the database's limit.
      expect((await outcome(db.query("SELECT pg_sleep(0.6)"))).code).toBe(Code.DEADLINE_EXCEEDED);
    } finally {
      await db.close();
    }
  });

  it("takes the URL's statement_timeout as the limit and its options after the platform's own", async () => {
    const url = new URL(postgres.url);
    url.searchParams.set("statement_timeout", "1500");
    url.searchParams.set("options", "-c search_path=from_url -c tcp_keepalives_count=4");
    const db = openPostgres(url.toString(), { poolSize: 1 });
    try {
      await db.query("SELECT pg_sleep(0.8)");
      expect((await outcome(db.query("SELECT pg_sleep(3)"))).code).toBe(Code.DEADLINE_EXCEEDED);
      expect(await db.query("SELECT current_setting('search_path') AS path, current_setting('tcp_keepalives_idle') AS idle, current_setting('tcp_keepalives_count') AS count")).toEqual([
        { path: "from_url", idle: "10", count: "4" },
      ]);
    } finally {
      await db.close();
    }
    expect(() => openPostgres(postgres.url, { sessionCheckMs: 0 })).toThrow(/openPostgres: invalid sessionCheckMs: 0 \(a whole number above 0\)/);
  });

  it("drops connections whose server went quiet, failing their statements as UNAVAILABLE, and serves again once it answers", async () => {
    const { proxy, db } = await behindQuietableProxy({ poolSize: 2, statementTimeoutMs: 400, connectTimeoutMs: 300 });
    try {
      // Both pooled connections made and idle.
      await Promise.all([db.query("SELECT 1"), db.query("SELECT 2")]);
      expect(db.pool.totalCount).toBe(2);
      proxy.quiet(true);
      const results = await Promise.all([outcome(db.query("SELECT 1")), outcome(db.transaction((tx) => tx.query("SELECT 1"))), outcome(db.query("SELECT 3"))]);
      for (const r of results) {
        expect(r.code).toBe(Code.UNAVAILABLE);
        // Each within the statement timeout and its grace (2 x 400 ms), or a connect timeout after that: nowhere near a kernel's quarter of an hour.
        expect(r.ms).toBeLessThan(5_000);
      }
      proxy.quiet(false);
      await expect.poll(() => db.query<{ one: number }>("SELECT 1 AS one").catch(() => []), { timeout: 10_000 }).toEqual([{ one: 1 }]);
      await Promise.all([db.query("SELECT 1"), db.transaction((tx) => tx.query("SELECT 1"))]);
    } finally {
      await db.close();
      await proxy.close();
    }
  });

  it("closes within its grace when the server went quiet, cutting a statement under way and idle connections, rather than waiting for the statement's timeout", async () => {
    // A stop's last statements (a readiness check, a metrics read) on a server that hangs: their connections would be
    // dropped only 15 s later (the statement timeout and its grace), and a stop of the service waited that long.
    const { proxy, db } = await behindQuietableProxy({ poolSize: 2, statementTimeoutMs: 10_000, closeGraceMs: 500 });
    try {
      await Promise.all([db.query("SELECT 1"), db.query("SELECT 2")]);
      proxy.quiet(true);
      const underWay = outcome(db.query("SELECT 1"));
      // Sent on a pooled connection before the close.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const closing = await outcome(db.close());
      expect(closing.code).toBe("resolved");
      expect(closing.ms).toBeLessThan(5_000); // 500 ms of grace; a loaded machine adds to it, the statement timeout would be 10 s and more
      expect((await underWay).code).toBe(Code.UNAVAILABLE);
    } finally {
      await db.close();
      await proxy.close();
    }
    expect(() => openPostgres(postgres.url, { closeGraceMs: -1 })).toThrow(/openPostgres: invalid closeGraceMs: -1/);
  });

  it("counts the relay's lock as lost, and makes LISTEN again, when their server goes quiet", async () => {
    const { proxy, db } = await behindQuietableProxy({ statementTimeoutMs: 400, connectTimeoutMs: 300, sessionCheckMs: 200 });
    const direct = new pg.Client({ connectionString: postgres.url });
    await direct.connect();
    let heard = 0;
    const unlisten = await db.listen("quiet_test", () => heard++);
    try {
      const lease = await db.tryLock(4242);
      expect(lease).toBeDefined();
      await direct.query("NOTIFY quiet_test");
      await expect.poll(() => heard, { timeout: 5_000 }).toBe(1);
      proxy.quiet(true);
      const lost = await outcome(lease!.lost.then(() => undefined));
      expect(lost.code).toBe("resolved");
      // Asked every 200 ms, dropped after 400 ms without an answer.
      expect(lost.ms).toBeLessThan(3_000);
      proxy.quiet(false);
      // LISTEN is made again on a new connection: the listener is called once for what it may have missed, and a
      // notification sent now is heard.
      await expect
        .poll(
          async () => {
            await direct.query("NOTIFY quiet_test");
            return heard;
          },
          { timeout: 15_000, interval: 300 },
        )
        .toBeGreaterThan(2);
      await lease!.release();
    } finally {
      await unlisten();
      await direct.end();
      await db.close();
      await proxy.close();
    }
  });
});
