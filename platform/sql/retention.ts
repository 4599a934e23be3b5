import type { Logger } from "../log/index.js";
import type { Database } from "./types.js";
import { checkOptions, positiveInteger } from "../options/index.js";
import { startPeriodic } from "../tasks/index.js";

export interface RetentionOptions {
  readonly db: Database;
  /** What the rows are, for the log: "inbox". */
  readonly name: string;
  readonly table: string;
  /** The column that says when a row was written, in ms since the epoch; it needs an index of its own. */
  readonly timeColumn: string;
  /** Rows older than this go. */
  readonly retentionMs: number;
  /** Most rows deleted in one transaction (rows written in the same ms as the last one go with it). Default 1000. */
  readonly batchSize?: number;
  /** How often old rows are looked for; the first time a minute after start at most. Default 1 h, or a tenth of retentionMs if less. */
  readonly intervalMs?: number;
  readonly logger: Logger;
}

/** Deletes a table's old rows now and then. */
export interface Retention {
  /** Deletes every row older than the retention, one short transaction per batch, letting other work run in between; resolves with how many went. */
  prune(): Promise<number>;
  /** Stops the timer and any prune under way after its current batch. Safe to call twice. */
  stop(): Promise<void>;
}

const identifier = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Keeps a table from growing for ever: every `intervalMs`, the rows whose
 * time column is older than `retentionMs` are deleted, oldest first, in
 * batches of `batchSize`, each its own transaction, so no write waits
 * long behind it. The table names the rows' time; anything that must be
 * kept longer says so through a longer retention.
 */
export function startRetention(options: RetentionOptions): Retention {
  checkOptions("startRetention", options, ["db", "name", "table", "timeColumn", "retentionMs", "batchSize", "intervalMs", "logger"]);
  const { db, name, table, timeColumn, retentionMs } = options;
  const batchSize = options.batchSize ?? 1_000;
  const intervalMs = options.intervalMs ?? Math.min(3_600_000, Math.floor(retentionMs / 10));
  if (!identifier.test(table) || !identifier.test(timeColumn)) throw new Error(`startRetention: ${JSON.stringify(table)}.${JSON.stringify(timeColumn)} is not a plain table and column name`);
  for (const [option, v] of Object.entries({ retentionMs, batchSize, intervalMs })) positiveInteger("startRetention", option, v, v);
  const logger = options.logger.child({ component: "retention", rows: name });
  // Up to the batch's last (oldest-first) time, so each statement walks the time index only as far as one batch.
  const deleteBatch =
    `DELETE FROM ${table} WHERE ${timeColumn} < $1 AND ${timeColumn} <= coalesce(` +
    `(SELECT ${timeColumn} FROM ${table} WHERE ${timeColumn} < $1 ORDER BY ${timeColumn} LIMIT 1 OFFSET $2), $1)`;

  const pruneAll = async (stopping: () => boolean): Promise<number> => {
    const cutoff = Date.now() - retentionMs;
    let total = 0;
    while (!stopping()) {
      const changes = await db.transaction((tx) => tx.run(deleteBatch, [cutoff, batchSize - 1]));
      total += changes;
      // Fewer than a batch: nothing older is left.
      if (changes < batchSize) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (total > 0) logger.info({ deleted: total, olderThanMs: retentionMs }, `deleted old ${name} rows`);
    return total;
  };
  const task = startPeriodic({ what: `deleting old ${name} rows`, intervalMs, firstAfterMs: Math.min(intervalMs, 60_000), run: pruneAll, logger });
  return { prune: task.runNow, stop: task.stop };
}
