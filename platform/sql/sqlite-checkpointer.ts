import { closeSync, fdatasync, fdatasyncSync, openSync, realpathSync } from "node:fs";
import BetterSqlite3 from "better-sqlite3";

/**
 * Copies a WAL database's committed pages back into its main file without
 * the event loop ever waiting for the disk, and without a second thread of
 * JavaScript. SQLite otherwise checkpoints inside the COMMIT that takes the
 * log past 1,000 pages: it writes those pages to the main file and waits for
 * its fsync there, which took a third of the time of a one-row transaction
 * on average (47 µs per transaction against 31 µs without checkpoints) and
 * stalled everything else in the process, for up to 177 ms on this kind of
 * machine when the disk was busy.
 *
 * The writing connection turns automatic checkpoints off; after a commit a
 * checkpoint follows within `intervalMs`, in four steps:
 *
 * 1. a read transaction on a connection of its own pins the log as it is
 *    (frame N): no checkpoint copies a frame past a reader's mark, and no
 *    writer rewinds the log to its start while a reader uses it;
 * 2. the log is flushed to disk (`fdatasync` on libuv's thread pool);
 * 3. a PASSIVE checkpoint on a connection with `synchronous = OFF` copies
 *    frames up to N into the main file (page writes to the operating
 *    system's cache, on the event loop: no fsync);
 * 4. the main file is flushed (`fdatasync`, thread pool), then the pin is
 *    released.
 *
 * That is what SQLite's own checkpoint does under `synchronous = NORMAL`
 * (flush the log, copy, flush the main file before the log is reused), with
 * the flushes off the event loop: a page reaches the main file only after the
 * frame it comes from is on disk, and the log is rewound only after the main
 * file is, so a power loss at any point leaves a log from which SQLite's
 * recovery rebuilds every commit the last flush covered, as before. A commit
 * survives a crash of the process either way.
 *
 * A worker thread did this before, at about 10 MiB of resident memory a
 * service (Node's start-up in a second V8 isolate).
 */
export interface Checkpointer {
  /**
   * Called after a commit: a checkpoint follows within `intervalMs`. False
   * when `maxBehind` commits came since the last checkpoint finished (a loop
   * of transactions that never lets the event loop turn, as a bulk import):
   * the checkpoint under way, if any, has then been ended (its flush done
   * here), and the caller checkpoints itself, which bounds the log.
   */
  committed(): boolean;
  /**
   * Ends the checkpoint under way, closes the checkpointer's connections,
   * then calls `closeConnections` (the database's own), then closes the
   * files it held open: closing a descriptor of the database file drops
   * every POSIX lock this process holds on it, so that comes last.
   */
  close(closeConnections: () => void): Promise<void>;
}

/** Which file a flush is for: the log (step 2) or the main file (step 4). */
export type FlushedFile = "log" | "database";

export interface CheckpointerOptions {
  readonly path: string;
  /** Default 100 ms. */
  readonly intervalMs?: number;
  /** Default 1,000 commits. */
  readonly maxBehind?: number;
  /** Checkpointing failed (a flush or a copy): the caller checkpoints on its own again. */
  readonly onFailure: (err: Error) => void;
  /** How a file is flushed; `fdatasync` on the thread pool. Tests hold a flush with it. */
  readonly flush?: (fd: number, file: FlushedFile) => Promise<void>;
}

const flushFile = (fd: number): Promise<void> => new Promise((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));

/**
 * One descriptor per database file in the process, shared: closing any
 * descriptor of a file drops all of the process's POSIX locks on it, those
 * of SQLite's connections included, so a second one is never opened and the
 * shared one is closed when its last user is done.
 */
const databaseFiles = new Map<string, { fd: number; users: number }>();

function openDatabaseFile(path: string): { readonly fd: number; close(): void } {
  const key = realpathSync(path);
  let file = databaseFiles.get(key);
  if (!file) databaseFiles.set(key, (file = { fd: openSync(key, "r"), users: 0 }));
  file.users++;
  const shared = file;
  let closed = false;
  return {
    fd: shared.fd,
    close() {
      if (closed) return;
      closed = true;
      if (--shared.users > 0) return;
      databaseFiles.delete(key);
      closeSync(shared.fd);
    },
  };
}

