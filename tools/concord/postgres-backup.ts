/**
 * Backing up a service's PostgreSQL database with `pg_dump` (custom format,
 * one snapshot, while the service runs) and putting a dump back with
 * `pg_restore` once every instance of the service has stopped. The programs
 * are those of the server's major version, found where Debian's packages
 * put them (as the server's own are, see tools/postgres/find-postgres.mjs).
 * What goes beside a dump, and what a restore prints, are the SQLite
 * backup's (./database-backup.ts).
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { urlWithoutSecrets } from "../../platform/config/index.js";
import { notRegularFile } from "../../platform/config/setting-file.js";
import { findBinary } from "../find-binary.mjs";
import { debianPostgresRoot } from "../postgres/find-postgres.mjs";
import { ownershipProblem, writeNewFile } from "./database-backup.js";

/** How long connecting to the server may take before the command gives up. */
const connectTimeoutMs = 5_000;

/** What a database command learns of a service's PostgreSQL database before it changes anything. */
export interface PostgresDatabaseFacts {
  /** The server's major version (15, say), which pg_dump and pg_restore must match. */
  readonly major: number;
  /** The schema its tables are in (`public`, unless the URL's options say otherwise). */
  readonly schema: string;
  readonly tables: ReadonlySet<string>;
  /** What its schema_owner names; none where it has no such table. */
  readonly owners: readonly string[];
  /** The other sessions open on it, each as `application (pid P on the server, from ADDRESS)`. */
  readonly sessions: readonly string[];
}

/**
 * Connects to the database at `url` and reads what the commands check: the
 * server's version, the tables of the current schema and whose they say they
 * are, and the other sessions on the database. Throws, the URL's password
 * left out, when it cannot.
 */
