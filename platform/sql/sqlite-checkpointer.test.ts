import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, openSync, readSync, closeSync, statSync, copyFileSync } from "node:fs";
import { join } from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { startCheckpointer, type Checkpointer, type FlushedFile } from "./sqlite-checkpointer.js";

const dir = tempDirForSuite("concord-checkpoint-");
const row = "x".repeat(8_000);

/** A writing connection as openSqlite makes it: WAL, synchronous NORMAL, no checkpoints of its own. */
function writerAt(name: string): { path: string; writer: BetterSqlite3.Database; insert: (n: number) => void } {
  const path = join(dir, name);
  const writer = new BetterSqlite3(path);
  writer.pragma("journal_mode = WAL");
  writer.pragma("synchronous = NORMAL");
  writer.pragma("wal_autocheckpoint = 0");
  writer.exec("CREATE TABLE notes (text TEXT NOT NULL)");
  const statement = writer.prepare("INSERT INTO notes (text) VALUES (?)");
  return { path, writer, insert: (n) => writer.transaction(() => Array.from({ length: n }, () => statement.run(row)))() };
}

/** The two salts in the log's header: SQLite changes them when it rewinds the log to its start. */
function logSalts(path: string): string {
  const fd = openSync(`${path}-wal`, "r");
  try {
    const header = Buffer.alloc(8);
    readSync(fd, header, 0, 8, 16);
    return header.toString("hex");
  } finally {
    closeSync(fd);
  }
}

/** Opened after each test, so that a failed one does not leave its checkpointer waiting. */
const allGates: (() => void)[] = [];

/** Flushes that wait until a test lets them through; each call is recorded with the main file's size at that moment. */
function heldFlushes(path: string) {
  const calls: { file: FlushedFile; mainFileSize: number }[] = [];
  const gates: Record<FlushedFile, { open: boolean; waiting: (() => void)[] }> = { log: { open: false, waiting: [] }, database: { open: false, waiting: [] } };
  const held = {
    calls,
    flush: (_fd: number, file: FlushedFile) => {
      calls.push({ file, mainFileSize: statSync(path).size });
      const gate = gates[file];
      return gate.open ? Promise.resolve() : new Promise<void>((resolve) => gate.waiting.push(resolve));
    },
    open(file: FlushedFile) {
      gates[file].open = true;
      for (const resolve of gates[file].waiting.splice(0)) resolve();
    },
  };
  allGates.push(() => {
    held.open("log");
    held.open("database");
  });
  return held;
}

const until = async (condition: () => boolean, what: string) => {
  for (let waited = 0; !condition(); waited += 5) {
    if (waited > 5_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

/** Rows of `notes` in the main file alone, as a copy of it without the log shows them: what checkpoints have copied. */
function rowsInMainFile(path: string): number {
  const copy = `${path}-main-copy`;
  copyFileSync(path, copy);
  const connection = new BetterSqlite3(copy);
  try {
    // The table itself may be in the log yet.
    const made = connection.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'notes'").pluck().get() === 1;
    return made ? (connection.prepare("SELECT count(*) FROM notes").pluck().get() as number) : 0;
  } finally {
    connection.close();
  }
}

/** Processes a test started to hold SQLite's locks; killed after each test. */
const holders: ChildProcess[] = [];

/** Starts a process and resolves once it has printed `line`. */
async function holder(command: string, args: string[], line: string): Promise<ChildProcess> {
  const child = spawn(command, args, { stdio: ["pipe", "pipe", "inherit"] });
  holders.push(child);
  let printed = "";
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      printed += chunk.toString();
      if (printed.includes(line)) resolve();
    });
    child.once("exit", (code) => reject(new Error(`${command} exited (${code}) before printing "${line}"`)));
  });
  return child;
}

/**
 * Another process in the middle of SQLite's recovery of the log's index: the wal-index header in the -shm file is not
 * valid (what makes a connection recover it), and the process holds the locks recovery holds (WRITE, CKPT and RECOVER,
 * bytes 120 to 122 of the -shm file, fcntl locks as SQLite's unix VFS takes them). A reader is refused with
 * SQLITE_BUSY_RECOVERY until the process ends; the next reader then recovers the index from the log. (SQLite's own
 * recovery cannot be paused, so a process takes its place.)
 */
function recoveryElsewhere(path: string): Promise<ChildProcess> {
  const venvPython = join(import.meta.dirname, "../../.venv/bin/python");
  const script = [
    "import fcntl, os, sys",
    `fd = os.open(${JSON.stringify(`${path}-shm`)}, os.O_RDWR)`,
    "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 3, 120)",
    // isInit, byte 12 of the header's first copy
    'os.pwrite(fd, b"\\0", 12)',
    'print("recovering", flush=True)',
    "sys.stdin.read()",
  ].join("\n");
  return holder(existsSync(venvPython) ? venvPython : "python3", ["-c", script], "recovering");
}

