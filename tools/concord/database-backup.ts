/**
 * Backing up a service's SQLite database while the service runs, and putting
 * a backup back in place of a stopped service's. A backup is one read
 * transaction's snapshot (`VACUUM INTO`), so it holds every commit its
 * snapshot saw, those still in the write-ahead log included; beside it goes
 * where the service's durable consumers stood in JetStream just before, which
 * says from where their events must be delivered again after a restore.
 */
import { chmodSync, chownSync, closeSync, copyFileSync, existsSync, fsyncSync, linkSync, lstatSync, mkdirSync, openSync, realpathSync, renameSync, rmSync, type Stats, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import BetterSqlite3 from "better-sqlite3";
import type { NatsConnection, NatsError } from "nats";
import { grpcAlone, natsAuthorization } from "../../gen/ts/concord_nats.js";
import { Code, StatusError } from "../../platform/errors/index.js";
import { notRegularFile, readSettingFile } from "../../platform/config/setting-file.js";
import { claimSqliteFile } from "../../platform/sql/index.js";

/** A durable consumer's acknowledgement floor: every event of its stream up to this sequence was handled and acked. */
export interface ConsumerPosition {
  readonly stream: string;
  readonly durable: string;
  readonly ackFloor: number;
}

/** What is kept beside a backup (`<backup>.json`). */
export interface BackupRecord {
  readonly service: string;
  readonly database: string;
  readonly takenAt: string;
  /** Read just before the snapshot; null when NATS could not be asked. */
  readonly positions: readonly ConsumerPosition[] | null;
}

/**
 * A refusal of what a database command was given (the backup, its record,
 * the database or the file named) for what it is or holds, with nothing
 * written: `concord` says it in one line and exits 2, as for bad usage,
 * where a failure once at work (a copy cut short, a database in use) exits 1.
 */
export class GivenRefused extends Error {}

/** The file beside a backup that records where the service's consumers stood. */
export const recordFileOf = (backup: string): string => `${backup}.json`;

/** The durable consumers the contracts give `service`, with their streams (none to a service of gRPC alone); undefined when they have no such service. */
export function consumersOf(service: unknown): ReadonlyArray<{ readonly stream: string; readonly durable: string }> | undefined {
  const user = natsAuthorization.services.find((s) => s.name === service);
  if (user) return user.consumers;
  return grpcAlone.some((s) => s.name === service) ? [] : undefined;
}

/** The services the contracts declare, as messages list them. */
const contractServices = (): string => [...natsAuthorization.services, ...grpcAlone].map((s) => s.name).join(", ");

/** The durable consumers the contracts give `service`, with their streams. Throws when they have no such service. */
export function serviceConsumers(service: string): ReadonlyArray<{ readonly stream: string; readonly durable: string }> {
  const consumers = consumersOf(service);
  if (!consumers) throw new Error(`no service ${JSON.stringify(service)} in the contracts; they name ${contractServices()}`);
  return consumers;
}

const consumerNotFound = 10014;
const streamNotFound = 10059;

/**
 * Each of `service`'s durable consumers' acknowledgement floors, as JetStream
 * has them now; one not made yet stands at 0 (everything of its stream is
 * still to come to it).
 */
export async function consumerPositions(nc: NatsConnection, service: string): Promise<ConsumerPosition[]> {
  const jsm = await nc.jetstreamManager();
  const positions: ConsumerPosition[] = [];
  for (const { stream, durable } of serviceConsumers(service)) {
    try {
      positions.push({ stream, durable, ackFloor: (await jsm.consumers.info(stream, durable)).ack_floor.stream_seq });
    } catch (err) {
      const code = (err as NatsError).api_error?.err_code;
      if (code !== consumerNotFound && code !== streamNotFound) throw new Error(`reading consumer ${durable} on stream ${stream} failed: ${(err as Error).message}`, { cause: err });
      positions.push({ stream, durable, ackFloor: 0 });
    }
  }
  return positions;
}

/** Flushes a file, or a directory's entries, to disk. */
function flushToDisk(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Puts `from` in place as `to` once it is on disk, so that `to` never names a half-written file. */
function moveIntoPlace(from: string, to: string): void {
  flushToDisk(from);
  renameSync(from, to);
  flushToDisk(dirname(to));
}

/**
 * As moveIntoPlace, for a `to` that must be new: a hard link is made, which,
 * unlike a rename, fails where `to` exists, even one made since it was
 * looked for (another backup's to the same file, finished meanwhile). On a
 * file system without hard links, `to` is first made new and empty
 * (O_EXCL, which fails alike), then renamed over: another backup finds the
 * name taken from then on, and `to` names this one's empty file, never
 * another's, until it names the whole copy.
 */
function moveIntoNewPlace(from: string, to: string): void {
  flushToDisk(from);
  const madeMeanwhile = (err: unknown) => new Error(`${to} was made meanwhile (another backup's to it?), and is left as it is`, { cause: err });
  try {
    linkSync(from, to);
    rmSync(from);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw madeMeanwhile(err);
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw err;
    try {
      closeSync(openSync(to, "wx", 0o600));
    } catch (cannot) {
      throw (cannot as NodeJS.ErrnoException).code === "EEXIST" ? madeMeanwhile(cannot) : cannot;
    }
    try {
      renameSync(from, to);
    } catch (failed) {
      rmSync(to, { force: true });
      throw failed;
    }
  }
  flushToDisk(dirname(to));
}

/** What to do about a backup or record found at the name a backup was to take. */
export const toReplaceIt = (backup: string): string => `name another FILE, or, to replace that backup, remove ${backup} and ${recordFileOf(backup)} first`;

/**
 * What `taken`, found where a backup of the database `source` was to go, is
 * when it is no backup that could be replaced: a directory, or the database
 * itself (for which "remove it first" would be the wrong advice); else undefined.
 */
export function notABackup(taken: string, source: string): string | undefined {
  const found = statSync(taken, { throwIfNoEntry: false });
  if (found?.isDirectory()) return `${taken} is a directory: name the backup's file in it (${join(taken, basename(source))}, say)`;
  if (found && existsSync(source) && sameFile(taken, source)) return `${taken} is the service's database itself: a backup goes to a new file, elsewhere`;
  // "Remove it first" would have a running service's log deleted, and the commits it holds lost with it.
  return besideADatabase(taken);
}

/** What `target` is when it is a file SQLite or the service keeps beside a database there (its log, say), which a backup must not take; else undefined. */
export function besideADatabase(target: string): string | undefined {
  // Any database's, not only the one backed up: the other service's next start would delete it as well.
  const own = databaseFileSuffixes.find((suffix) => target.endsWith(suffix) && statSync(target.slice(0, -suffix.length), { throwIfNoEntry: false })?.isFile());
  return own === undefined ? undefined : `${target} is a file SQLite or the service keeps beside the database ${target.slice(0, -own.length)} (its ${own}), which would take the backup for its own and delete it: a backup goes elsewhere`;
}

/**
 * The files beside a SQLite database that belong to it: its log and shared
 * memory, a rollback journal (which a connection opening the database plays
 * back and deletes), and the service's claim on it and that claim's journal.
 */
const databaseFileSuffixes = ["-wal", "-shm", "-journal", "-lock", "-lock-journal"] as const;

/** Those that SQLite applies to the database when it opens it (the log, with its index, and a rollback journal). */
const databaseLogSuffixes = ["-wal", "-shm", "-journal"] as const;

/** `path` absolute, through the symbolic links of its folders where they exist. */
function resolvedPath(path: string): string {
  const folder = dirname(resolve(path));
  return existsSync(folder) ? join(realpathSync(folder), basename(path)) : resolve(path);
}

/**
 * Runs `read` on a read-only connection of its own to the SQLite file at
 * `path`, and leaves beside it only what was there: such a connection to a
 * database in WAL mode makes its log and shared memory where they are not
 * (a stopped service's database, closed cleanly), and cannot remove them as
 * it closes. Those it made are removed once it is closed, the log empty, as
 * SQLite removes them (removeAsLastConnection). Throws what opening or `read` threw.
 */
function readingOnly<T>(path: string, read: (db: BetterSqlite3.Database) => T): T {
  // SQLite keeps them beside the file a symbolic link points to.
  const file = existsSync(path) ? realpathSync(path) : path;
  const made = ["-wal", "-shm"].filter((suffix) => !existsSync(file + suffix));
  try {
    const db = new BetterSqlite3(path, { readonly: true, fileMustExist: true, timeout: 5_000 });
    try {
      return read(db);
    } finally {
      db.close();
    }
  } finally {
    if (made.length > 0 && statSync(`${file}-wal`, { throwIfNoEntry: false })?.size === 0) removeAsLastConnection(path, file);
  }
}

/**
 * Has SQLite remove the log and shared memory of the database at `path`
 * (`file`, through links) as it does when the last connection to it closes:
 * a writing connection, opened, read and closed, deletes them only where no
 * other connection has the database open (a service started meanwhile,
 * another reader), and writes nothing to the file from an empty log. Not
 * beside a rollback journal, which it would play back into the file.
 */
function removeAsLastConnection(path: string, file: string): void {
  if (existsSync(`${file}-journal`)) return;
  try {
    const db = new BetterSqlite3(path, { fileMustExist: true, timeout: 0 });
    try {
      db.prepare("SELECT count(*) FROM sqlite_schema").get();
    } finally {
      db.close();
    }
  } catch {
    // In use, or not this user's to write: they are left as they are.
  }
}

/**
 * Writes a consistent copy of the SQLite database at `source` to `target`
 * (a new file, mode 0600, as the service's own), read on a connection of its
 * own while the service goes on: `VACUUM INTO` reads one snapshot in one
 * transaction, the write-ahead log's commits included, and holds back no
 * writer (only the service's checkpoints, which copy no further than the
 * snapshot until it ends). Makes `target`'s directory when it is missing.
 * Rejects when `target` exists, or is made while it copies (another
 * backup's, which is never replaced), or is one of the files beside a database
 * (`source` or another) that belong to it, or `source` does not exist;
 * a copy cut short leaves only `<target>.partial`, which stops the next
 * backup to `target` until removed (it may be another's, still written).
 * Resolves with its size.
 */
export function backupSqlite(source: string, target: string): { readonly bytes: number } {
  if (existsSync(target)) throw new Error(notABackup(target, source) ?? `${target} exists: a backup goes to a new file; ${toReplaceIt(target)}`);
  if (!existsSync(source)) throw new Error(`${source} does not exist`);
  const beside = besideADatabase(target);
  if (beside !== undefined) throw new GivenRefused(beside);
  try {
    writeNewFile(target, (partial) => readingOnly(source, (db) => db.prepare("VACUUM INTO ?").run(partial)));
  } catch (err) {
    throw new Error(`backing up ${source} to ${target} failed: ${(err as Error).message}`, { cause: err });
  }
  return { bytes: statSync(target).size };
}

/**
 * Has `write` fill `<target>.partial`, made new and empty (mode 0600) in
 * `target`'s folder (made when missing), then gives it the name `target`
 * once on disk (moveIntoNewPlace). Throws, leaving no `.partial` of its own,
 * when `write` does or `target` was made meanwhile; a `.partial` there
 * already (another backup's to `target`, still written, or one cut short) is
 * left as it is, and refused.
 */
export function writeNewFile(target: string, write: (partial: string) => void): void {
  const partial = `${target}.partial`;
  let made = false;
  try {
    mkdirSync(dirname(target), { recursive: true });
    // Written into as a new file: made here, it is the owner's alone. One there already may be another backup's to the
    // same file, still being written: taken, it would be named `target` half-written.
    try {
      closeSync(openSync(partial, "wx", 0o600));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      throw new Error(`${partial} exists: another backup to ${target} is under way, or one was cut short (remove ${partial} once none runs)`, { cause: err });
    }
    made = true;
    write(partial);
    // Flushed before it is named (SQLite does not flush what VACUUM INTO wrote). A backup to `target` that began after
    // this one looked, and ended before it, made `target` meanwhile: a complete backup, not to be replaced.
    moveIntoNewPlace(partial, target);
  } catch (err) {
    if (made) rmSync(partial, { force: true });
    throw err;
  }
}

/**
 * Writes the record beside a backup (through `<record>.partial`, made new:
 * one there already is another backup's record still being written, or one
 * cut short, and stops this one until removed); rejects, leaving no part of
 * it and replacing none there, when it cannot.
 */
export function writeBackupRecord(backup: string, record: BackupRecord): void {
  const file = recordFileOf(backup);
  const partial = `${file}.partial`;
  if (existsSync(file)) throw new Error(`${file} exists, another backup's record; ${toReplaceIt(backup)}`);
  let made = false;
  try {
    try {
      writeFileSync(partial, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600, flag: "wx" });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      throw new Error(`${partial} exists: another backup's record to ${file} is being written, or one was cut short (remove ${partial} once none runs)`, { cause: err });
    }
    made = true;
    moveIntoNewPlace(partial, file);
  } catch (err) {
    if (made) rmSync(partial, { force: true });
    throw new Error(`writing the backup's record ${file} failed: ${(err as Error).message}`, { cause: err });
  }
}

/** The most a backup's record holds: a line of about 90 bytes a consumer. */
const maxRecordBytes = 1024 * 1024;

/**
 * The record beside `backup`, or undefined when there is none. Throws, naming
 * the file, when it is no such record: its positions become commands an
 * operator runs, so each must be one of its service's consumers with a whole
 * number for its floor.
 */
export function readBackupRecord(backup: string): BackupRecord | undefined {
  const file = recordFileOf(backup);
  // A symbolic link to nothing (or to itself) is there all the same: not a backup without a record.
  if (!existsSync(file) && !lstatSync(file, { throwIfNoEntry: false })) return undefined;
  let record: unknown;
  try {
    // A FIFO there was waited on for ever, and a link to /dev/zero read until memory ran out.
    record = JSON.parse(readSettingFile(file, maxRecordBytes).toString("utf8"));
  } catch (err) {
    throw new GivenRefused(`${file} cannot be read as a backup's record: ${(err as Error).message}`, { cause: err });
  }
  const problem = recordProblem(record);
  if (problem) throw new GivenRefused(`${file} is no backup's record: ${problem}`);
  return record as BackupRecord;
}

/**
 * The durable consumers the contracts give the record's service that its
 * positions leave out (all of them when it holds none): a restore prints no
 * command for them.
 */
export function consumersNotRecorded(record: BackupRecord): string[] {
  return serviceConsumers(record.service)
    .filter((c) => !record.positions?.some((p) => p.stream === c.stream && p.durable === c.durable))
    .map((c) => c.durable);
}

/** What makes `record` no BackupRecord of a service in the contracts, or undefined. */
function recordProblem(record: unknown): string | undefined {
  if (typeof record !== "object" || record === null || Array.isArray(record)) return "it holds no JSON object";
  const { service, positions } = record as Record<string, unknown>;
  const consumers = consumersOf(service);
  if (!consumers) return `its service is ${JSON.stringify(service)}, none of the contracts' (${contractServices()})`;
  if (positions === null) return undefined;
  if (!Array.isArray(positions)) return "its positions are neither a list nor null";
  const floored = new Set<unknown>();
  for (const p of positions as unknown[]) {
    const { stream, durable, ackFloor } = (typeof p === "object" && p !== null ? p : {}) as Record<string, unknown>;
    if (!consumers.some((c) => c.stream === stream && c.durable === durable)) return `${JSON.stringify(p)} names no consumer of ${String(service)}`;
    if (!Number.isSafeInteger(ackFloor) || (ackFloor as number) < 0) return `${JSON.stringify(p)} has no whole number for its ackFloor`;
    // A backup records one floor a consumer: two would print two commands for it, from two places.
    if (floored.has(durable)) return `it holds more than one floor for consumer ${String(durable)}`;
    floored.add(durable);
  }
  return undefined;
}

/**
 * Why the database open on `db` is not `service`'s: `unfinished` where it is
 * (or may become) the service's but its migrations have not all run, as
 * while the service first starts and makes its tables; otherwise it is
 * another service's, none's, or never migrated.
 */
function ownerProblem(db: BetterSqlite3.Database, service: string): { readonly reason: string; readonly unfinished: boolean } | undefined {
  const tables = new Set(db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table'").pluck().all() as string[]);
  const owners = tables.has("schema_owner") ? (db.prepare("SELECT service FROM schema_owner").pluck().all() as string[]) : [];
  return ownershipProblem(tables, owners, service);
}

/**
 * As ownerProblem, of a database (SQLite or PostgreSQL) whose tables are
 * `tables` and whose schema_owner names `owners` (none read where it has no
 * such table).
 */
export function ownershipProblem(tables: ReadonlySet<string>, owners: readonly string[], service: string): { readonly reason: string; readonly unfinished: boolean } | undefined {
  // A service makes its database empty, then its tables, each migration in a transaction of its own.
  if (tables.size === 0) return { reason: "it holds no tables yet: an empty database, as a service's is while it first starts, before its first migration", unfinished: true };
  for (const table of ["schema_migrations", "schema_owner"]) if (!tables.has(table)) return { reason: `it has no ${table} table, so it is no service's database`, unfinished: false };
  // The service would refuse to start on another service's database, the one moved aside then out of its reach.
  if (owners.length === 0) return { reason: "its schema_owner names no service, so it is no service's database", unfinished: false };
  if (!owners.includes(service)) return { reason: `it is the ${owners.join(", ")} service's database, not the ${service} service's`, unfinished: false };
  const missing = ["event_outbox", "event_inbox"].find((table) => !tables.has(table));
  if (missing !== undefined) return { reason: `it is the ${service} service's database, but its migrations have not all run: it has no ${missing} table yet, as while the service first starts`, unfinished: true };
  return undefined;
}

const mistakenDatabase = (service: string): string => `name the ${service} service's with --database`;

/**
 * Why a database is none to back up, what to do about it, and whether it is
 * the database named that is mistaken (`given`: another service's, none's,
 * no SQLite file), rather than its state now (not migrated in full yet, or
 * not this user's to read).
 */
export interface SourceProblem {
  readonly reason: string;
  readonly advice: string;
  readonly given: boolean;
}

/** An ownershipProblem of a database to back up, with what to do about it; or undefined. */
export function withAdvice(problem: { readonly reason: string; readonly unfinished: boolean } | undefined, service: string): SourceProblem | undefined {
  return problem && { reason: problem.reason, advice: problem.unfinished ? `back it up once the ${service} service has started on it` : mistakenDatabase(service), given: !problem.unfinished };
}

/**
 * Why the SQLite database at `path` is no database of `service` to back up
 * (one whose backup a restore would refuse: another service's, none's, or
 * not migrated in full, as while the service first starts; no regular file;
 * or one this user cannot open), and what to do about it; or undefined. Reads it on a
 * read-only connection of its own, the service going on.
 */
export function sourceProblem(path: string, service: string): SourceProblem | undefined {
  // Said as what it is, as a restore says of its backup: SQLite waited for ever on a FIFO for a writer, and took a device for an empty database.
  const found = statSync(path, { throwIfNoEntry: false });
  const kind = found && notRegularFile(found);
  if (kind) return { reason: `it is ${kind}, not a SQLite file`, advice: mistakenDatabase(service), given: true };
  try {
    return readingOnly(path, (db) => {
      try {
        return withAdvice(ownerProblem(db, service), service);
      } catch (err) {
        return { reason: `it cannot be read as a SQLite database: ${(err as Error).message}`, advice: mistakenDatabase(service), given: true };
      }
    });
  } catch (err) {
    // SQLite says "unable to open database file" of a file this user may not read (the service's, mode 0600).
    return { reason: `it cannot be opened: ${(err as Error).message}`, advice: "may this user read it? run the backup as the user the service runs as, or as root", given: false };
  }
}

/** Why `backup` is no database of `service` to restore (not SQLite, damaged, never migrated, or another service's), or undefined. */
function backupProblem(backup: string, service: string): string | undefined {
  try {
    return readingOnly(backup, (db) => {
      try {
        const check = db.pragma("quick_check", { simple: true });
        if (check !== "ok") return `SQLite's quick_check finds it damaged: ${String(check)}`;
        return ownerProblem(db, service)?.reason;
      } catch (err) {
        return `it cannot be read as a SQLite database: ${(err as Error).message}`;
      }
    });
  } catch (err) {
    return `it cannot be opened: ${(err as Error).message}`;
  }
}

/** The services that the database at `path` says it belongs to (schema_owner); none when it cannot tell, damaged say. */
function servicesClaiming(path: string): string[] {
  try {
    return readingOnly(path, (db) => db.prepare("SELECT service FROM schema_owner").pluck().all() as string[]);
  } catch {
    return [];
  }
}

/**
 * Puts the backup `backup` of `service`'s database in place of the SQLite
 * database at `path` (the file a symbolic link there points to, the link
 * kept), whose service must be stopped: the file is claimed as the service
 * claims it (rejects, changing nothing, while a process runs on it), the
 * backup is checked, as is that the database there, if it says whose it is,
 * is `service`'s, the database there and its log and rollback journal are
 * moved aside (to `<path>.before-restore-<time>`, with `-wal`, `-shm` and
 * `-journal`, those even without the database: left beside the restored
 * file, SQLite would apply them to it), and a copy of the backup, made and
 * flushed first, with the owner, group and permissions of the database it
 * replaces (else 0600, and, run as root, its folder's owner's and group's,
 * as is a claim file made there), takes their place. Rejects,
 * changing nothing, when `backup` is that database itself or the copy fails
 * or cannot be given them. Resolves with where the old files went
 * (`asideTo`, the database's new name, and each file `moved` there), if
 * there were any.
 */
export function restoreSqlite(service: string, path: string, backup: string, now = new Date()): { readonly asideTo: string | undefined; readonly moved: readonly string[] } {
  if (!existsSync(backup)) throw new GivenRefused(`${backup} does not exist`);
  const kind = notRegularFile(statSync(backup));
  if (kind) throw new GivenRefused(`${backup} is ${kind}, not a backup: name a backup's file`);
  if (existsSync(path) && sameFile(path, backup)) throw new GivenRefused(`${backup} is the service's database itself, not a backup of it: nothing to restore`);
  // Looked at before the database is claimed: a backup refused leaves no claim file, nor folder for it, behind.
  const problem = backupProblem(backup, service);
  if (problem) throw new GivenRefused(`${backup} cannot be restored: ${problem}`);
  // A database named through a symbolic link is the file it points to: SQLite keeps its log beside that file, and the
  // service may name either, so each has its claim taken.
  const claims = [claimNamed(path, service)];
  try {
    // Resolved once the claim has made the database's folder; spelt as `path` is resolved, a file that is no link
    // is not claimed twice (which this process would find held).
    const file = existsSync(path) ? realpathSync(path) : resolvedPath(path);
    if (file !== resolvedPath(path)) claims.push(claimNamed(file, service));
    const holders = existsSync(file) ? servicesClaiming(file) : [];
    if (holders.length > 0 && !holders.includes(service)) throw new GivenRefused(`${path} is the ${holders.join(", ")} service's database, not the ${service} service's: nothing was restored over it`);
    // The copy is made before anything is moved: one that fails (a full disk, say) leaves the database where it was.
    const restoring = `${file}.restoring`;
    const replaced = statSync(file, { throwIfNoEntry: false });
    rmSync(restoring, { force: true });
    try {
      closeSync(openSync(restoring, "wx", 0o600));
      copyFileSync(backup, restoring);
      // copyFile gives the copy the backup's mode: with no database there, it is made its owner's alone, as a service makes one.
      if (replaced) takeOwnerAndMode(restoring, replaced, file);
      else {
        chmodSync(restoring, 0o600);
        giveFolderOwner(restoring);
      }
      flushToDisk(restoring);
    } catch (err) {
      rmSync(restoring, { force: true });
      throw new Error(`copying ${backup} to ${restoring} failed, and the database was left as it was: ${(err as Error).message}`, { cause: err });
    }
    // The log and a rollback journal go with the file they belong to: left beside the restored file, the next opening
    // would apply the one or play the other back into it, writing the old database's pages over the backup's. Moved
    // with it, the old database opened where it went is as SQLite would have recovered it. Without the file, they are
    // a killed process's, and just as harmful.
    const moved = ["", ...databaseLogSuffixes].filter((suffix) => existsSync(file + suffix));
    const asideTo = moved.length > 0 ? `${file}.before-restore-${now.toISOString().replace(/[:.]/g, "-")}` : undefined;
    for (const suffix of moved) renameSync(file + suffix, asideTo + suffix);
    moveIntoPlace(restoring, file);
    return { asideTo, moved: moved.map((suffix) => asideTo + suffix) };
  } finally {
    for (const claim of claims) claim.release();
  }
}

/**
 * Claims `path` as a service claims it (claimSqliteFile); a claim file it
 * makes there is given to the folder's owner (giveFolderOwner), as the
 * service is to open it when it starts. Throws, saying to stop it, while a
 * process holds the claim (`service`, running or starting, say).
 */
function claimNamed(path: string, service: string): { release(): void } {
  const made = !existsSync(`${path}-lock`);
  let claim: { release(): void };
  try {
    claim = claimSqliteFile(path);
  } catch (err) {
    if (!(err instanceof StatusError && err.code === Code.FAILED_PRECONDITION)) {
      throw new Error(`${(err as Error).message}; nothing was restored (may this user write ${path}-lock? run the restore as the user the service runs as, or as root)`, { cause: err });
    }
    throw new Error(`the SQLite database ${path} is in use by another process (the ${service} service, running or starting on it, say): stop it first (under npm start, Ctrl-C stops everything); nothing was restored`, { cause: err });
  }
  try {
    if (made) giveFolderOwner(`${path}-lock`);
  } catch (err) {
    claim.release();
    throw err;
  }
  return claim;
}

/**
 * Run as root, gives `path`, a file this process made, the owner and group
 * of its folder: a service that runs as another user keeps its database in
 * a folder of its own, and could not open a file left root's, mode 0600.
 * Any other user makes files its own, and may give them to no one else.
 */
function giveFolderOwner(path: string): void {
  if (process.getuid?.() !== 0) return;
  const folder = statSync(dirname(path));
  if (folder.uid !== 0 || folder.gid !== 0) chownSync(path, folder.uid, folder.gid);
}

/**
 * Gives `copy` the owner, group and permissions of the database `of`
 * (`stats`): the service may run as another user than the restore (root,
 * say), and a copy left this process's, mode 0600, it could not open.
 * Throws, saying as whom to run, when this user may not give them.
 */
function takeOwnerAndMode(copy: string, stats: Stats, of: string): void {
  if (stats.uid !== process.getuid?.() || stats.gid !== process.getgid?.()) {
    try {
      chownSync(copy, stats.uid, stats.gid);
    } catch (err) {
      throw new Error(`${of} is owned by uid ${stats.uid} (gid ${stats.gid}), which this user may not give the restored file (${(err as Error).message}): run the restore as that user, or as root`, { cause: err });
    }
  }
  chmodSync(copy, stats.mode & 0o777);
}

/** Whether two paths name one file (through a symbolic or hard link, or spelt two ways). */
function sameFile(a: string, b: string): boolean {
  const [x, y] = [statSync(a), statSync(b)];
  return x.dev === y.dev && x.ino === y.ino;
}
