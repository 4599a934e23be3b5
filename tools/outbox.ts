/**
 * Looks at a service's outbox: how many events wait, which were parked
 * (JetStream refuses them for good) and why, and sends parked events again
 * or deletes one.
 */
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { parseArgs } from "node:util";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { dropParked, outboxMigrations, parkedEvents, retryParked, type ParkedEvent } from "../platform/events/index.js";
import { databaseUrl } from "../platform/config/index.js";
import { Code, StatusError } from "../platform/errors/index.js";
import { databaseOwners, isNotSqliteFile, isPostgresUrl, openDatabase } from "../platform/sql/index.js";
import { redact } from "../platform/sql/postgres.js";
import { emptyDatabaseOption, parseArgsProblem, usageProblemLine } from "./parse-args-problem.js";
import { readStartedServices } from "./started-services.js";
import { eitherOf, isServiceName, serviceNames, services, servicesCounted, type ServiceEntry } from "./services.js";
import { brokenAtLast } from "./help-text.js";
import { dataDir as dataDirOf } from "./client-security.js";
import { readPostgresPassword } from "./postgres/start-password.js";

/** The tool's usage for the services of `list` (default: the services). */
export function outboxUsage(list: readonly ServiceEntry[] = services): string {
  return `Usage: npx tsx tools/outbox.ts <${list.map((s) => s.name).join("|")}|--database PATH> [list | retry [EVENT_ID ...|--all] | drop EVENT_ID --yes]

  list                    events waiting in the outbox, and the parked ones with
                          why JetStream refused them (the default)
  retry EVENT_ID ...      put these parked events back at the end of the outbox;
                          the service's relay publishes them within a second; an
                          id that is not parked refuses them all (exit 2)
  retry --all             put every parked event back
  drop EVENT_ID --yes     delete this parked event for good (it is never
                          published), after printing it as list does; without
                          --yes, prints it, says it would delete it and deletes
                          nothing (exit 2); an id that is not parked is refused
                          (exit 2)
  --database PATH         the service's database: SQLite file or postgres:// URL (default: as the
                          service's under \`npm start\`, ${brokenAtLast(eitherOf(list.map((s) => `$${s.envPrefix}_DATABASE_URL`)), "or", "after", 26)}, else the database \`npm start -- --postgres\` gives
                          it while that start's PostgreSQL server runs in $DATA_DIR/postgres, else
                          $DATA_DIR/<service>.db, DATA_DIR defaulting to .data; read with a
                          note when $DATA_DIR/postgres holds data and no start runs there;
                          $DATABASE_URL is not used, as \`npm start\` does not use it, saying so;
                          a note says which is read when $<SERVICE>_DATABASE_URL is set and
                          an \`npm start -- --postgres\` runs in DATA_DIR, which refuses it);
                          one that holds no outbox, or that is another service's (its
                          schema_owner), is refused (exit 2), left as it was;
                          a password in a URL given here shows in the process list (ps):
                          leave it out and set PGPASSWORD (or ~/.pgpass), or set the variable

Parked events are those the relay can never publish as they are: larger than
the server's max_payload or the stream's max_msg_size (or with headers over
64 KiB), with a subject or header NATS cannot carry, or on a subject the
service's NATS user may not publish to. Retry them once what refused them has
changed, or drop one that is not to be published at all.`;
}

/**
 * What to say of a postgres:// URL given on the command line with a password
 * in it (the user's, or `password=` in its query): every user of the machine
 * reads a command line in the process list. Undefined for any other.
 */
export function passwordInArgumentNote(url: string, option = "--database"): string | undefined {
  if (!isPostgresUrl(url) || redact(url) === url) return undefined;
  return `note: the ${option} URL holds a password, which every user of this machine can read in the process list (ps); leave it out of the URL and set PGPASSWORD (or put it in ~/.pgpass), or give the URL in the service's <SERVICE>_DATABASE_URL instead`;
}

/** The outbox tool's options. */
export const outboxOptions = { database: { type: "string" }, all: { type: "boolean" }, yes: { type: "boolean" }, help: { type: "boolean", short: "h" } } as const;

/**
 * What to say of a DATA_DIR that does not exist, where a service's database was looked for: a start given another
 * one, most likely. `option` is the command's option that names the database.
 */
export const noStartRanIn = (dataDir: string, option = "--database"): string =>
  `DATA_DIR ${dataDir} does not exist, so no \`npm start\` has run with it: set DATA_DIR as \`npm start\` was given it, or name the service's database with ${option}`;