let open: { checkpointer: Checkpointer; writer: BetterSqlite3.Database }[] = [];
afterEach(async () => {
  for (const child of holders.splice(0)) child.kill("SIGKILL");
  for (const openGates of allGates.splice(0)) openGates();
  for (const { checkpointer, writer } of open.splice(0)) await checkpointer.close(() => writer.close());
});

/** A checkpointer whose flush of `failing` fails with EIO, after that failure has been reported once. */
async function failedAt(name: string, failing: FlushedFile, { closedByTest = false } = {}) {
  const { path, writer, insert } = writerAt(name);
  const failures: Error[] = [];
  const checkpointer = startCheckpointer({
    path,
    intervalMs: 1,
    onFailure: (err) => failures.push(err),
    flush: async (_fd, file) => {
      if (file === failing) throw Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" });
    },
  });
  if (!closedByTest) open.push({ checkpointer, writer });
  insert(5);
  checkpointer.committed();
  await until(() => failures.length === 1, "the failure");
  return { path, writer, insert, checkpointer, failures };
}

describe("startCheckpointer", () => {
  it("copies only frames already flushed in the log, and flushes the main file after copying", async () => {
    const { path, writer, insert } = writerAt("order.db");
    const flushes = heldFlushes(path);
    const checkpointer = startCheckpointer({ path, intervalMs: 1, onFailure: (err) => expect.unreachable(err.message), flush: flushes.flush });
    open.push({ checkpointer, writer });
    const sizeBefore = statSync(path).size;
    insert(50);
    checkpointer.committed();
    await until(() => flushes.calls.length === 1, "the log's flush");
    expect(flushes.calls[0]).toEqual({ file: "log", mainFileSize: sizeBefore });
    // Written while the log's flush is under way: not covered by it, so not to be copied by this checkpoint.
    insert(50);
    checkpointer.committed();
    flushes.open("log");
    await until(() => flushes.calls.length === 2, "the main file's flush");
    expect(flushes.calls[1].file).toBe("database");
    expect(flushes.calls[1].mainFileSize).toBeGreaterThan(sizeBefore + 50 * row.length);
    // Another checkpoint now (the pin still held) copies no further than the frames the log's flush covered.
    const probe = new BetterSqlite3(path);
    try {
      const [state] = probe.pragma("wal_checkpoint(PASSIVE)") as { log: number; checkpointed: number }[];
      expect(state.checkpointed).toBeGreaterThan(0);
      expect(state.checkpointed).toBeLessThan(state.log);
    } finally {
      probe.close();
    }
    flushes.open("database");
  });

  it("lets no writer rewind the log before the main file is flushed", async () => {
    const { path, writer, insert } = writerAt("rewind.db");
    const flushes = heldFlushes(path);
    flushes.open("log");
    const checkpointer = startCheckpointer({ path, intervalMs: 1, onFailure: (err) => expect.unreachable(err.message), flush: flushes.flush });
    open.push({ checkpointer, writer });
    insert(20);
    checkpointer.committed();
    await until(() => flushes.calls.some((c) => c.file === "database"), "the main file's flush");
    // Every frame is in the main file now, but not yet on disk: the log must stay as it is.
    const salts = logSalts(path);
    const logSize = statSync(`${path}-wal`).size;
    insert(1);
    expect(logSalts(path)).toBe(salts);
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(logSize);
    flushes.open("database");
    // Once the main file is flushed, the next checkpoint copies the last commit and the writer rewinds the log.
    await until(() => flushes.calls.filter((c) => c.file === "database").length === 1 && !writer.inTransaction, "the end of the checkpoint");
    checkpointer.committed();
    // Its flush of the main file, let through at once, was called in an earlier turn of the event loop than the one
    // that found the call: what is left of the checkpoint (its bookkeeping, the pin's release) runs in promise
    // callbacks, all of them run by the end of that turn. The pin is released by now; no pause is needed.
    await until(() => flushes.calls.filter((c) => c.file === "database").length === 2, "the second checkpoint");
    insert(1);
    expect(logSalts(path)).not.toBe(salts);
    expect(writer.prepare("SELECT count(*) FROM notes").pluck().get()).toBe(22);
  });

  it("reports a failed flush of the log once, and gives the log back to SQLite's own checkpoints", async () => {
    const { writer, checkpointer, failures } = await failedAt("failed.db", "log");
    expect(failures[0].message).toMatch(/EIO/);
    // Nothing was copied and nothing pins the log: the writer's own checkpoint copies all of it.
    const [state] = writer.pragma("wal_checkpoint(PASSIVE)") as { log: number; checkpointed: number }[];
    expect(state.checkpointed).toBe(state.log);
    expect(checkpointer.committed()).toBe("scheduled");
    await new Promise((r) => setTimeout(r, 20));
    expect(failures).toHaveLength(1);
  });

  it("keeps the log pinned after a failed flush of the main file: the log, on disk, is never reused over pages that may not be", async () => {
    const { path, writer, insert } = await failedAt("failed-main.db", "database");
    // Everything was copied, so without the pin the next write would start the log again, and SQLite's own checkpoint would copy on.
    const salts = logSalts(path);
    writer.pragma("wal_checkpoint(PASSIVE)");
    insert(1);
    writer.pragma("wal_checkpoint(PASSIVE)");
    insert(1);
    expect(logSalts(path)).toBe(salts);
    expect(writer.prepare("SELECT count(*) FROM notes").pluck().get()).toBe(7);
  });

  it("asks for a rewind once the log is long, and a rewind with writes held copies all of it, so the next write starts it again", async () => {
    const { path, writer, insert } = writerAt("rewind-asked.db");
    const checkpointer = startCheckpointer({ path, intervalMs: 1, maxLogFrames: 40, onFailure: (err) => expect.unreachable(err.message) });
    open.push({ checkpointer, writer });
    // Commits keep coming while each checkpoint flushes: it copies only what came before it, and the log is seldom all copied.
    const verdicts: string[] = [];
    for (let i = 0; i < 2_000 && !verdicts.includes("rewind"); i++) {
      insert(1);
      verdicts.push(checkpointer.committed());
      await new Promise((r) => setTimeout(r, 1));
    }
    expect(verdicts).toContain("rewind");
    // (The log may have been started again on its own between two commits; what counts is that the rewind does it.)
    insert(1);
    const salts = logSalts(path);
    let held = 0;
    await checkpointer.rewind(async () => {
      held++;
      return () => undefined;
    });
    expect(held).toBe(1);
    insert(1);
    expect(logSalts(path)).not.toBe(salts);
  });

  it("asks for no rewind at every checkpoint while a reader elsewhere holds the copy back", async () => {
    const { path, writer, insert } = writerAt("old-reader.db");
    const checkpointer = startCheckpointer({ path, intervalMs: 1, maxLogFrames: 20, maxBehind: 200, onFailure: (err) => expect.unreachable(err.message) });
    open.push({ checkpointer, writer });
    insert(5);
    // Another connection's read transaction, begun now, keeps every checkpoint from copying what comes after it.
    const reader = new BetterSqlite3(path, { readonly: true });
    reader.exec("BEGIN");
    reader.prepare("SELECT count(*) FROM notes").get();
    let rewinds = 0;
    try {
      for (let i = 0; i < 300; i++) {
        insert(1);
        if (checkpointer.committed() === "rewind") {
          rewinds++;
          await checkpointer.rewind(async () => () => undefined);
        }
        await new Promise((r) => setTimeout(r, 1));
      }
    } finally {
      reader.exec("ROLLBACK");
      reader.close();
    }
    // One a maxBehind (200 commits) at most, not one after each checkpoint.
    expect(rewinds).toBeGreaterThanOrEqual(1);
    expect(rewinds).toBeLessThanOrEqual(2);
  });

  it("keeps the log through close after a failed flush of the main file: the last connection to close must not remove it", async () => {
    const { path, writer, checkpointer } = await failedAt("pinned-close.db", "database", { closedByTest: true });
    await checkpointer.close(() => writer.close());
    // Everything was copied (without a flush), so the writer's close would have copied nothing, flushed nothing and removed the log.
    expect(existsSync(`${path}-wal`)).toBe(true);
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(32);
  });

  it("never rejects a rewind, even when the failure's callback throws", async () => {
    const { path, writer, insert } = writerAt("throwing-callback.db");
    const checkpointer = startCheckpointer({
      path,
      intervalMs: 1_000_000,
      onFailure: () => {
        throw new Error("a logger that throws");
      },
      flush: async () => {
        throw new Error("EIO");
      },
    });
    open.push({ checkpointer, writer });
    insert(1);
    await expect(checkpointer.rewind(async () => () => undefined)).resolves.toBeUndefined();
  });

  it("tries a checkpoint again when its reader was refused (another connection's recovery), without another commit", async () => {
    const { path, writer, insert } = writerAt("refused-reader.db");
    const flushes = heldFlushes(path);
    flushes.open("log");
    flushes.open("database");
    const checkpointer = startCheckpointer({ path, intervalMs: 1, onFailure: (err) => expect.unreachable(err.message), flush: flushes.flush });
    open.push({ checkpointer, writer });
    insert(5);
    const recovery = await recoveryElsewhere(path);
    checkpointer.committed();
    // Timers fire in the order they expire: the checkpoint's (1 ms, set first) has been tried, and refused.
    await new Promise((r) => setTimeout(r, 20));
    expect(flushes.calls).toHaveLength(0);
    expect(rowsInMainFile(path)).toBe(0);
    recovery.kill("SIGKILL");
    // No commit comes: the service has gone quiet.
    await until(() => rowsInMainFile(path) === 5, "the five rows in the main file");
    expect(flushes.calls.map((c) => c.file)).toEqual(["log", "database"]);
  });

  it("tries a checkpoint again when its copy was refused (another connection's checkpoint), without another commit", async () => {
    const { path, writer, insert } = writerAt("refused-copy.db");
    const flushes = heldFlushes(path);
    flushes.open("log");
    flushes.open("database");
    const checkpointer = startCheckpointer({ path, intervalMs: 1, onFailure: (err) => expect.unreachable(err.message), flush: flushes.flush });
    open.push({ checkpointer, writer });
    // Another process (an sqlite3 shell, say) reads, then runs a FULL checkpoint that waits for its own reader to
    // move on: it holds the checkpoint lock all along.
    const script = [
      `import BetterSqlite3 from ${JSON.stringify(import.meta.resolve("better-sqlite3"))};`,
      `const path = ${JSON.stringify(path)};`,
      "const reader = new BetterSqlite3(path, { readonly: true });",
      'reader.exec("BEGIN");',
      'reader.prepare("SELECT count(*) FROM notes").get();',
      'console.log("reading");',
      'process.stdin.once("data", () => {',
      // Used here, the reader is not collected (and its transaction ended) while the checkpoint waits.
      '  if (!reader.inTransaction) throw new Error("the reader\'s transaction ended");',
      "  const other = new BetterSqlite3(path, { timeout: 60000 });",
      '  console.log("checkpointing");',
      // Refused at once (log -1) while the probe below checkpoints: tried until it holds the lock and waits.
      '  while (other.pragma("wal_checkpoint(FULL)")[0].log === -1);',
      "});",
    ].join("\n");
    const other = await holder(process.execPath, ["--input-type=module", "-e", script], "reading");
    insert(5);
    other.stdin!.write("go\n");
    const probe = new BetterSqlite3(path, { timeout: 0 });
    try {
      // The probe copies nothing of the five rows (the other process's reader began before them).
      await until(() => (probe.pragma("wal_checkpoint(PASSIVE)") as { busy: number }[])[0].busy === 1, "the other process's checkpoint");
    } finally {
      probe.close();
    }
    checkpointer.committed();
    await until(() => flushes.calls.length > 0, "the log's flush");
    // The copy, right after the flush, was refused: nothing of the five rows reached the main file.
    expect(rowsInMainFile(path)).toBe(0);
    other.kill("SIGKILL");
    await until(() => rowsInMainFile(path) === 5, "the five rows in the main file");
  });

  it("tries no refused checkpoint again once closed", async () => {
    const { path, writer, insert } = writerAt("refused-close.db");
    const flushes = heldFlushes(path);
    const checkpointer = startCheckpointer({ path, intervalMs: 1, onFailure: (err) => expect.unreachable(err.message), flush: flushes.flush });
    insert(5);
    const recovery = await recoveryElsewhere(path);
    checkpointer.committed();
    await new Promise((r) => setTimeout(r, 20));
    await checkpointer.close(() => undefined);
    recovery.kill("SIGKILL");
    await new Promise((r) => setTimeout(r, 50));
    expect(flushes.calls).toHaveLength(0);
    expect(rowsInMainFile(path)).toBe(0);
    writer.close();
  });

  it("closes after the checkpoint under way, its connections before the database's own, so the last one removes the log", async () => {
    const { path, writer, insert } = writerAt("close.db");
    const flushes = heldFlushes(path);
    flushes.open("log");
    const checkpointer = startCheckpointer({ path, intervalMs: 1, onFailure: (err) => expect.unreachable(err.message), flush: flushes.flush });
    insert(10);
    checkpointer.committed();
    await until(() => flushes.calls.some((c) => c.file === "database"), "the main file's flush");
    let closedConnections = false;
    const closed = checkpointer.close(() => {
      closedConnections = true;
      writer.close();
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(closedConnections).toBe(false);
    flushes.open("database");
    await closed;
    expect(closedConnections).toBe(true);
    expect(existsSync(`${path}-wal`)).toBe(false);
    const reopened = new BetterSqlite3(path, { readonly: true });
    expect(reopened.prepare("SELECT count(*) FROM notes").pluck().get()).toBe(10);
    reopened.close();
  });
});
