import { closeSync, fdatasync, openSync, realpathSync } from "node:fs";
import BetterSqlite3 from "better-sqlite3";

/**
 * Copies a WAL database's committed pages back into its main file without
 * the event loop waiting for the disk, and without a second thread of
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
 * SQLite rewinds the log (writes from its start again) at the first write
 * after a checkpoint that copied all of it; commits made during a
 * checkpoint's flushes are copied by the next one, so under steady writes
 * that never happens by itself. Once the log holds `maxLogFrames` frames, or
 * `maxBehind` commits came without a checkpoint ending (a loop of
 * transactions that never lets a timer fire), `committed()` asks for a
 * rewind: once the checkpoint under way has ended, the caller holds its
 * write transactions back while `rewind()` checkpoints all of the log, so
 * the next write starts it again. Writes wait for two flushes then (four
 * when the rewind was asked for by a loop that never lets the event loop
 * turn: writes are held at once, the checkpoint under way can only end
 * then); reads and everything else go on. A rewind
 * that could not copy all of the log (a reader elsewhere, an sqlite3 shell
 * say, holds an older snapshot) is not asked for again before `maxBehind`
 * more commits. The writer
 * itself flushes the log's new header once each time (SQLite's own rule
 * under NORMAL): the one flush left on the event loop.
 *
 * SQLite can refuse a checkpoint for a moment: the pin's read while another
 * connection rebuilds the log's index (SQLITE_BUSY_RECOVERY), the copy while
 * another connection checkpoints (an sqlite3 shell, say). The checkpoint is
 * then tried again after a pause, which doubles from `intervalMs` up to a
 * second and starts over once one has run: no commit need come for the
 * commits before it to be flushed and copied.
 *
 * A failed flush of the main file keeps the log pinned until the database
 * closes: the pages copied may not be on disk, so the log, which is, must
 * not be reused (a failed fsync is not worth retrying: Linux reports an
 * error once and may drop the pages). The log then grows until a restart,
 * whose recovery copies it again. Any failure ends these checkpoints and
 * gives the log back to SQLite's own, in commits.
 *
 * A worker thread did this before, at about 10 MiB of resident memory a
 * service (Node's start-up in a second V8 isolate).
 */
export interface Checkpointer {
  /**
   * Called after a commit of `transactions` transactions (several when
   * they were committed as a group; `maxBehind` counts them, as each
   * writes its own pages): a checkpoint follows within `intervalMs`.
   * "rewind" when the log is to be started again: the caller then runs
   * `rewind()` while no write transaction is under way or starts.
   */
  committed(transactions?: number): "scheduled" | "rewind";
  /**
   * Waits for the checkpoint under way (writes go on), then calls
   * `holdWrites`, which returns once no write transaction is under way or
   * can start, and checkpoints all of the log before releasing them. Never
   * rejects (a failure goes to `onFailure`).
   */
  rewind(holdWrites: () => Promise<() => void>): Promise<void>;
  /**
   * Ends the checkpoint under way, closes the checkpointer's connections,
   * then calls `closeConnections` (the database's own), then closes the
   * files it held open: closing a descriptor of the database file drops
   * every POSIX lock this process holds on it, so that comes last, and only
   * once `closeConnections` has returned.
   */
  close(closeConnections: () => void): Promise<void>;
}

/** Which file a flush is for: the log (step 2) or the main file (step 4). */
export type FlushedFile = "log" | "database";

export interface CheckpointerOptions {
  readonly path: string;
  /** Default 100 ms. */
  readonly intervalMs?: number;
  /** Frames in the log (pages written) that ask for a rewind. Default 1,000, SQLite's own checkpoint threshold. */
  readonly maxLogFrames?: number;
  /** Transactions committed without a checkpoint ending (a group commit counts each of its own) that ask for a rewind. Default 1,000. */
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
  /** Commits counted when the log was pinned: those the checkpoint covers. */
  behindAtPin: number;
}

