import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

/**
 * Copies a WAL database's committed pages back into its main file from a
 * worker thread, so the event loop never waits for it. SQLite otherwise
 * checkpoints inside the COMMIT that takes the log past 1,000 pages: it
 * writes those pages to the main file and waits for its fsync there, which
 * took a third of the time of a one-row transaction on average (measured:
 * 47 µs per transaction against 31 µs without checkpoints) and stalled
 * everything else in the process for milliseconds each time.
 *
 * The writing connection turns automatic checkpoints off; after a commit
 * the checkpointer is asked for a PASSIVE checkpoint (it never blocks the
 * writer or a reader) at most every `intervalMs`. SQLite rewinds the log to
 * its start at the next write after a checkpoint that copied everything.
 * Commits stay as durable as before: synchronous=NORMAL survives a crash of
 * the process either way, and a checkpoint is what makes them survive a
 * power loss.
 */
export interface Checkpointer {
  /**
   * Called after a commit: a checkpoint follows within `intervalMs`. False
   * when `maxBehind` commits came since the worker last finished one (a
   * loop of transactions that never lets the event loop turn, as a bulk
   * import): the caller then checkpoints itself, which bounds the log.
   */
  committed(): boolean;
  /** Stops the worker after the checkpoint under way, if any. */
  close(): Promise<void>;
}

export interface CheckpointerOptions {
  readonly path: string;
  /** Default 100 ms. */
  readonly intervalMs?: number;
  /** Default 1,000 commits. */
  readonly maxBehind?: number;
  /** The worker failed (it could not open the database, say): the caller checkpoints on its own again. */
  readonly onFailure: (err: Error) => void;
}

/** The worker: one connection, a PASSIVE checkpoint per message, its result (or error) posted back. */
const workerSource = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.module);
const db = new Database(workerData.path, { fileMustExist: true });
parentPort.on("message", (message) => {
  if (message === "close") {
    db.close();
    parentPort.close();
    return;
  }
  let row;
  try {
    row = db.pragma("wal_checkpoint(PASSIVE)")[0];
  } catch (err) {
    row = { error: String((err && err.message) || err) };
  }
  parentPort.postMessage(row);
});
parentPort.postMessage("ready");
`;

const betterSqlite3Path = createRequire(import.meta.url).resolve("better-sqlite3");

export function startCheckpointer(options: CheckpointerOptions): Checkpointer {
  const intervalMs = options.intervalMs ?? 100;
  const maxBehind = options.maxBehind ?? 1_000;
  const worker = new Worker(workerSource, { eval: true, workerData: { module: betterSqlite3Path, path: options.path } });
  worker.unref();
  let behind = 0;
  let failed = false;
  let busy = true; // until "ready"
  let wanted = false;
  let timer: NodeJS.Timeout | undefined;
  let closing: Promise<void> | undefined;
  const fail = (err: Error) => {
    if (failed) return;
    failed = true;
    clearTimeout(timer);
    options.onFailure(err);
    void worker.terminate();
  };
  const request = () => {
    timer = undefined;
    if (failed || closing) return;
    if (busy) {
      wanted = true;
      return;
    }
    busy = true;
    wanted = false;
    worker.postMessage("checkpoint");
  };
  worker.on("message", (message: unknown) => {
    busy = false;
    behind = 0;
    if (message && typeof message === "object" && "error" in message) {
      const error = String((message as { error: unknown }).error);
      // A checkpoint can be refused for a moment (SQLITE_BUSY while another one runs); the next catches up.
      if (!/busy|locked/i.test(error)) return fail(new Error(`checkpointing failed: ${error}`));
    }
    if (wanted && !timer) timer = setTimeout(request, intervalMs).unref();
  });
  worker.on("error", fail);
  worker.on("exit", (code) => {
    if (!closing) fail(new Error(`the checkpoint worker exited with code ${code}`));
  });
  return {
    committed() {
      if (failed || closing) return true;
      if (++behind >= maxBehind) {
        behind = 0;
        return false;
      }
      if (busy) wanted = true;
      else timer ??= setTimeout(request, intervalMs).unref();
      return true;
    },
    close() {
      closing ??= (async () => {
        clearTimeout(timer);
        if (failed) return;
        const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
        // Unreferenced, the worker would not keep the process alive until it has closed its connection.
        worker.ref();
        worker.postMessage("close");
        await exited;
      })();
      return closing;
    },
  };
}
