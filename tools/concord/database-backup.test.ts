import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, relative } from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { inboxMigrations, outboxMigrations } from "../../platform/events/index.js";
import { openDatabase } from "../../platform/sql/index.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { helps } from "./help.js";
import { backupSqlite, readBackupRecord, restoreSqlite, serviceConsumers, sourceProblem, writeBackupRecord } from "./database-backup.js";

const dir = tempDirForSuite("concord-database-backup-");
const rows = (path: string): number[] => {
  const db = new BetterSqlite3(path, { readonly: true });
  try {
    return db.prepare("SELECT n FROM t ORDER BY n").pluck().all() as number[];
  } finally {
    db.close();
  }
};

/** The bytes of a hot rollback journal (of a scratch database at `scratch`): the pages a transaction had changed, to be written back. */
function hotJournal(scratch: string): Buffer {
  const db = new BetterSqlite3(scratch);
  try {
    db.pragma("journal_mode = DELETE");
    // A cache this small spills the transaction's pages to the file before it commits, as a large transaction does.
    db.pragma("cache_size = 2");
    db.exec("CREATE TABLE t (n INTEGER, pad TEXT)");
    const insert = db.prepare("INSERT INTO t VALUES (?, ?)");
    for (let n = 0; n < 200; n++) insert.run(n, "x".repeat(500));
    db.exec("BEGIN");
    db.exec("UPDATE t SET pad = 'y' || pad");
    try {
      return readFileSync(`${scratch}-journal`);
    } finally {
      db.exec("ROLLBACK");
    }
  } finally {
    db.close();
  }
}