/** How a caller of `outboxCommand` has it say its messages, its help, and bad usage. */
export interface OutboxCommandOptions {
  /** Begins its messages (default `outbox`). */
  readonly program?: string;
  /** Printed for --help (default the tool's own usage). */
  readonly help?: string;
  /** For an option it lacks, the command lines of the caller's that take it. */
  readonly elsewhere?: Readonly<Record<string, readonly string[]>>;
  /** Says a problem with the arguments and returns the exit code (default: the problem and where the usage is, in one line, exit 2). */
  readonly badUsage?: (problem: string) => number;
  /** How the caller's command line reads with the service named, where its action comes first (`npx concord outbox parked list products`); the service is asked for "first" without it. */
  readonly namedService?: (service: string) => string;
}

/**
 * The outbox tool with `argv`; resolves with its exit code (2: bad
 * arguments, each named, or an event id to retry or drop that is not
 * parked, nothing changed; 1: events put back or dropped by another run
 * between reading and changing them).
 * Shared by `concord outbox parked`, which says bad usage in one line.
 */
export async function outboxCommand(argv: string[], { program = "outbox", help = outboxUsage(), elsewhere = {}, badUsage, namedService }: OutboxCommandOptions = {}): Promise<number> {
  const refuse =
    badUsage ??
    ((problem: string) => {
      console.error(usageProblemLine(program, problem, "npx tsx tools/outbox.ts --help"));
      return 2;
    });
  let parsed;
  const options = outboxOptions;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options });
  } catch (err) {
    return refuse(parseArgsProblem(err, Object.keys(options), elsewhere));
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(help);
    return 0;
  }
  const [first, ...rest] = positionals;
  const service = isServiceName(first) ? first : undefined;
  const [command = "list", ...ids] = service ? rest : positionals;
  const dataDir = dataDirOf();
  const path = values.database ?? (service ? serviceDatabase(service, dataDir) : undefined);
  const problem = emptyDatabaseOption(values, ["database"]) ?? argumentProblem(first, path, command, ids, values.all === true, values.yes === true, namedService);
  if (problem || !path) return refuse(problem ?? "name the service or its database");
  const note = values.database === undefined && service ? (unusedDatabaseUrlNote(service) ?? otherThanRunningStartNote(service, dataDir)) : passwordInArgumentNote(path);
  if (note) console.error(`${program}: ${note}`);
  if (!isPostgresUrl(path) && !existsSync(path)) {
    const postgresHint = service && existsSync(join(dataDir, "postgres"))
      ? ` (npm start -- --postgres keeps it in postgres://postgres@127.0.0.1:${process.env.POSTGRES_PORT || 54320}/${service})`
      : "";
    // The file npm start keeps in DATA_DIR, and no DATA_DIR: a start given another one, most likely.
    const fix =
      service && path === join(dataDir, `${service}.db`) && !existsSync(dataDir)
        ? noStartRanIn(dataDir)
        : `name the service's database with --database, or set ${service ? `${service.toUpperCase()}_DATABASE_URL` : "it"} as for the service${postgresHint}`;
    console.error(`${program}: ${path} does not exist; ${fix}`);
    return 2;
  }
  if (values.database === undefined && service && path === join(dataDir, `${service}.db`) && existsSync(join(dataDir, "postgres", "PG_VERSION")) && readStartedServices(dataDir) === undefined) {
    // Both kinds of start have used this DATA_DIR and none runs: the SQLite file may not be where the service's events are.
    console.error(
      `${program}: note: ${join(dataDir, "postgres")} holds the databases of \`npm start -- --postgres\`, and no start runs on this DATA_DIR: this is the SQLite file a start without --postgres uses; for the outbox in PostgreSQL, run this while that start runs, or name its database with --database`,
    );
  }
  const shownPath = isPostgresUrl(path) ? redact(path) : path;
  let db;
  try {
    // Only a database a service has made its outbox in: any other would be given an empty outbox's tables, and listed as one.
    db = await openDatabase({ path, migrations: outboxMigrations, requireApplied: outboxMigrations[0]!.id });
  } catch (err) {
    if (err instanceof StatusError && err.code === Code.FAILED_PRECONDITION && /has no migration/.test(err.message)) {
      console.error(`${program}: ${shownPath} holds no outbox: it is no service's database, or its service has not started on it yet; name the service's database with --database, or set ${service ? `${service.toUpperCase()}_DATABASE_URL` : "it"} as for the service (nothing was changed)`);
      return 2;
    }
    if (err instanceof StatusError && err.code === Code.FAILED_PRECONDITION) {
      // A directory, a FIFO or a device: said as openDatabase says it.
      console.error(`${program}: ${err.message}`);
      return 2;
    }
    if (isNotSqliteFile(err)) {
      // A file SQLite does not take for a database at all (a backup's .json, say): no outbox either, and left as it was.
      console.error(`${program}: ${shownPath} is not a SQLite database (file is not a database): it is no service's database; name the service's database with --database, or set ${service ? `${service.toUpperCase()}_DATABASE_URL` : "it"} as for the service (nothing was changed)`);
      return 2;
    }
    const cause = err instanceof Error && err.cause instanceof Error && !err.message.includes(err.cause.message) ? `: ${err.cause.message}` : "";
    throw new Error(`${shownPath}: ${err instanceof Error ? err.message : err}${cause}`, { cause: err });
  }
  try {
    // The other service's database, named for this one: its events were listed, put back or dropped as this one's.
    const owners = service ? await databaseOwners(db).catch(() => []) : []; // none in a database made before services wrote their name into it
    const owner = owners.includes(service!) ? undefined : owners[0];
    if (owner) {
      console.error(`${program}: ${shownPath} is the ${owner} service's database (its schema_owner), not the ${service} service's; name the ${service} service's with --database, or name ${owner} (nothing was changed)`);
      return 2;
    }
    if (command === "retry") {
      const parked = new Set((await parkedEvents(db)).map((p) => p.eventId));
      const given = values.all ? undefined : [...new Set(ids)];
      // Refused as drop refuses one: a mistyped id among others put those back and said so only at exit 1.
      const notParked = (given ?? []).filter((id) => !parked.has(id));
      if (notParked.length > 0) {
        const named = notParked.length > 5 ? `${notParked.slice(0, 5).join(", ")} and ${notParked.length - 5} more` : notParked.join(", ");
        console.error(`${program}: ${named} ${notParked.length === 1 ? "is not a parked event" : "are not parked events"} of ${db.location} (\`list\` shows those that are); nothing put back`);
        return 2;
      }
      const moved = await retryParked(db, given);
      console.log(`put ${moved} parked event(s) back in the outbox of ${db.location}`);
      // Put back or dropped by another run since they were read: said, as they were not put back here.
      if (given && moved < given.length) {
        console.error(`${program}: ${given.length - moved} of the ${given.length} event(s) are no longer parked in ${db.location} (put back or dropped meanwhile)`);
        return 1;
      }
      return 0;
    }
    if (command === "drop") {
      const [id] = ids as [string];
      const event = (await parkedEvents(db)).find((p) => p.eventId === id);
      if (!event) {
        console.error(`${program}: ${id} is not a parked event of ${db.location} (\`list\` shows those that are); nothing dropped`);
        return 2;
      }
      console.log(parkedLine(event));
      // As `concord dlq purge` does: what would go is shown, and nothing is deleted for good unless confirmed.
      if (values.yes !== true) {
        console.error(`${program}: this deletes parked event ${id} from ${db.location} for good (it is never published); run again with --yes to do it`);
        return 2;
      }
      // Put back or dropped by another run since it was read: said, as nothing was dropped here.
      if (!(await dropParked(db, id))) {
        console.error(`${program}: ${id} is no longer parked in ${db.location} (put back or dropped meanwhile); nothing dropped`);
        return 1;
      }
      console.log(`dropped parked event ${id} from ${db.location}: it will not be published`);
      return 0;
    }
    const [{ waiting }] = await db.query<{ waiting: number }>("SELECT count(*) AS waiting FROM event_outbox");
    const parked = await parkedEvents(db);
    console.log(`${db.location}: ${waiting} event(s) waiting to be published, ${parked.length} parked`);
    for (const p of parked) console.log(parkedLine(p));
    return 0;
  } finally {
    await db.close();
  }
}

