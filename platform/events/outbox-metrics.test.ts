import { join } from "node:path";
import pg from "pg";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { usePostgresServer } from "../../test/support/postgres.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { openDatabase } from "../sql/index.js";
import { outboxMigrations } from "./outbox.js";
import { outboxMetrics } from "./outbox-metrics.js";

const dir = tempDirForSuite("concord-outbox-metrics-");

describe("outboxMetrics", () => {
  it("reports the outbox's depth, the age of its oldest event and the parked events, as they are at each scrape", async () => {
    const db = await openDatabase({ path: join(dir, "outbox.db"), migrations: outboxMigrations });
    try {
      const registry = new Registry();
      outboxMetrics(registry, db);
      const value = async (name: string) => (await registry.getSingleMetric(name)!.get()).values[0]?.value;
      expect(await value("concord_outbox_depth")).toBe(0);
      expect(await value("concord_outbox_oldest_age_seconds")).toBe(0);
      const add = (id: string, createdAt: number) =>
        db.run("INSERT INTO event_outbox (event_id, subject, type, payload, headers, created_at) VALUES ($1, 'a.b', 't.T', x'00', x'00', $2)", [id, createdAt]);
      await add("0190a5b4-7c4e-7d3e-9f1a-000000000001", Date.now() - 90_000);
      await add("0190a5b4-7c4e-7d3e-9f1a-000000000002", Date.now());
      await db.run("INSERT INTO event_outbox_parked (event_id, subject, type, payload, headers, created_at, parked_at, reason) VALUES ('p', 'a.b', 't.T', x'00', x'00', 1, 2, 'too large')");
      expect(await value("concord_outbox_depth")).toBe(2);
      expect(await value("concord_outbox_oldest_age_seconds")).toBeGreaterThanOrEqual(90);
      expect(await value("concord_outbox_parked")).toBe(1);
      expect(await registry.metrics()).toMatch(/^concord_outbox_depth 2$/m);
    } finally {
      await db.close();
    }
  });

  it("leaves the gauges out of a scrape when the database does not answer, rather than showing an empty outbox", async () => {
    const db = await openDatabase({ path: join(dir, "gone.db"), migrations: outboxMigrations });
    const registry = new Registry();
    outboxMetrics(registry, db);
    await db.run("INSERT INTO event_outbox (event_id, subject, type, payload, headers, created_at) VALUES ('e', 'a.b', 't.T', x'00', x'00', 1)");
    expect(await registry.metrics()).toMatch(/^concord_outbox_depth 1$/m);
    await db.close(); // every query now fails, as while PostgreSQL is stopped
    const text = await registry.metrics();
    expect(text).not.toMatch(/^concord_outbox_depth /m);
    expect(text).not.toMatch(/^concord_outbox_oldest_age_seconds /m);
    expect(text).not.toMatch(/^concord_outbox_parked /m);
  });
});

describe("outboxMetrics on PostgreSQL", () => {
  const postgres = usePostgresServer();

  it("leaves the gauges out of a scrape whose queries wait more than 2 s (a table locked, a server that hangs)", { timeout: 30_000 }, async () => {
    const url = await postgres().createDatabase("outbox_metrics");
    const db = await openDatabase({ path: url, migrations: outboxMigrations });
    const locker = new pg.Client({ connectionString: url });
    await locker.connect();
    try {
      const registry = new Registry();
      outboxMetrics(registry, db);
      expect(await registry.metrics()).toMatch(/^concord_outbox_depth 0$/m);
      await locker.query("BEGIN");
      await locker.query("LOCK TABLE event_outbox IN ACCESS EXCLUSIVE MODE");
      // Without the bound the scrape waited for the lock (or the 30 s statement timeout), and Prometheus's scrape timed out whole.
      const text = await registry.metrics();
      expect(text).not.toMatch(/^concord_outbox_depth /m);
      expect(text).not.toMatch(/^concord_outbox_parked /m);
      await locker.query("ROLLBACK");
      expect(await registry.metrics()).toMatch(/^concord_outbox_depth 0$/m);
    } finally {
      await locker.end();
      await db.close();
    }
  });
});
