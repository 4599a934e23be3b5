import { spawn } from "node:child_process";
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Client } from "pg";
import { describe, expect, it } from "vitest";
import { startPostgresServer } from "./postgres.js";
import { createTempDir } from "./temp-dir.js";

/** Runs one statement on a connection of its own, so no connection outlives a restart. */
async function query(url: string | { host: string; port: number; user: string; database: string }, sql: string): Promise<Record<string, unknown>[]> {
  const client = new Client(typeof url === "string" ? { connectionString: url } : url);
  client.on("error", () => {});
  try {
    await client.connect();
    return (await client.query(sql)).rows;
  } finally {
    await client.end().catch(() => {});
  }
}

/** The postmaster's pid: the first line of postmaster.pid in the data dir. */
function postmasterPid(dataDir: string): number {
  return Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
}

describe("startPostgresServer", () => {
  it("starts PostgreSQL on a free loopback port, keeps committed rows across restart and SIGKILL, and removes its temp dir on stop", async () => {
    const server = await startPostgresServer();
    expect(server.url).toBe(`postgres://postgres@127.0.0.1:${server.port}/concord`);
    try {
      await query(server.url, "CREATE TABLE harness (id int PRIMARY KEY, note text NOT NULL)");
      await query(server.url, "INSERT INTO harness VALUES (1, 'before restart')");
      await server.restart();
      await query(server.url, "INSERT INTO harness VALUES (2, 'before kill')");

      const held = new Client({ connectionString: server.url });
      const lost = new Promise<Error>((resolve) => held.on("error", resolve));
      await held.connect();
      await server.kill();
      // The backend went with the postmaster, without a word: the held connection just breaks, and nobody answers.
      expect((await lost).message).toMatch(/Connection terminated unexpectedly/);
      await held.end().catch(() => {});
      await expect(query(server.url, "SELECT 1")).rejects.toThrow(/ECONNREFUSED/);

      await server.restart();
      expect(await query(server.url, "SELECT id, note FROM harness ORDER BY id")).toEqual([
        { id: 1, note: "before restart" },
        { id: 2, note: "before kill" },
      ]);
      expect(await query(server.url, "SHOW fsync")).toEqual([{ fsync: "off" }]);
    } finally {
      await server.stop();
    }
    expect(existsSync(server.dataDir)).toBe(false);
    await expect(query(server.url, "SELECT 1")).rejects.toThrow(/ECONNREFUSED/);
    await expect(server.restart()).rejects.toThrow(/stopped for good/);
  });

  it("serves only its own data dir: loopback TCP and a socket there, run by a non-root user", async () => {
    const server = await startPostgresServer({ database: "harness_db" });
    try {
      expect(server.socketDir).toBe(server.dataDir);
      const settings = await query(
        server.url,
        "SELECT current_setting('data_directory') AS data, current_setting('listen_addresses') AS listen, current_setting('unix_socket_directories') AS sockets, current_database() AS db",
      );
      expect(settings).toEqual([{ data: server.dataDir, listen: "127.0.0.1", sockets: `"${server.dataDir}"`, db: "harness_db" }]);
      // The Unix socket answers too (pg takes a directory as host).
      expect(await query({ host: server.dataDir, port: server.port, user: "postgres", database: "harness_db" }, "SELECT 1 AS one")).toEqual([{ one: 1 }]);
      const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${postmasterPid(server.dataDir)}/status`, "utf8"))?.[1]);
      expect(uid).not.toBe(0); // initdb and postgres refuse root: as root, they run as the postgres user
      expect(statSync(server.dataDir).uid).toBe(uid);

      const orders = await server.createDatabase("orders");
      expect(orders).toBe(`postgres://postgres@127.0.0.1:${server.port}/orders`);
      expect(await query(orders, "SELECT current_database() AS db")).toEqual([{ db: "orders" }]);
      expect(await server.createDatabase("orders")).toBe(orders); // already there: same URL, nothing changed
    } finally {
      await server.stop();
    }
  });

  it("keeps a given data dir, whatever its name, and starts again on the cluster in it", async () => {
    const dir = createTempDir();
    chmodSync(dir.path, 0o755); // as root the server runs as the postgres user, who must get through it
    const dataDir = join(dir.path, "data, kept \"here\""); // the socket setting is a comma-separated list
    try {
      const first = await startPostgresServer({ dataDir });
      expect(existsSync(join(dataDir, `.s.PGSQL.${first.port}`))).toBe(true);
      await query(first.url, "CREATE TABLE kept (id int)");
      await query(first.url, "INSERT INTO kept VALUES (7)");
      await first.stop();
      expect(existsSync(join(dataDir, "PG_VERSION"))).toBe(true);

      const second = await startPostgresServer({ dataDir });
      try {
        expect(await query(second.url, "SELECT id FROM kept")).toEqual([{ id: 7 }]);
      } finally {
        await second.stop();
      }
      expect(existsSync(join(dataDir, "PG_VERSION"))).toBe(true);
    } finally {
      dir.remove();
    }
  });

  it("refuses bad options and a data dir that holds something else, writing nothing", async () => {
    await expect(startPostgresServer({ fsync: true } as never)).rejects.toThrow(/unknown option fsync/);
    await expect(startPostgresServer({ database: "Orders; DROP" })).rejects.toThrow(/not a lower-case identifier/);
    await expect(startPostgresServer({ port: 70_000 })).rejects.toThrow(/port must be an integer/);
    const dir = createTempDir();
    try {
      writeFileSync(join(dir.path, "notes.txt"), "mine");
      await expect(startPostgresServer({ dataDir: dir.path })).rejects.toThrow(/neither empty nor a PostgreSQL data directory/);
      expect(readdirSync(dir.path)).toEqual(["notes.txt"]);
    } finally {
      dir.remove();
    }
  });

  for (const ending of ["an uncaught error", "SIGTERM", "SIGKILL"] as const) {
    it(`stops the server and removes its temp dir when the process that started it ends by ${ending} without stopping it`, async () => {
      const script = [
        'import { readFileSync } from "node:fs";',
        'import { startPostgresServer } from "./test/support/postgres.ts";',
        "const server = await startPostgresServer();",
        "const pid = Number(readFileSync(server.dataDir + '/postmaster.pid', 'utf8').split('\\n')[0]);",
        "console.log(JSON.stringify({ url: server.url, dataDir: server.dataDir, pid }));",
        ending === "an uncaught error" ? "throw new Error('the test run crashed');" : "setInterval(() => {}, 1000);",
      ].join("\n");
      const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      const exited = new Promise((resolve) => child.once("exit", resolve));
      while (!stdout.includes("\n") && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
      const { url, dataDir, pid } = JSON.parse(stdout.trim()) as { url: string; dataDir: string; pid: number };
      if (ending !== "an uncaught error") child.kill(ending);
      await exited;
      if (ending === "an uncaught error") expect(stderr).toContain("the test run crashed");

      // A process that ends between the two reads is not running (its /proc entry goes with it).
      const running = () => {
        try {
          return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
        } catch {
          return false;
        }
      };
      // The exit handler acts at once; the watchdog within moments of the process's end (a fast shutdown).
      for (let i = 0; i < 200 && (running() || existsSync(dataDir)); i++) await new Promise((r) => setTimeout(r, 50));
      expect(running()).toBe(false);
      expect(existsSync(dataDir)).toBe(false);
      await expect(query(url, "SELECT 1")).rejects.toThrow(/ECONNREFUSED/);
    });
  }
});
