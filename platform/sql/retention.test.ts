import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { createLogger } from "../log/index.js";
import { openDatabase } from "./database.js";
import type { Database } from "./types.js";
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

  const setup = async (key: string, options: { retentionMs: number; batchSize?: number }) => {
    const db: Database = await openDatabase({ path: join(dir, `${key}.db`), migrations: [table] });
    cleanups.push(() => db.close());
    const write = (prefix: string, count: number, ageMs: number) =>
      db.transaction(async (tx) => {
        for (let i = 0; i < count; i++) await tx.run("INSERT INTO request_keys (key, written_at) VALUES ($1, $2)", [`${prefix}-${i}`, Date.now() - ageMs - i]);
      });
    const left = async (prefix: string) => (await db.query<{ n: number }>("SELECT count(*) AS n FROM request_keys WHERE key LIKE $1", [`${prefix}-%`]))[0].n;
    const retention: Retention = startRetention({ db, name: "request keys", table: "request_keys", timeColumn: "written_at", logger, ...options });
    cleanups.push(() => retention.stop());
    return { db, write, left, retention };
  };

  it("deletes rows older than the retention and keeps the recent ones", async () => {
    const t = await setup("basic", { retentionMs: 24 * hour });
    await t.write("old", 30, 25 * hour);
    await t.write("recent", 20, 23 * hour);
    await t.write("new", 5, 0);
    expect(await t.retention.prune()).toBe(30);
    expect(await t.left("old")).toBe(0);
    expect(await t.left("recent")).toBe(20);
    expect(await t.left("new")).toBe(5);
    expect(await t.retention.prune()).toBe(0);
  });

  it("deletes in bounded batches, one short transaction each, letting other work run in between", async () => {
    const t = await setup("batches", { retentionMs: hour, batchSize: 100 });
    await t.write("old", 1_050, 2 * hour);
    await t.write("recent", 10, 0);
    const pruning = t.retention.prune();
    // Other work gets the database between two batches: a write queued meanwhile lands before the last batch.
    let writtenAt = 0;
    const meanwhile = t.write("written-meanwhile", 1, 0).then(() => (writtenAt = Date.now()));
    const midway = await t.left("old");
    expect(midway).toBeGreaterThan(0);
    await meanwhile;
    expect(writtenAt).toBeGreaterThan(0);
    expect(await pruning).toBe(1_050);
    expect(await t.left("old")).toBe(0);
    expect((await t.left("recent")) + (await t.left("written-meanwhile"))).toBe(11);
  });

  it("refuses names that are not plain identifiers and a retention that is not positive", async () => {
    const db = await openDatabase({ path: join(dir, "refuse.db"), migrations: [table] });
    cleanups.push(() => db.close());
    expect(() => startRetention({ db, name: "x", table: "request_keys; DROP TABLE x", timeColumn: "written_at", retentionMs: hour, logger })).toThrow(/not a plain table and column name/);
    expect(() => startRetention({ db, name: "x", table: "request_keys", timeColumn: "written_at", retentionMs: 0, logger })).toThrow(/invalid retentionMs/);
  });
});
