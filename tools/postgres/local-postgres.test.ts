import { chmodSync, existsSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Client } from "pg";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { startLocalPostgres } from "./local-postgres.js";

describe("startLocalPostgres", () => {
  const dir = tempDirForSuite();
  chmodSync(dir, 0o755); // as root the server runs as the postgres user, who must get through it

  it("keeps PostgreSQL's durable settings by default, logs to the given file and keeps its data dir", async () => {
    const dataDir = join(dir, "postgres");
    const logFile = join(dir, "postgres.log");
    const server = await startLocalPostgres({ dataDir, logFile, database: "shop" });
    try {
      const client = new Client({ connectionString: server.url });
      await client.connect();
      const settings = await client.query("SELECT current_setting('fsync') AS fsync, current_setting('full_page_writes') AS fpw, current_setting('synchronous_commit') AS sync, current_database() AS db");
      await client.end();
      expect(settings.rows).toEqual([{ fsync: "on", fpw: "on", sync: "on", db: "shop" }]);
      expect(readFileSync(logFile, "utf8")).toContain("database system is ready to accept connections");
    } finally {
      await server.stop();
    }
    expect(existsSync(join(dataDir, "PG_VERSION"))).toBe(true);
    expect(readFileSync(logFile, "utf8")).toContain("database system is shut down");
  });

  it("asks for the password it is given over TCP, on a cluster initdb made with trust too: without it every user of the machine got in as the superuser", { timeout: 60_000 }, async () => {
    const dataDir = join(dir, "password");
    const open = await startLocalPostgres({ fsync: false, dataDir });
    await open.stop();
    const password = "ab".repeat(32);
    const server = await startLocalPostgres({ fsync: false, dataDir, password });
    const connect = async (config: { password?: string }) => {
      const client = new Client({ host: "127.0.0.1", port: server.port, user: "postgres", database: server.database, ...config });
      await client.connect();
      try {
        return (await client.query("SELECT current_user AS who")).rows[0]?.who as string;
      } finally {
        await client.end();
      }
    };
    try {
      await expect(connect({})).rejects.toThrow(/password/);
      await expect(connect({ password: "cd".repeat(32) })).rejects.toThrow(/password authentication failed for user "postgres"/);
      expect(await connect({ password })).toBe("postgres");
      expect(await server.createDatabase("orders")).toBe(server.url.replace(/\/concord$/, "/orders"));
    } finally {
      await server.stop();
    }
  });

  it("keeps its log file its owner's alone, one an earlier start left readable by others too", async () => {
    const logFile = join(dir, "readable.log");
    writeFileSync(logFile, "", { mode: 0o644 });
    chmodSync(logFile, 0o644);
    const server = await startLocalPostgres({ fsync: false, dataDir: join(dir, "readable"), logFile });
    try {
      // A failing statement's entry quotes the key it broke.
      const client = new Client({ connectionString: server.url });
      await client.connect();
      await client.query("CREATE TABLE customers (email TEXT PRIMARY KEY)");
      await client.query("INSERT INTO customers VALUES ('ada@example.com')");
      await expect(client.query("INSERT INTO customers VALUES ('ada@example.com')")).rejects.toThrow(/duplicate key/);
      await client.end();
      await expect.poll(() => readFileSync(logFile, "utf8")).toContain("(email)=(ada@example.com)");
      expect(statSync(logFile).mode & 0o777).toBe(0o600);
    } finally {
      await server.stop();
    }
    const fresh = join(dir, "fresh.log");
    const again = await startLocalPostgres({ fsync: false, dataDir: join(dir, "fresh"), logFile: fresh });
    await again.stop();
    expect(statSync(fresh).mode & 0o777).toBe(0o600);
  });

  it("refuses a symbolic link where its log goes, making nothing and leaving the file it names as it was", async () => {
    const victim = join(dir, "victim");
    writeFileSync(victim, "the user's\n", { mode: 0o644 });
    const link = join(dir, "linked.log");
    symlinkSync(victim, link);
    const dataDir = join(dir, "linked");
    await expect(startLocalPostgres({ fsync: false, dataDir, logFile: link })).rejects.toThrow(
      `${link} is a symbolic link (to ${victim}), which PostgreSQL would follow, writing its log into the file it names; remove the link (the log is made anew there)`,
    );
    expect(existsSync(dataDir)).toBe(false);
    expect(readFileSync(victim, "utf8")).toBe("the user's\n");
    expect(statSync(victim).mode & 0o777).toBe(0o644);
  });

  it("listens on TCP alone when the data dir's path is too long for a Unix socket", async () => {
    const dataDir = join(dir, "d".repeat(110));
    const server = await startLocalPostgres({ fsync: false, dataDir });
    try {
      expect(server.socketDir).toBeUndefined();
      const client = new Client({ connectionString: server.url });
      await client.connect();
      expect((await client.query("SHOW unix_socket_directories")).rows).toEqual([{ unix_socket_directories: "" }]);
      await client.end();
    } finally {
      await server.stop();
    }
  });

  it("fails with the server's own words when its port is taken, rather than taking the server there for its own", async () => {
    const blocker = await startLocalPostgres({ fsync: false });
    const dataDir = join(dir, "second");
    try {
      await expect(startLocalPostgres({ fsync: false, dataDir, port: blocker.port })).rejects.toThrow(
        /did not start \(exited with status 1\)[\s\S]*could not bind IPv4 address "127\.0\.0\.1"/,
      );
      expect(existsSync(join(dataDir, "postmaster.pid"))).toBe(false); // it is not running
      const client = new Client({ connectionString: blocker.url });
      await client.connect();
      expect((await client.query("SHOW data_directory")).rows).toEqual([{ data_directory: blocker.dataDir }]);
      await client.end();
    } finally {
      await blocker.stop();
    }
  });
});
