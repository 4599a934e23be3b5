import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { createLogger } from "../log/index.js";
import { openDatabase, type Database } from "./database.js";
import { startRetention, type Retention } from "./retention.js";

const logger = createLogger({ service: "retention-test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
const dir = tempDirForSuite("concord-retention-");
const hour = 3_600_000;
const table = {
  id: "test_0001_keys",
  sql: "CREATE TABLE request_keys (key TEXT PRIMARY KEY, written_at INTEGER NOT NULL); CREATE INDEX request_keys_written_at ON request_keys (written_at);",
};

describe("startRetention", () => {
  const cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  const setup = (key: string, options: { retentionMs: number; batchSize?: number }) => {
    const db: Database = openDatabase({ path: join(dir, `${key}.db`), migrations: [table] });
    cleanups.push(() => db.close());
    const insert = db.sqlite.prepare("INSERT INTO request_keys (key, written_at) VALUES (?, ?)");
    const write = (prefix: string, count: number, ageMs: number) =>
      db.transaction(() => {
        for (let i = 0; i < count; i++) insert.run(`${prefix}-${i}`, Date.now() - ageMs - i);
      });
    const left = (prefix: string) => db.sqlite.prepare("SELECT count(*) FROM request_keys WHERE key LIKE ?").pluck().get(`${prefix}-%`) as number;
    const retention: Retention = startRetention({ db, name: "request keys", table: "request_keys", timeColumn: "written_at", logger, ...options });
    cleanups.push(() => retention.stop());
    return { db, write, left, retention };
  };

  it("deletes rows older than the retention and keeps the recent ones", async () => {
    const t = setup("basic", { retentionMs: 24 * hour });
    t.write("old", 30, 25 * hour);
    t.write("recent", 20, 23 * hour);
    t.write("new", 5, 0);
    expect(await t.retention.prune()).toBe(30);
    expect(t.left("old")).toBe(0);
    expect(t.left("recent")).toBe(20);
    expect(t.left("new")).toBe(5);
    expect(await t.retention.prune()).toBe(0);
  });

  it("deletes in bounded batches, one short transaction each, letting other work run in between", async () => {
    const t = setup("batches", { retentionMs: hour, batchSize: 100 });
    t.write("old", 1_050, 2 * hour);
    t.write("recent", 10, 0);
    const pruning = t.retention.prune();
    // Other work gets the database between two batches: after one turn of the event loop most old rows are still there.
    await new Promise((resolve) => setImmediate(resolve));
    const midway = t.left("old");
    expect(midway).toBeGreaterThan(0);
    expect(midway).toBeLessThan(1_050);
    t.write("written-meanwhile", 1, 0);
    expect(await pruning).toBe(1_050);
    expect(t.left("old")).toBe(0);
    expect(t.left("recent") + t.left("written-meanwhile")).toBe(11);
  });

  it("refuses names that are not plain identifiers and a retention that is not positive", () => {
    const db = openDatabase({ path: join(dir, "refuse.db"), migrations: [table] });
    cleanups.push(() => db.close());
    expect(() => startRetention({ db, name: "x", table: "request_keys; DROP TABLE x", timeColumn: "written_at", retentionMs: hour, logger })).toThrow(/not a plain table and column name/);
    expect(() => startRetention({ db, name: "x", table: "request_keys", timeColumn: "written_at", retentionMs: 0, logger })).toThrow(/invalid retentionMs/);
  });
});