/** A parked event as `list` and `drop` print it: one JSON line. */
function parkedLine(p: ParkedEvent): string {
  return JSON.stringify({ eventId: p.eventId, type: p.type, subject: p.subject, bytes: p.size, createdAt: p.createdAt, parkedAt: p.parkedAt, reason: p.reason });
}

/**
 * The database `npm start` gives `service`, which the tools take unless
 * named: its own variable (`PRODUCTS_DATABASE_URL`), else the database of
 * the `npm start -- --postgres` running on `dataDir`, else
 * `dataDir/<service>.db`. DATABASE_URL, which a service started alone
 * reads, is not used, as `npm start` does not use it: it names one
 * database, and each service needs its own (see `unusedDatabaseUrlNote`).
 */
export function serviceDatabase(service: string, dataDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const own = env[`${service.toUpperCase()}_DATABASE_URL`];
  if (own) {
    const read = databaseAsServiceReads(own);
    if (read) return read;
  }
  const started = runningStartPostgres(dataDir, service);
  if (started === undefined) return join(dataDir, `${service}.db`);
  // That server asks for the password the start keeps under DATA_DIR/auth (PGPASSWORD, which one set by the user overrides).
  const password = readPostgresPassword(dataDir);
  if (password !== undefined && !process.env.PGPASSWORD) process.env.PGPASSWORD = password;
  return started;
}