describe("backupSqlite", () => {
  it("copies a database in use with the commits still in its write-ahead log, to a new file only its owner reads", () => {
    const path = join(dir, "live.db");
    const writer = new BetterSqlite3(path);
    writer.pragma("journal_mode = WAL");
    // As the services run it: SQLite's own checkpoints off, so the commits stay in the log.
    writer.pragma("wal_autocheckpoint = 0");
    writer.exec("CREATE TABLE t (n INTEGER)");
    const insert = writer.prepare("INSERT INTO t VALUES (?)");
    for (let n = 1; n <= 100; n++) insert.run(n);
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(0);
    // A reader of the service's holds a snapshot meanwhile; the backup is not held up by it.
    const reader = new BetterSqlite3(path, { readonly: true });
    reader.exec("BEGIN");
    reader.prepare("SELECT count(*) FROM t").get();
    try {
      const target = join(dir, "live-backup.db");
      expect(backupSqlite(path, target).bytes).toBe(statSync(target).size);
      expect(rows(target)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      expect(statSync(target).mode & 0o777).toBe(0o600);
      expect(existsSync(`${target}.partial`)).toBe(false);
      // Writes go on after it, and a backup never overwrites one.
      insert.run(101);
      expect(() => backupSqlite(path, target)).toThrow(`${target} exists: a backup goes to a new file; name another FILE, or, to replace that backup, remove ${target} and ${target}.json first`);
      expect(rows(target)).toHaveLength(100);
      expect(() => backupSqlite(join(dir, "none.db"), join(dir, "none-backup.db"))).toThrow("does not exist");
      // Nothing to "remove first" where FILE is a directory, or the database itself.
      expect(() => backupSqlite(path, dir)).toThrow(`${dir} is a directory: name the backup's file in it (${join(dir, "live.db")}, say)`);
      symlinkSync(path, join(dir, "live-itself.db"));
      for (const itself of [path, join(dir, "live-itself.db")]) expect(() => backupSqlite(path, itself)).toThrow(`${itself} is the service's database itself: a backup goes to a new file, elsewhere`);
      // A rollback journal beside the database, where none is now: the next opening would play it back and delete it.
      for (const own of [`${path}-journal`, `${dir}/./live.db-journal`, `${path}-lock-journal`]) {
        expect(() => backupSqlite(path, own)).toThrow("is a file SQLite or the service keeps beside the database");
        expect(existsSync(own)).toBe(false);
      }
      // Nor the log the database keeps now: "remove it first" would have the commits in it lost.
      const log = readFileSync(`${path}-wal`);
      for (const own of [`${path}-wal`, `${path}-shm`]) expect(() => backupSqlite(path, own)).toThrow(`${own} is a file SQLite or the service keeps beside the database ${path} (its ${own.slice(-4)})`);
      expect(readFileSync(`${path}-wal`)).toEqual(log);
      // Another backup to the same file, still being written, is neither taken for this one's nor deleted.
      const other = join(dir, "live-other.db");
      writeFileSync(`${other}.partial`, "another backup's, half-written");
      expect(() => backupSqlite(path, other)).toThrow(`${other}.partial exists: another backup to ${other} is under way, or one was cut short`);
      expect(readFileSync(`${other}.partial`, "utf8")).toBe("another backup's, half-written");
      expect(existsSync(other)).toBe(false);
      // SQLite keeps them beside the file a symbolic link points to; and another database's are no place either.
      symlinkSync(path, join(dir, "live-link.db"));
      expect(() => backupSqlite(join(dir, "live-link.db"), `${path}-journal`)).toThrow("(its -journal)");
      new BetterSqlite3(join(dir, "neighbour.db")).close();
      expect(() => backupSqlite(path, join(dir, "neighbour.db-wal"))).toThrow(`beside the database ${join(dir, "neighbour.db")} (its -wal)`);
    } finally {
      reader.exec("ROLLBACK");
      reader.close();
      writer.close();
    }
  });
});

describe("backupSqlite of a stopped service's database", () => {
  it("leaves its directory as it was: no log or shared memory of the copy's reading", async () => {
    const path = join(dir, "stopped.db");
    await (await openDatabase({ path, owner: "orders", migrations: [...outboxMigrations, ...inboxMigrations] })).close();
    const files = () => readdirSync(dir).filter((f) => f.startsWith("stopped.db")).sort();
    expect(files()).toEqual(["stopped.db", "stopped.db-lock"]);
    expect(sourceProblem(path, "orders")).toBeUndefined();
    backupSqlite(path, join(dir, "stopped-backup.db"));
    expect(files()).toEqual(["stopped.db", "stopped.db-lock"]);
  });

  it("makes FILE's folder when it is missing, as its --help says", async () => {
    const path = join(dir, "stopped-for-folder.db");
    await (await openDatabase({ path, owner: "orders", migrations: [...outboxMigrations, ...inboxMigrations] })).close();
    const target = join(dir, "not-there-yet", "nested", "orders.db");
    backupSqlite(path, target);
    expect(statSync(target).isFile()).toBe(true);
    expect(helps["database backup"].replace(/\s+/g, " ")).toContain("FILE's folder is made when it is missing");
  });
});

describe("backupSqlite and another backup to the same file", () => {
  it("does not replace a backup to its file that ended while it copied", async () => {
    const source = join(dir, "contended.db");
    const target = join(dir, "contended-backup.db");
    const db = new BetterSqlite3(source);
    db.exec("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1)");
    db.close();
    // A writer in rollback mode holds the database while the copy waits to read it; meanwhile another backup to
    // the same file, begun after this one looked for it, ends.
    const other = spawn(
      process.execPath,
      [
        "-e",
        `const db = new (require("better-sqlite3"))(${JSON.stringify(source)}); db.exec("BEGIN EXCLUSIVE"); console.log("held");
         setTimeout(() => require("node:fs").writeFileSync(${JSON.stringify(target)}, "another backup, complete"), 500);
         setTimeout(() => { db.exec("ROLLBACK"); db.close(); }, 1500);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await once(other.stdout, "data");
      expect(() => backupSqlite(source, target)).toThrow(`backing up ${source} to ${target} failed: ${target} was made meanwhile (another backup's to it?), and is left as it is`);
      expect(readFileSync(target, "utf8")).toBe("another backup, complete");
      expect(existsSync(`${target}.partial`)).toBe(false);
    } finally {
      if (other.exitCode === null) await once(other, "exit");
    }
  });

  it("does not replace a backup to its file made meanwhile where the file system refuses hard links", async () => {
    // A file system without hard links (FAT, some network mounts), as the process sees it: link() fails with EPERM.
    // Just before each rename to CONTENDED, another backup takes that name, as a new file, if it still can.
    const shim = join(dir, "no-hard-links.so");
    writeFileSync(
      `${shim}.c`,
      `#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int link(const char *from, const char *to) { errno = EPERM; return -1; }
int linkat(int fromdir, const char *from, int todir, const char *to, int flags) { errno = EPERM; return -1; }
int rename(const char *from, const char *to) {
  int (*real)(const char *, const char *) = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
  const char *contended = getenv("CONTENDED");
  if (contended && strcmp(to, contended) == 0) {
    int fd = open(to, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) { write(fd, "another backup, complete", 24); close(fd); }
    fprintf(stderr, fd >= 0 ? "the other backup took the name\\n" : "the other backup found the name taken\\n");
  }
  return real(from, to);
}
`,
    );
    // A C compiler is there wherever better-sqlite3 was built (npm ci compiles it).
    execFileSync("cc", ["-shared", "-fPIC", "-o", shim, `${shim}.c`, "-ldl"]);
    const source = join(dir, "linkless.db");
    const db = new BetterSqlite3(source);
    db.exec("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1)");
    db.close();
    const [free, contended] = [join(dir, "linkless-backup.db"), join(dir, "linkless-contended.db")];
    const backUp = (target: string) =>
      new Promise<{ status: number | null; stderr: string }>((resolve) => {
        const child = spawn(
          process.execPath,
          ["--import", "tsx", "-e", `import { backupSqlite } from ${JSON.stringify(join(import.meta.dirname, "database-backup.ts"))}; backupSqlite(${JSON.stringify(source)}, ${JSON.stringify(target)});`],
          { env: { ...process.env, LD_PRELOAD: shim, CONTENDED: contended }, stdio: ["ignore", "ignore", "pipe"] },
        );
        let stderr = "";
        child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
        child.on("exit", (status) => resolve({ status, stderr }));
      });
    const uncontended = await backUp(free);
    expect(uncontended.status, uncontended.stderr).toBe(0);
    expect(rows(free)).toEqual([1]);
    // The name is this backup's from before its rename: the other finds it taken, and nothing of another's is replaced.
    const raced = await backUp(contended);
    expect(raced.stderr).toContain("the other backup found the name taken");
    expect(raced.status, raced.stderr).toBe(0);
    expect(rows(contended)).toEqual([1]);
    expect(readdirSync(dir).filter((f) => f.startsWith("linkless-")).sort()).toEqual(["linkless-backup.db", "linkless-contended.db"]);
  });

  it("does not replace another backup's record", () => {
    const backup = join(dir, "recorded.db");
    const record = { service: "orders", database: "x.db", takenAt: "2026-12-05T10:00:00.000Z", positions: null };
    writeBackupRecord(backup, record);
    expect(() => writeBackupRecord(backup, { ...record, takenAt: "2026-12-05T11:00:00.000Z" })).toThrow(
      `${backup}.json exists, another backup's record; name another FILE, or, to replace that backup, remove ${backup} and ${backup}.json first`,
    );
    expect(readBackupRecord(backup)).toEqual(record);
    expect(existsSync(`${backup}.json.partial`)).toBe(false);
  });

  it("refuses a record whose partial file is there already, another's being written or one cut short, and leaves it", () => {
    const backup = join(dir, "record-partial.db");
    writeFileSync(`${backup}.json.partial`, "another backup's record, half-written");
    const record = { service: "orders", database: "x.db", takenAt: "2026-12-05T10:00:00.000Z", positions: null };
    expect(() => writeBackupRecord(backup, record)).toThrow(
      `writing the backup's record ${backup}.json failed: ${backup}.json.partial exists: another backup's record to ${backup}.json is being written, or one was cut short (remove ${backup}.json.partial once none runs)`,
    );
    expect(readFileSync(`${backup}.json.partial`, "utf8")).toBe("another backup's record, half-written");
    expect(existsSync(`${backup}.json`)).toBe(false);
  });
});

describe("restoreSqlite", () => {
  const serviceDatabase = (path: string) => openDatabase({ path, owner: "orders", migrations: [...outboxMigrations, ...inboxMigrations] });

  it("refuses, changing nothing, while a process holds the service's database", async () => {
    const path = join(dir, "held.db");
    const backup = join(dir, "held-backup.db");
    const db = await serviceDatabase(path);
    try {
      backupSqlite(path, backup);
      expect(() => restoreSqlite("orders", path, backup)).toThrow(
        `the SQLite database ${path} is in use by another process (the orders service, running or starting on it, say): stop it first (under npm start, Ctrl-C stops everything); nothing was restored`,
      );
      expect(existsSync(`${path}.restoring`)).toBe(false);
    } finally {
      await db.close();
    }
  });

  it("names the claim file it could not open, and restores nothing", async () => {
    const path = join(dir, "unclaimable.db");
    const backup = join(dir, "unclaimable-backup.db");
    await (await serviceDatabase(path)).close();
    backupSqlite(path, backup);
    const before = readFileSync(path);
    // A claim file SQLite cannot open (as another user's, mode 0600, is to any other user but root).
    rmSync(`${path}-lock`);
    mkdirSync(`${path}-lock`);
    expect(() => restoreSqlite("orders", path, backup)).toThrow(
      `claiming the SQLite database ${path} (${path}-lock) failed: unable to open database file; nothing was restored (may this user write ${path}-lock? run the restore as the user the service runs as, or as root)`,
    );
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.startsWith("unclaimable.db")).sort()).toEqual(["unclaimable.db", "unclaimable.db-lock"]);
  });

  it("moves the database there aside with its log, and puts a copy of the backup in its place", async () => {
    const path = join(dir, "orders.db");
    const backup = join(dir, "orders-backup.db");
    const db = await serviceDatabase(path);
    await db.run("INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES ('c', 'before', 1)");
    backupSqlite(path, backup);
    await db.run("INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES ('c', 'after', 2)");
    await db.close();
    // A log left by a process that was killed, which must not be applied to the restored file.
    writeFileSync(`${path}-wal`, "left by a killed process");

    const { asideTo } = restoreSqlite("orders", path, backup, new Date("2026-12-05T10:00:00.000Z"));
    expect(asideTo).toBe(`${path}.before-restore-2026-12-05T10-00-00-000Z`);
    expect(readFileSync(`${asideTo}-wal`, "utf8")).toBe("left by a killed process");
    expect(existsSync(`${path}-wal`)).toBe(false);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const restored = await serviceDatabase(path);
    try {
      expect((await restored.query<{ event_id: string }>("SELECT event_id FROM event_inbox")).map((r) => r.event_id)).toEqual(["before"]);
    } finally {
      await restored.close();
    }
  });

  it("moves aside only what was there: reading whose the database is leaves no log or shared memory of its own to move", async () => {
    const path = join(dir, "closed.db");
    const backup = join(dir, "closed-backup.db");
    const db = await serviceDatabase(path);
    backupSqlite(path, backup);
    await db.close();
    // Closed cleanly, in WAL mode: the file alone, which a read-only connection gives a log and shared memory.
    expect(readdirSync(dir).filter((f) => f.startsWith("closed.db")).sort()).toEqual(["closed.db", "closed.db-lock"]);
    const { asideTo, moved } = restoreSqlite("orders", path, backup, new Date("2026-12-05T12:00:00.000Z"));
    expect(moved).toEqual([asideTo]);
    expect(readdirSync(dir).filter((f) => f.startsWith("closed.db")).sort()).toEqual(["closed.db", "closed.db-lock", "closed.db.before-restore-2026-12-05T12-00-00-000Z"]);
  });

  it("moves a rollback journal aside with the database, which SQLite would play back into the restored file", async () => {
    const path = join(dir, "journalled.db");
    const backup = join(dir, "journalled-backup.db");
    const db = await serviceDatabase(path);
    await db.run("INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES ('c', 'before', 1)");
    backupSqlite(path, backup);
    await db.close();
    // A hot journal, as a process killed in a transaction in rollback mode leaves it: pages to write back, unlocked.
    const journal = hotJournal(join(dir, "journalled-scratch.db"));
    writeFileSync(`${path}-journal`, journal);

    const { asideTo, moved } = restoreSqlite("orders", path, backup, new Date("2026-12-05T11:00:00.000Z"));
    expect(moved).toEqual([asideTo, `${asideTo}-journal`]);
    expect(readFileSync(`${asideTo}-journal`).equals(journal)).toBe(true);
    expect(existsSync(`${path}-journal`)).toBe(false);
    const restored = await serviceDatabase(path);
    try {
      expect(await restored.query("PRAGMA quick_check")).toEqual([{ quick_check: "ok" }]);
      expect((await restored.query<{ event_id: string }>("SELECT event_id FROM event_inbox")).map((r) => r.event_id)).toEqual(["before"]);
    } finally {
      await restored.close();
    }

    // The database gone (deleted as damaged, say) and its journal and log left: they go aside as well.
    const bare = join(dir, "journalled-bare.db");
    writeFileSync(`${bare}-journal`, journal);
    writeFileSync(`${bare}-wal`, "left by a killed process");
    const leftovers = restoreSqlite("orders", bare, backup, new Date("2026-12-05T11:00:00.000Z"));
    expect(leftovers.moved).toEqual([`${bare}.before-restore-2026-12-05T11-00-00-000Z-wal`, `${bare}.before-restore-2026-12-05T11-00-00-000Z-journal`]);
    expect(readFileSync(bare).equals(readFileSync(backup))).toBe(true);
    expect(readdirSync(dir).filter((f) => f.startsWith("journalled-bare.db")).sort()).toEqual([
      "journalled-bare.db",
      "journalled-bare.db-lock",
      "journalled-bare.db.before-restore-2026-12-05T11-00-00-000Z-journal",
      "journalled-bare.db.before-restore-2026-12-05T11-00-00-000Z-wal",
    ]);
  });

  it("gives the restored file the owner and permissions of the database it replaces, for a service running as another user", async () => {
    const path = join(dir, "owned-by-service.db");
    const backup = join(dir, "owned-by-service-backup.db");
    await (await serviceDatabase(path)).close();
    backupSqlite(path, backup);
    // As root, the file is given to another user (nobody), as a service's own user would have it.
    const asRoot = process.getuid?.() === 0;
    if (asRoot) chownSync(path, 65534, 65534);
    chmodSync(path, 0o640);
    restoreSqlite("orders", path, backup);
    const restored = statSync(path);
    expect(restored.mode & 0o777).toBe(0o640);
    if (asRoot) expect([restored.uid, restored.gid]).toEqual([65534, 65534]);
    expect(readFileSync(path).equals(readFileSync(backup))).toBe(true);
  });

  it("refuses the service's database itself as its backup, by any name, and leaves it in place", async () => {
    const path = join(dir, "itself.db");
    const db = await serviceDatabase(path);
    await db.run("INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES ('c', 'kept', 1)");
    await db.close();
    symlinkSync(path, join(dir, "itself-link.db"));
    for (const backup of [path, `${dir}/./itself.db`, join(dir, "itself-link.db")]) {
      expect(() => restoreSqlite("orders", path, backup)).toThrow(`${backup} is the service's database itself, not a backup of it: nothing to restore`);
    }
    expect(readdirSync(dir).filter((f) => f.startsWith("itself.db"))).toEqual(["itself.db", "itself.db-lock"]);
    const kept = await serviceDatabase(path);
    try {
      expect((await kept.query<{ event_id: string }>("SELECT event_id FROM event_inbox")).map((r) => r.event_id)).toEqual(["kept"]);
    } finally {
      await kept.close();
    }
  });

  it("restores through a symbolic link into the file it points to, refusing while a process holds either name", async () => {
    const real = join(dir, "real.db");
    const link = join(dir, "link.db");
    const backup = join(dir, "real-backup.db");
    const db = await serviceDatabase(real);
    symlinkSync(real, link);
    await db.run("INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES ('c', 'before', 1)");
    backupSqlite(real, backup);
    await db.run("INSERT INTO event_inbox (consumer, event_id, processed_at) VALUES ('c', 'after', 2)");
    try {
      expect(() => restoreSqlite("orders", link, backup)).toThrow(`the SQLite database ${real} is in use by another process`);
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
    } finally {
      await db.close();
    }
    const { asideTo } = restoreSqlite("orders", link, backup);
    expect(asideTo).toMatch(/real\.db\.before-restore-/);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    const restored = await serviceDatabase(link);
    try {
      expect((await restored.query<{ event_id: string }>("SELECT event_id FROM event_inbox")).map((r) => r.event_id)).toEqual(["before"]);
    } finally {
      await restored.close();
    }
  });

  it("restores into a database not made yet, named relative to the working directory, a file only its owner reads", async () => {
    const source = join(dir, "fresh-source.db");
    const backup = join(dir, "fresh-backup.db");
    await (await serviceDatabase(source)).close();
    backupSqlite(source, backup);
    // A backup others may read (copied about by hand, say) still gives a file only its owner reads, as README says.
    chmodSync(backup, 0o644);
    const fresh = relative(process.cwd(), join(dir, "fresh", "orders.db"));
    expect(restoreSqlite("orders", fresh, backup).asideTo).toBeUndefined();
    expect(readFileSync(fresh).equals(readFileSync(backup))).toBe(true);
    expect(statSync(fresh).mode & 0o777).toBe(0o600);
  });

  it("gives a database not made yet, and the claim file it makes, the owner of their folder when run as root", async () => {
    const source = join(dir, "unowned-source.db");
    await (await serviceDatabase(source)).close();
    const backup = join(dir, "unowned-source-backup.db");
    backupSqlite(source, backup);
    // The folder of a service that runs as another user (nobody), its database gone.
    const folder = join(dir, "service-folder");
    mkdirSync(folder);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) chownSync(folder, 65534, 65534);
    const path = join(folder, "orders.db");
    expect(restoreSqlite("orders", path, backup).asideTo).toBeUndefined();
    const owner = asRoot ? [65534, 65534] : [process.getuid?.(), process.getgid?.()];
    for (const file of [path, `${path}-lock`]) {
      const made = statSync(file);
      expect([made.uid, made.gid], file).toEqual(owner);
      expect(made.mode & 0o777, file).toBe(0o600);
    }
    expect(readdirSync(folder).sort()).toEqual(["orders.db", "orders.db-lock"]);
  });

  it("refuses a file that is no service's database", () => {
    const notOne = join(dir, "other.db");
    const other = new BetterSqlite3(notOne);
    other.exec("CREATE TABLE t (n INTEGER)");
    other.close();
    expect(() => restoreSqlite("orders", join(dir, "target.db"), notOne)).toThrow("has no schema_migrations table, so it is no service's database");
    expect(() => restoreSqlite("orders", join(dir, "target.db"), dir)).toThrow(`${dir} is a directory, not a backup: name a backup's file`);
    expect(() => restoreSqlite("orders", join(dir, "target.db"), "/dev/null")).toThrow("/dev/null is a character device, not a backup: name a backup's file");
    writeFileSync(join(dir, "text.db"), "not a database at all, just some text that is long enough to have a header");
    expect(() => restoreSqlite("orders", join(dir, "target.db"), join(dir, "text.db"))).toThrow(/cannot be (read|opened)|damaged/);
    // Refused before the database is claimed: no claim file, nor folder for it, is left where there was none.
    expect(() => restoreSqlite("orders", join(dir, "refused", "orders.db"), notOne)).toThrow("has no schema_migrations table");
    expect(readdirSync(dir).filter((f) => f.startsWith("target.db") || f === "refused")).toEqual([]);
  });

  it("refuses, saying so, a database whose migrations have not all run, as while the service first starts", () => {
    const unfinished = join(dir, "unfinished.db");
    const db = new BetterSqlite3(unfinished);
    db.pragma("journal_mode = WAL");
    // As migrate's first transaction leaves it, before the outbox's migration.
    db.exec("CREATE TABLE schema_migrations (id TEXT PRIMARY KEY, applied_at INTEGER NOT NULL); CREATE TABLE schema_owner (service TEXT PRIMARY KEY); INSERT INTO schema_owner VALUES ('orders')");
    db.close();
    const reason = "it is the orders service's database, but its migrations have not all run: it has no event_outbox table yet, as while the service first starts";
    expect(sourceProblem(unfinished, "orders")).toEqual({ reason, advice: "back it up once the orders service has started on it", given: false });
    expect(() => restoreSqlite("orders", join(dir, "unfinished-target.db"), unfinished)).toThrow(`${unfinished} cannot be restored: ${reason}`);
    writeFileSync(join(dir, "empty.db"), "");
    expect(sourceProblem(join(dir, "empty.db"), "orders")).toMatchObject({ reason: expect.stringContaining("it holds no tables yet"), advice: "back it up once the orders service has started on it", given: false });
    expect(sourceProblem(unfinished, "products")).toEqual({ reason: "it is the orders service's database, not the products service's", advice: "name the products service's with --database", given: true });
    mkdirSync(join(dir, "folder.db"));
    expect(sourceProblem(join(dir, "folder.db"), "orders")).toEqual({ reason: "it is a directory, not a SQLite file", advice: "name the orders service's with --database", given: true });
    // A FIFO was waited on for ever for a writer, and a device said to be an empty database, to back up once the service started.
    const fifo = join(dir, "fifo.db");
    execFileSync("mkfifo", [fifo]);
    for (const [path, kind] of [[fifo, "a FIFO"], ["/dev/zero", "a character device"], ["/dev/null", "a character device"]]) {
      expect(sourceProblem(path, "orders"), path).toEqual({ reason: `it is ${kind}, not a SQLite file`, advice: "name the orders service's with --database", given: true });
    }
  });

  it("says to run the backup as the service's user where it cannot open the database, and what a socket is", async () => {
    // A file SQLite cannot open, as another user's (mode 0600) is to any user but root.
    const unreadable = join(dir, "unreadable.db");
    await (await serviceDatabase(unreadable)).close();
    chmodSync(unreadable, 0o000);
    if (process.getuid?.() !== 0) {
      expect(sourceProblem(unreadable, "orders")).toEqual({
        reason: "it cannot be opened: unable to open database file",
        advice: "may this user read it? run the backup as the user the service runs as, or as root",
        given: false,
      });
    }
    // A socket, which root cannot open either, is said as what it is.
    const socket = join(dir, "unopenable.db");
    const server = createServer().listen(socket);
    await once(server, "listening");
    try {
      expect(sourceProblem(socket, "orders")).toEqual({ reason: "it is a socket, not a SQLite file", advice: "name the orders service's with --database", given: true });
    } finally {
      server.close();
    }
  });

  it("refuses another service's database, and one that names no service", async () => {
    const products = join(dir, "products.db");
    await (await openDatabase({ path: products, owner: "products", migrations: [...outboxMigrations, ...inboxMigrations] })).close();
    const path = join(dir, "owned.db");
    await (await serviceDatabase(path)).close();
    const before = readFileSync(path);
    expect(() => restoreSqlite("orders", path, products)).toThrow(`${products} cannot be restored: it is the products service's database, not the orders service's`);
    const unowned = join(dir, "unowned.db");
    const other = new BetterSqlite3(unowned);
    other.exec("CREATE TABLE schema_migrations (id TEXT); CREATE TABLE event_outbox (id TEXT); CREATE TABLE event_inbox (id TEXT)");
    other.close();
    expect(() => restoreSqlite("orders", path, unowned)).toThrow("has no schema_owner table, so it is no service's database");
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.startsWith("owned.db"))).toEqual(["owned.db", "owned.db-lock"]);
  });

  it("refuses to restore over another service's database, and over a damaged one does", async () => {
    const products = join(dir, "over-products.db");
    await (await openDatabase({ path: products, owner: "products", migrations: [...outboxMigrations, ...inboxMigrations] })).close();
    const backup = join(dir, "over-orders-backup.db");
    const orders = join(dir, "over-orders.db");
    await (await serviceDatabase(orders)).close();
    backupSqlite(orders, backup);
    const before = readFileSync(products);
    expect(() => restoreSqlite("orders", products, backup)).toThrow(`${products} is the products service's database, not the orders service's: nothing was restored over it`);
    expect(readFileSync(products).equals(before)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.startsWith("over-products.db") && /before-restore|restoring/.test(f))).toEqual([]);
    writeFileSync(orders, "a database damaged beyond reading, which is what a restore is for");
    expect(restoreSqlite("orders", orders, backup).asideTo).toMatch(/over-orders\.db\.before-restore-/);
  });
});