/** A checkpoint under way: the log is pinned until it is over. */
interface Cycle {
  stage: "log" | "database";
  over: boolean;
}

export function startCheckpointer(options: CheckpointerOptions): Checkpointer {
  const intervalMs = options.intervalMs ?? 100;
  const maxBehind = options.maxBehind ?? 1_000;
  const flush = options.flush ?? flushFile;
  // No busy wait on either: a PASSIVE checkpoint never waits, and a pin that cannot start now is tried at the next commit.
  const opened: BetterSqlite3.Database[] = [];
  let pin: BetterSqlite3.Database;
  let copier: BetterSqlite3.Database;
  let readSchema: BetterSqlite3.Statement;
  let databaseFile: ReturnType<typeof openDatabaseFile>;
  try {
    opened.push((pin = new BetterSqlite3(options.path, { readonly: true, fileMustExist: true, timeout: 0 })));
    opened.push((copier = new BetterSqlite3(options.path, { fileMustExist: true, timeout: 0 })));
    copier.pragma("synchronous = OFF");
    // A checkpoint copies pages through a buffer of its own; neither connection needs much of a page cache.
    for (const connection of opened) connection.pragma("cache_size = -64");
    readSchema = pin.prepare("SELECT count(*) FROM sqlite_schema").pluck();
    databaseFile = openDatabaseFile(options.path);
  } catch (err) {
    for (const connection of opened) connection.close();
    throw err;
  }
  let logFd: number | undefined;

  let behind = 0;
  let failed = false;
  let closing: Promise<void> | undefined;
  let wanted = false;
  let timer: NodeJS.Timeout | undefined;
  let cycle: Cycle | undefined;
  let running: Promise<void> | undefined;

  const unpin = () => {
    if (pin.open && pin.inTransaction) pin.exec("ROLLBACK");
  };
  /** Ends the cycle under way at once: the main file is flushed here if pages were copied to it. */
  const endCycle = () => {
    const current = cycle;
    if (!current) return;
    cycle = undefined;
    current.over = true;
    try {
      if (current.stage === "database") fdatasyncSync(databaseFile.fd);
    } finally {
      unpin();
    }
  };
  const fail = (err: unknown) => {
    if (failed) return;
    failed = true;
    clearTimeout(timer);
    try {
      endCycle();
    } catch {
      // The flush failed as well; the failure reported is the first one.
    }
    options.onFailure(err instanceof Error ? err : new Error(String(err)));
  };
  const schedule = () => {
    if (failed || closing || timer) return;
    if (cycle) wanted = true;
    else timer = setTimeout(start, intervalMs).unref();
  };

  const checkpoint = async (current: Cycle) => {
    try {
      pin.exec("BEGIN");
      readSchema.get();
    } catch (err) {
      unpin();
      // A reader can be refused for a moment (SQLITE_BUSY during another connection's recovery); the next commit tries again.
      if (/busy|locked/i.test((err as Error).message)) return;
      throw err;
    }
    logFd ??= openSync(`${options.path}-wal`, "r");
    await flush(logFd, "log");
    if (current.over) return;
    copier.pragma("wal_checkpoint(PASSIVE)");
    current.stage = "database";
    await flush(databaseFile.fd, "database");
  };
  const start = () => {
    timer = undefined;
    if (failed || closing || cycle) return;
    wanted = false;
    const current: Cycle = { stage: "log", over: false };
    cycle = current;
    running = checkpoint(current).then(
      () => {
        if (current.over) return;
        cycle = undefined;
        current.over = true;
        behind = 0;
        unpin();
        if (wanted) schedule();
      },
      (err) => {
        if (!current.over) fail(err);
      },
    );
  };

  return {
    committed() {
      if (failed || closing) return true;
      if (++behind >= maxBehind) {
        behind = 0;
        try {
          endCycle();
        } catch (err) {
          fail(err);
        }
        return false;
      }
      schedule();
      return true;
    },
    close(closeConnections) {
      closing ??= (async () => {
        clearTimeout(timer);
        await running;
        try {
          unpin();
          pin.close();
          // Before the database's own connections: the last to close checkpoints and removes the log, with their flushes.
          copier.close();
          closeConnections();
        } finally {
          if (logFd !== undefined) closeSync(logFd);
          databaseFile.close();
        }
      })();
      return closing;
    },
  };
}