/** A database URL as the service reads it (`file:///x.db` is /x.db), or as it is when the service would refuse it, which the tool then fails to open. */
function databaseAsServiceReads(url: string): string {
  try {
    return databaseUrl(url).location;
  } catch {
    return url;
  }
}

/** A note saying DATABASE_URL is not used for `service`'s database when it is set and the service's own variable is not; else undefined. */
export function unusedDatabaseUrlNote(service: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const own = `${service.toUpperCase()}_DATABASE_URL`;
  if (!env.DATABASE_URL || env[own]) return undefined;
  return `note: DATABASE_URL is not used, as \`npm start\` does not use it (the ${servicesCounted} services need a database each): set ${own}, or name the database with --database, for one of your own`;
}

/**
 * A note, when `service`'s own variable names a database and the `npm start
 * -- --postgres` running on `dataDir` runs the service on another, saying
 * which is read: the variable's, as for any tool, though that start (which
 * refuses the variable) does not use it; else undefined.
 */
export function otherThanRunningStartNote(service: string, dataDir: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const own = `${service.toUpperCase()}_DATABASE_URL`;
  const named = env[own];
  const running = named ? runningStartPostgres(dataDir, service) : undefined;
  if (!named || running === undefined || named === running) return undefined;
  return `note: reading ${isPostgresUrl(named) ? redact(named) : named}, which ${own} names; the \`npm start -- --postgres\` running on ${dataDir} runs ${service} on ${running} (unset ${own} to read that one)`;
}

/**
 * The database `npm start -- --postgres` gives `service` while its PostgreSQL
 * server runs in DATA_DIR/postgres (its postmaster.pid names a live process
 * and the port), else undefined. Only one start holds a DATA_DIR at a time, and
 * that server runs only with the start that made it, so while it runs the
 * services' data is there, not in a SQLite file a start without --postgres left
 * in DATA_DIR earlier.
 */
export function runningStartPostgres(dataDir: string, service: string): string | undefined {
  let lines: string[];
  try {
    lines = readFileSync(join(dataDir, "postgres", "postmaster.pid"), "utf8").split("\n");
  } catch {
    return undefined;
  }
  // postmaster.pid: the server's pid, its data directory, its start time, its port, ...
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) return undefined;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return undefined; // gone: a file left by a server that was killed
  }
  return `postgres://postgres@127.0.0.1:${port}/${service}`;
}

/** What is wrong with the arguments, or undefined when nothing is. */
function argumentProblem(first: string | undefined, path: string | undefined, command: string, ids: readonly string[], all: boolean, yes: boolean, namedService?: (service: string) => string): string | undefined {
  if (!path) {
    const where = namedService ? `: ${namedService(serviceNames[0]!)}` : " first";
    if (first === undefined || first === "list" || first === "retry" || first === "drop") return `name the service (${eitherOf(serviceNames)}) or its database (--database PATH)${where}`;
    return `unknown service ${JSON.stringify(first)}: expected ${eitherOf(serviceNames)} (or --database PATH)`;
  }
  const given = [...ids, ...(all ? ["--all"] : [])].join(" ");
  if (command !== "list" && command !== "retry" && command !== "drop") return `unknown action ${JSON.stringify(command)}: expected list, retry or drop`;
  if (command === "list" && (ids.length > 0 || all)) return `list takes no event ids and no --all (got ${given})`;
  if (command === "retry" && ids.length === 0 && !all) return "retry needs the ids of the parked events to put back, or --all";
  if (command === "retry" && ids.length > 0 && all) return "retry takes event ids or --all, not both";
  if (command === "drop" && (ids.length !== 1 || all)) return `drop takes the id of one parked event${ids.length > 1 || all ? ` (got ${given})` : ""}`;
  if (command !== "drop" && yes) return `--yes confirms a drop; ${command} deletes nothing and takes none`;
  return undefined;
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  outboxCommand(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err: unknown) => {
      console.error(`outbox: ${err instanceof Error ? err.message : err}`);
      process.exitCode = 1;
    },
  );
}