describe("the backup record", () => {
  it("keeps the positions beside the backup, and lists each service's consumers from the contracts", () => {
    const backup = join(dir, "record.db");
    expect(readBackupRecord(backup)).toBeUndefined();
    const record = { service: "orders", database: "x.db", takenAt: "2026-12-05T10:00:00.000Z", positions: [{ stream: "SHOP_PRODUCTS", durable: "orders-stock-reserved", ackFloor: 7 }] };
    writeBackupRecord(backup, record);
    expect(readBackupRecord(backup)).toEqual(record);
    expect(serviceConsumers("orders").map((c) => c.durable)).toContain("orders-stock-reserved");
    expect(() => serviceConsumers("nope")).toThrow(/no service "nope"/);
  });

  it("refuses a record that is not one, whose positions would print commands that are not the service's", () => {
    const backup = join(dir, "forged.db");
    const file = `${backup}.json`;
    const refused = (json: string) => {
      writeFileSync(file, json);
      return () => readBackupRecord(backup);
    };
    expect(refused("{bad")).toThrow(`${file} cannot be read as a backup's record:`);
    expect(refused("null")).toThrow(`${file} is no backup's record: it holds no JSON object`);
    expect(refused('{"service":"payments","positions":null}')).toThrow('its service is "payments", none of the contracts\'');
    expect(refused('{"service":"orders","positions":{"a":1}}')).toThrow("its positions are neither a list nor null");
    const position = (durable: string, ackFloor: unknown) => JSON.stringify({ service: "orders", positions: [{ stream: "SHOP_PRODUCTS", durable, ackFloor }] });
    expect(refused(position("orders-stock-reserved; curl http://x | sh #", 7))).toThrow("names no consumer of orders");
    expect(refused(position("products-order-placed", 7))).toThrow("names no consumer of orders");
    for (const ackFloor of ["7", -1, 1.5, null]) expect(refused(position("orders-stock-reserved", ackFloor))).toThrow("has no whole number for its ackFloor");
    // Two floors for one consumer printed two redeliver commands for it, from 2 and from 8, and the restore went on.
    const twice = JSON.stringify({ service: "orders", positions: [1, 7].map((ackFloor) => ({ stream: "SHOP_PRODUCTS", durable: "orders-stock-reserved", ackFloor })) });
    expect(refused(twice)).toThrow(`${file} is no backup's record: it holds more than one floor for consumer orders-stock-reserved`);
    // What is no file is refused, not read: a link to nothing was taken for no record, a FIFO was waited on for ever, a link to
    // /dev/zero read until memory ran out (the checks that could hang come last, so that the test fails before them without the change).
    rmSync(file);
    symlinkSync(join(dir, "nothing-here"), file);
    expect(() => readBackupRecord(backup)).toThrow(`${file} cannot be read as a backup's record: ENOENT`);
    rmSync(file);
    writeFileSync(file, " ".repeat(1024 * 1024 + 1));
    expect(() => readBackupRecord(backup)).toThrow(`${file} cannot be read as a backup's record: it holds 1048577 bytes, more than such a file does (at most 1048576)`);
    rmSync(file);
    symlinkSync("/dev/zero", file);
    expect(() => readBackupRecord(backup)).toThrow(`${file} cannot be read as a backup's record: it is a character device, not a regular file`);
    rmSync(file);
    execFileSync("mkfifo", [file]);
    expect(() => readBackupRecord(backup)).toThrow(`${file} cannot be read as a backup's record: it is a FIFO, not a regular file`);
    rmSync(file);
    expect(refused(position("orders-stock-reserved", 7))()).toMatchObject({ positions: [{ durable: "orders-stock-reserved", ackFloor: 7 }] });
    expect(refused('{"service":"orders","positions":null}')()).toMatchObject({ positions: null });
  });
});