export async function readPostgresDatabase(url: string): Promise<PostgresDatabaseFacts> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: connectTimeoutMs, application_name: "concord database" });
  client.on("error", () => undefined);
  try {
    await client.connect();
  } catch (err) {
    throw new Error(`cannot connect to ${urlWithoutSecrets(url)}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const version = await client.query<{ n: string; schema: string }>("SELECT current_setting('server_version_num') AS n, current_schema() AS schema");
    const { n, schema } = version.rows[0]!;
    const tables = new Set((await client.query<{ name: string }>("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")).rows.map((r) => r.name));
    const owners = tables.has("schema_owner") ? (await client.query<{ service: string }>("SELECT service FROM schema_owner")).rows.map((r) => r.service) : [];
    // A user without pg_read_all_stats sees other users' sessions without their application and address.
    const others = await client.query<{ pid: number; app: string | null; addr: string | null }>(
      "SELECT pid, application_name AS app, client_addr::text AS addr FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' ORDER BY pid",
    );
    const sessions = others.rows.map((s) => `${s.app ? JSON.stringify(s.app) : "a session"} (pid ${s.pid} on the server${s.addr ? `, from ${s.addr}` : ""})`);
    return { major: Math.floor(Number(n) / 10_000), schema, tables, owners, sessions };
  } catch (err) {
    throw new Error(`reading ${urlWithoutSecrets(url)} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The major version a PostgreSQL program says it is of (`pg_dump (PostgreSQL) 15.13 ...`: 15), or undefined. */
function programMajor(path: string): number | undefined {
  const said = spawnSync(path, ["--version"], { encoding: "utf8", timeout: 10_000 });
  const match = /\(PostgreSQL\) (\d+)/.exec(said.stdout ?? "");
  return match ? Number(match[1]) : undefined;
}

/**
 * The path of `program` (pg_dump, pg_restore) of PostgreSQL `major`, the
 * server's: Debian's `<root>/<major>/bin/<program>`, where tools/setup.mjs's
 * packages put it, else the one on PATH when it says it is of that version.
 * Throws, naming what was found and what to install, when there is none:
 * an older pg_dump refuses a newer server, and an archive a newer one writes
 * is one an older pg_restore cannot read.
 */
export function postgresProgram(program: "pg_dump" | "pg_restore", major: number, root = debianPostgresRoot): string {
  const own = join(root, String(major), "bin", program);
  if (existsSync(own)) return own;
  const found: string[] = [];
  const onPath = findBinary(program);
  if (onPath !== undefined) {
    const version = programMajor(onPath);
    if (version === major) return onPath;
    found.push(`${onPath} (${version === undefined ? "of no version it says" : `PostgreSQL ${version}`})`);
  }
  const majors = existsSync(root) ? readdirSync(root).filter((name) => /^\d+$/.test(name)) : [];
  for (const other of majors) if (existsSync(join(root, other, "bin", program))) found.push(join(root, other, "bin", program));
  throw new Error(
    `the server runs PostgreSQL ${major}, and no ${program} of that version is installed (found ${found.length > 0 ? found.join(", ") : "none"}): install PostgreSQL ${major}'s client programs (apt-get install postgresql-client-${major})`,
  );
}

/**
 * The URL as libpq takes it in a program's arguments, without its password,
 * which goes in the program's environment (PGPASSWORD): arguments are there
 * for any user of the machine to read (ps).
 */
function libpqConnection(url: string): { readonly dbname: string; readonly env: NodeJS.ProcessEnv } {
  try {
    const parsed = new URL(url);
    if (parsed.password === "") return { dbname: url, env: process.env };
    const password = decodeURIComponent(parsed.password);
    parsed.password = "";
    return { dbname: parsed.href, env: { ...process.env, PGPASSWORD: password } };
  } catch {
    return { dbname: url, env: process.env };
  }
}

/** Runs a PostgreSQL program to its end; throws with what it said on stderr when it fails. */
function runProgram(path: string, args: readonly string[], env: NodeJS.ProcessEnv): string {
  const ran = spawnSync(path, args, { encoding: "utf8", env, maxBuffer: 64 * 1024 * 1024 });
  if (ran.error) throw new Error(`${path} could not be run: ${ran.error.message}`, { cause: ran.error });
  if (ran.status !== 0) {
    const said = ran.stderr.trim().split("\n").filter(Boolean);
    throw new Error(`${path} failed (${ran.signal ?? `exit ${ran.status}`}): ${said.length > 0 ? said.slice(0, 3).join("; ") : "it said nothing"}${said.length > 3 ? ` (and ${said.length - 3} more line(s))` : ""}`);
  }
  return ran.stdout;
}

/**
 * Writes a dump of the database at `url` to `target` with `pgDump`
 * (custom format, one snapshot, the service going on), as the SQLite backup
 * writes its copy: through `<target>.partial`, made new, flushed, then
 * given its name, never replacing a file (writeNewFile). Resolves with its size.
 */
export function backupPostgres(url: string, target: string, pgDump: string): { readonly bytes: number } {
  const { dbname, env } = libpqConnection(url);
  try {
    writeNewFile(target, (partial) => runProgram(pgDump, ["--format=custom", `--file=${partial}`, `--dbname=${dbname}`], { ...env, PGAPPNAME: "concord database backup" }));
  } catch (err) {
    throw new Error(`backing up ${urlWithoutSecrets(url)} to ${target} failed: ${(err as Error).message}`, { cause: err });
  }
  return { bytes: statSync(target).size };
}

/**
 * What `pgRestore` finds in `dump`: the tables it holds in `schema`, and why
 * it is no dump of `service`'s database that can be put there (a file of
 * another kind, a version it cannot read, another service's database, or
 * one never migrated in full), or undefined. Reads the archive's table of
 * contents and schema_owner's rows, changing nothing.
 */
export function readDump(dump: string, service: string, schema: string, pgRestore: string): { readonly problem: string | undefined; readonly tables: ReadonlySet<string> } {
  const kind = notRegularFile(statSync(dump));
  if (kind) return { problem: `it is ${kind}, not a pg_dump archive`, tables: new Set() };
  let contents: string;
  try {
    contents = runProgram(pgRestore, ["--list", dump], process.env);
  } catch (err) {
    return { problem: `it is no pg_dump archive that pg_restore reads: ${(err as Error).message}`, tables: new Set() };
  }
  // A line of the table of contents: `215; 1259 16390 TABLE public schema_owner postgres`.
  const tables = new Set(contents.split("\n").map((line) => /^\d+; \d+ \d+ TABLE (\S+) (\S+) /.exec(line)).filter((m) => m !== null && m[1] === schema).map((m) => m![2]!));
  let owners: string[] = [];
  if (tables.has("schema_owner")) {
    const rows = runProgram(pgRestore, ["--data-only", `--schema=${schema}`, "--table=schema_owner", "--file=-", dump], process.env).split("\n");
    const start = rows.findIndex((line) => /^COPY \S+ \(service\) FROM stdin;$/.test(line));
    const end = rows.indexOf("\\.", start);
    if (start >= 0 && end > start) owners = rows.slice(start + 1, end);
  }
  return { problem: ownershipProblem(tables, owners, service)?.reason, tables };
}

/**
 * Puts `dump` back into the database at `url` with `pgRestore`: its objects
 * dropped where they exist and made again from the dump, in one transaction,
 * so that a restore that fails leaves the database as it was.
 */
export function restorePostgres(url: string, dump: string, pgRestore: string): void {
  const { dbname, env } = libpqConnection(url);
  try {
    runProgram(pgRestore, ["--clean", "--if-exists", "--single-transaction", "--exit-on-error", `--dbname=${dbname}`, dump], { ...env, PGAPPNAME: "concord database restore" });
  } catch (err) {
    throw new Error(`restoring ${dump} into ${urlWithoutSecrets(url)} failed, and, in one transaction, changed nothing: ${(err as Error).message}`, { cause: err });
  }
}
