import { causeChain } from "../errors/cause-chain.js";

/**
 * Codes of a database that could not write for want of space: PostgreSQL's
 * disk_full (53100) and SQLite's SQLITE_FULL, which SQLite answers both for
 * a disk with no room and for a file at its max_page_count. Not PostgreSQL's
 * out_of_memory (53200): a statement's own values can run a server out of
 * memory. An I/O error says nothing of space (SQLite reports a write short
 * of room, ENOSPC, as SQLITE_FULL): see isStorageFailure.
 */
const storageFullCodes = new Set(["53100", "SQLITE_FULL"]);

/**
 * Whether `err`, or an error in its chain of causes, says the database could
 * not write because its storage is full: nothing a caller did, and gone once
 * space is freed. Either store; this file loads no database driver, so the gRPC edge
 * reads it alone.
 */
export function isStorageFull(err: unknown): boolean {
  return hasErrorCode(err, (code) => storageFullCodes.has(code));
}

/**
 * Whether `err`, or an error in its chain of causes, says the database's
 * storage failed to read or write: PostgreSQL's io_error (58030) and
 * SQLite's SQLITE_IOERR with each of its extended codes (SQLITE_IOERR_READ,
 * _WRITE, _FSYNC, ...) but SQLITE_IOERR_NOMEM, which is memory. Nothing a
 * caller did nor a fault of the service's code: its disk or file system,
 * which an operator sees to.
 */
export function isStorageFailure(err: unknown): boolean {
  return hasErrorCode(err, (code) => code === "58030" || code === "SQLITE_IOERR" || (code.startsWith("SQLITE_IOERR_") && code !== "SQLITE_IOERR_NOMEM"));
}

/** Whether an error of `err`'s chain of causes has a string `code` (a SQLite code's name, a PostgreSQL SQLSTATE) that `matches`. */
export function hasErrorCode(err: unknown, matches: (code: string) => boolean): boolean {
  for (const e of causeChain(err, 8)) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && matches(code)) return true;
  }
  return false;
}

/** Why a database refuses writes now: its storage is full (isStorageFull), or failing (isStorageFailure). */
export type StorageRefusal = "full" | "failing";

/** What `err` says of the database's storage: full, failing, or nothing (undefined). */
export function storageRefusalOf(err: unknown): StorageRefusal | undefined {
  if (isStorageFull(err)) return "full";
  if (isStorageFailure(err)) return "failing";
  return undefined;
}
