import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { createLogger } from "../log/index.js";
import { openDatabase } from "../sql/index.js";
import { createInbox, defaultInboxRetentionMs, eventMigrations, inboxRetention } from "./index.js";

const logger = createLogger({ service: "inbox-test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
const dir = tempDirForSuite("concord-inbox-");
const day = 24 * 3_600_000;

describe("inboxRetention", () => {
  it("forgets processed events older than the retention (7 days by default) and keeps ignoring recent ones that come again", async () => {
    const db = openDatabase({ path: join(dir, "inbox.db"), migrations: eventMigrations });
    const inbox = createInbox({ db });
    let runs = 0;
    const work = () => void runs++;
    for (const id of ["old-1", "old-2", "recent-1"]) inbox.runOnce("orders-stock-reserved", id, work);
    inbox.runOnce("orders-product-created", "recent-2", work);
    db.sqlite.prepare("UPDATE event_inbox SET processed_at = processed_at - ? WHERE event_id LIKE 'old-%'").run(8 * day);
    db.sqlite.prepare("UPDATE event_inbox SET processed_at = processed_at - ? WHERE event_id = 'recent-2'").run(6 * day);
    const retention = inboxRetention({ db, logger });
    try {
      expect(defaultInboxRetentionMs).toBe(7 * day);
      expect(await retention.prune()).toBe(2);
      const ids = db.sqlite.prepare("SELECT event_id FROM event_inbox ORDER BY event_id").pluck().all();
      expect(ids).toEqual(["recent-1", "recent-2"]);
      // A recent event that comes again still has no second effect.
      expect(inbox.runOnce("orders-stock-reserved", "recent-1", work)).toBe(false);
      expect(inbox.runOnce("orders-product-created", "recent-2", work)).toBe(false);
      expect(runs).toBe(4);
    } finally {
      await retention.stop();
      db.close();
    }
  });

  it("keeps rows as long as a shorter retention says, and no longer", async () => {
    const db = openDatabase({ path: join(dir, "short.db"), migrations: eventMigrations });
    const inbox = createInbox({ db });
    inbox.runOnce("c", "two-hours-old", () => {});
    inbox.runOnce("c", "fresh", () => {});
    db.sqlite.prepare("UPDATE event_inbox SET processed_at = processed_at - ? WHERE event_id = 'two-hours-old'").run(2 * 3_600_000);
    const retention = inboxRetention({ db, logger, retentionMs: 3_600_000 });
    try {
      expect(await retention.prune()).toBe(1);
      expect(db.sqlite.prepare("SELECT event_id FROM event_inbox").pluck().all()).toEqual(["fresh"]);
    } finally {
      await retention.stop();
      db.close();
    }
  });
});