export function startCheckpointer(options: CheckpointerOptions): Checkpointer {
  const intervalMs = options.intervalMs ?? 100;
  const maxLogFrames = options.maxLogFrames ?? 1_000;
  const maxBehind = options.maxBehind ?? 1_000;
  const maxRetryMs = Math.max(intervalMs, 1_000);
  const flush = options.flush ?? flushFile;
  // SQLite follows a symbolic link to the file and keeps its log beside the file itself.
  const path = realpathSync(options.path);
  // No busy wait on either: a PASSIVE checkpoint never waits, and a pin that cannot start now is tried again later (retry).
  const opened: BetterSqlite3.Database[] = [];
  let pin: BetterSqlite3.Database;
  let copier: BetterSqlite3.Database;
  let readSchema: BetterSqlite3.Statement;
  let databaseFile: ReturnType<typeof openDatabaseFile>;
  try {
    opened.push((pin = new BetterSqlite3(path, { readonly: true, fileMustExist: true, timeout: 0 })));
    opened.push((copier = new BetterSqlite3(path, { fileMustExist: true, timeout: 0 })));
    copier.pragma("synchronous = OFF");
    // A checkpoint copies pages through a buffer of its own; neither connection needs much of a page cache.
    for (const connection of opened) connection.pragma("cache_size = -64");
    readSchema = pin.prepare("SELECT count(*) FROM sqlite_schema").pluck();
    databaseFile = openDatabaseFile(path);
  } catch (err) {
    for (const connection of opened) connection.close();
    throw err;
  }
  let logFd: number | undefined;

  /** Commits since the last checkpoint was pinned; frames in the log when one last copied, and whether it copied them all. */
  let behind = 0;
  let logFrames = 0;
  let copiedAll = true;
  let rewindAsked = false;
  /** Why the rewind was asked for: "commits" when no checkpoint could end (a loop that never lets a timer fire). */
  let rewindFor: "commits" | "frames" = "frames";
  /** Commits in all, and the count before which no rewind is asked for (after one that could not copy all). */
  let commits = 0;
  let rewindNotBefore = 0;
  let failed = false;
  /** The main file's flush failed: the pin stays until close. */
  let pinnedForGood = false;
  let closing: Promise<void> | undefined;
  let wanted = false;
  let timer: NodeJS.Timeout | undefined;
  let cycle: Cycle | undefined;
  let running: Promise<void> = Promise.resolve();
  /** The pause before a refused checkpoint is tried again. */
  let retryMs = intervalMs;

  const unpin = () => {
    if (!pinnedForGood && pin.open && pin.inTransaction) pin.exec("ROLLBACK");
  };
  const fail = (err: unknown, stage: Cycle["stage"]) => {
    failed = true;
    clearTimeout(timer);
    if (stage === "database") pinnedForGood = true;
    try {
      unpin();
      options.onFailure(err instanceof Error ? err : new Error(String(err)));
    } catch {
      // Nothing more to do: the checkpoints have ended, and a promise of theirs must not reject unheard.
    }
  };

  /** "refused" when SQLite refused the pin or the copy for a moment: nothing was copied. */
  const checkpoint = async (current: Cycle): Promise<"done" | "refused"> => {
    try {
      pin.exec("BEGIN");
      readSchema.get();
    } catch (err) {
      unpin();
      // A reader is refused while another connection rebuilds the log's index (SQLITE_BUSY_RECOVERY).
      if (/^SQLITE_(BUSY|LOCKED)/.test(String((err as { code?: unknown }).code))) return "refused";
      throw err;
    }
    current.behindAtPin = behind;
    logFd ??= openSync(`${path}-wal`, "r");
    await flush(logFd, "log");
    const [copied] = copier.pragma("wal_checkpoint(PASSIVE)") as { busy: number; log: number; checkpointed: number }[];
    // Another connection's checkpoint holds the log (busy, log and checkpointed -1): nothing copied, nothing to flush.
    if (copied?.busy) return "refused";
    current.stage = "database";
    await flush(databaseFile.fd, "database");
    logFrames = copied?.log ?? 0;
    copiedAll = copied !== undefined && copied.checkpointed === copied.log;
    return "done";
  };
  /** One checkpoint, start to end; the promise never rejects. */
  const runCycle = (): Promise<void> => {
    const current: Cycle = { stage: "log", behindAtPin: 0 };
    cycle = current;
    running = checkpoint(current).then(
      (outcome) => {
        cycle = undefined;
        // Commits made while it ran are not in it.
        behind -= current.behindAtPin;
        try {
          unpin();
        } catch (err) {
          return fail(err, "log");
        }
        if (outcome === "refused") {
          copiedAll = false;
          return retry();
        }
        retryMs = intervalMs;
        if (wanted) schedule();
      },
      (err) => {
        cycle = undefined;
        fail(err, current.stage);
      },
    );
    return running;
  };
  const start = () => {
    timer = undefined;
    if (failed || closing || cycle) return;
    wanted = false;
    void runCycle();
  };
  const schedule = () => {
    if (failed || closing || timer) return;
    if (cycle) wanted = true;
    else timer = setTimeout(start, intervalMs).unref();
  };
  /** After a refusal: the commits before it are still to be checkpointed, whether or not another comes. Commits meanwhile wait for this timer. */
  const retry = () => {
    if (failed || closing) return;
    clearTimeout(timer);
    wanted = false;
    timer = setTimeout(start, retryMs).unref();
    retryMs = Math.min(retryMs * 2, maxRetryMs);
  };

  return {
    committed(transactions = 1) {
      if (failed || closing) return "scheduled";
      behind += transactions;
      commits += transactions;
      if (!rewindAsked && commits >= rewindNotBefore && (behind >= maxBehind || logFrames >= maxLogFrames)) {
        rewindAsked = true;
        rewindFor = behind >= maxBehind ? "commits" : "frames";
        return "rewind";
      }
      schedule();
      return "scheduled";
    },
    async rewind(holdWrites) {
      try {
        // The checkpoint under way ends first, writes going on meanwhile; but a loop of writes that never lets
        // the event loop turn would keep it from ending, so then writes are held at once.
        const early = rewindFor === "commits" ? await holdWrites() : undefined;
        await running;
        if (failed || closing) return early?.();
        clearTimeout(timer);
        timer = undefined;
        wanted = false;
        const release = early ?? (await holdWrites());
        try {
          // One may have started from a commit made before writes were held.
          while (cycle) await running;
          if (failed || closing) return;
          await runCycle();
        } finally {
          release();
        }
        // Nothing was written meanwhile: unless a reader elsewhere held the copy back, the next write starts the log again.
        if (!failed && !copiedAll) rewindNotBefore = commits + maxBehind;
        if (!failed) logFrames = 0;
      } finally {
        rewindAsked = false;
      }
    },
    close(closeConnections) {
      closing ??= (async () => {
        clearTimeout(timer);
        await running;
      })();
      return closing.then(() => {
        // Pinned for good (a flush of the main file failed), the log must outlive this process: the pin, open until the
        // database's own connections have closed, keeps the last of them from checkpointing and removing it.
        const keepLog = pinnedForGood;
        if (pin.open && !keepLog) {
          unpin();
          pin.close();
        }
        if (copier.open) {
          // Should it ever be the last connection, its close would checkpoint and remove the log: with flushes, then.
          copier.pragma("synchronous = NORMAL");
          copier.close();
        }
        // Before the database's own connections: the last to close checkpoints and removes the log, with its flushes.
        // Should that throw (a statement still open), the files stay open with the connections, and a later close tries again.
        closeConnections();
        if (pin.open) pin.close();
        if (logFd !== undefined) closeSync(logFd);
        logFd = undefined;
        databaseFile.close();
      });
    },
  };
}
