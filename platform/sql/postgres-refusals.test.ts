/**
 * A database URL with a mistake in it (a database or user the server does
 * not know): waiting does not cure it, so opening the database fails at
 * once, saying what to change, where a service's start used to end with the
 * driver's bare error. A server that is not up yet is still waited for, and
 * so is a host name that does not resolve yet.
 */
import { Client } from "pg";
import { describe, expect, it } from "vitest";
import { usePostgresServer } from "../../test/support/postgres.js";
import { Code, unresolvedHost } from "../errors/index.js";
import { freePort } from "../../tools/free-port.js";
import { isDatabaseUnavailable, openDatabase } from "./index.js";

const things = { id: "test_0001_things", sql: "CREATE TABLE things (id TEXT PRIMARY KEY)" };

describe("opening a PostgreSQL database whose URL is wrong", () => {
  const postgres = usePostgresServer();

  /** `url` with its user, host or database replaced. */
  const changed = (url: string, change: (u: URL) => void): string => {
    const u = new URL(url);
    change(u);
    return u.toString();
  };

  it.each([
    ["a database the server does not have", (u: URL) => (u.pathname = "/no_such_database"), /PostgreSQL refuses the connection: database "no_such_database" does not exist\. Create it/],
    ["a user the server does not know", (u: URL) => (u.username = "no_such_user"), /PostgreSQL refuses the connection: role "no_such_user" does not exist\. Correct the user or password in the database URL/],
  ])("refuses %s at once as FAILED_PRECONDITION, saying what to change, rather than failing with the driver's error", async (_, change, said) => {
    const waited: unknown[] = [];
    const opening = openDatabase({ path: changed(postgres().url, change), migrations: [things], owner: "things", onWaiting: (err) => waited.push(err) });
    await expect(opening).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
    await expect(opening).rejects.toThrow(said);
    expect(waited).toEqual([]);
  });

  it("names the URL as its caller does (the variable it was read from), where it said \"the database URL\"", async () => {
    const urlName = "SHELF_DATABASE_URL";
    const wrongDatabase = openDatabase({ path: changed(postgres().url, (u) => (u.pathname = "/no_such_database")), migrations: [things], owner: "things", urlName });
    await expect(wrongDatabase).rejects.toThrow(/Create it \(createdb\), or correct the database name in SHELF_DATABASE_URL$/);
    const wrongUser = openDatabase({ path: changed(postgres().url, (u) => (u.username = "no_such_user")), migrations: [things], owner: "things", urlName });
    await expect(wrongUser).rejects.toThrow(/Correct the user or password in SHELF_DATABASE_URL, or let the server admit them/);
    const timeoutWithUnit = openDatabase({ path: `${postgres().url}?statement_timeout=30s`, migrations: [things], owner: "things", urlName });
    await expect(timeoutWithUnit).rejects.toThrow(/statement_timeout=30s in SHELF_DATABASE_URL: it takes a whole number of milliseconds/);
  });

  it("refuses a statement_timeout in the URL that is not a whole number of milliseconds, naming what was given", async () => {
    const opening = openDatabase({ path: `${postgres().url}?statement_timeout=30s`, migrations: [things], owner: "things" });
    await expect(opening).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
    await expect(opening).rejects.toThrow(/^statement_timeout=30s in the database URL: it takes a whole number of milliseconds \(30000 for 30 s; 0: none\)$/);
  });

  it("refuses another application's database, with tables and no migrations, for a service (FAILED_PRECONDITION), leaving it as it was", async () => {
    const url = await postgres().createDatabase("another_apps");
    const other = new Client({ connectionString: url });
    await other.connect();
    try {
      await other.query("CREATE TABLE customers (id SERIAL PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('Ada')");
      const opening = openDatabase({ path: url, migrations: [things], owner: "things" });
      await expect(opening).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
      await expect(opening).rejects.toThrow(
        "the database holds tables of something else (customers) and none of a service's migrations: name a new or empty database for things; its tables were left as they were",
      );
      const tables = await other.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename");
      expect(tables.rows).toEqual([{ tablename: "customers" }]);
      // An empty one is a new database.
      await other.query("DROP TABLE customers");
      const empty = await openDatabase({ path: url, migrations: [things], owner: "things" });
      await empty.close();
    } finally {
      await other.end();
    }
  });

  it("takes a name server that did not answer (EAI_AGAIN) or a name it does not know (ENOTFOUND) for a database that cannot be reached for now", () => {
    const noAnswer = Object.assign(new Error("getaddrinfo EAI_AGAIN db.internal"), { code: "EAI_AGAIN", errno: -3001, syscall: "getaddrinfo", hostname: "db.internal" });
    expect(isDatabaseUnavailable(noAnswer)).toBe(true);
    // In docker compose or Kubernetes the database's name appears only once its container or pod exists.
    const unknown = Object.assign(new Error("getaddrinfo ENOTFOUND db.internal"), { code: "ENOTFOUND", errno: -3008, syscall: "getaddrinfo", hostname: "db.internal" });
    expect(isDatabaseUnavailable(unknown)).toBe(true);
  });

  /** What opening the database at `path` was told to wait for, once, before it was stopped. */
  const waitedFor = async (path: string): Promise<unknown[]> => {
    const waited: unknown[] = [];
    const stop = new AbortController();
    const opening = openDatabase({
      path,
      migrations: [things],
      owner: "things",
      onWaiting: (err) => {
        waited.push(err);
        stop.abort();
      },
      signal: stop.signal,
    });
    await expect(opening).rejects.toThrow(/aborted/);
    return waited;
  };

  it("still waits for a server that does not answer on the URL's port yet", async () => {
    const port = await freePort();
    expect(await waitedFor(changed(postgres().url, (u) => (u.port = String(port))))).toMatchObject([{ code: Code.UNAVAILABLE }]);
  });

  it("waits for a host name that does not resolve (yet), its error naming the host as given", async () => {
    const waited = await waitedFor(changed(postgres().url, (u) => (u.hostname = "no-such-host.invalid")));
    expect(waited).toMatchObject([{ code: Code.UNAVAILABLE }]);
    expect(unresolvedHost(waited[0])).toBe("no-such-host.invalid");
  });
});
