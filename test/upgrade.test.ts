import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { eventMigrations } from "../platform/events/index.js";
import { requestIdMigrations } from "../platform/idempotency/index.js";
import { openDatabase } from "../platform/sql/index.js";
import { orderMigrations } from "../services/orders/store/migrations.js";
import { freePort } from "./support/nats-server.js";
import { readmeProse } from "./support/readme.js";
import { startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { tempDirForSuite } from "./support/temp-dir.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The order service's migrations up to orders_0002: its database as versions before the saga's timeout left it. */
const beforeTimeout = [...orderMigrations.filter((m) => m.id < "orders_0003"), ...eventMigrations, ...requestIdMigrations];

/** Resolves once `service` has logged a line `matches` takes, or rejects after 20 s with its lines. */
async function logged(service: ServiceProcess, matches: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  const deadline = performance.now() + 20_000;
  for (;;) {
    const line = service.logs().find(matches);
    if (line) return line;
    if (performance.now() > deadline) throw new Error(`not logged; it wrote:\n${service.lines().join("\n")}`);
    await sleep(50);
  }
}

describe("a service started on the database of another version", () => {
  const dir = tempDirForSuite("concord-upgrade-");

  it("applies the migrations an earlier version's database lacks, names them in one log line, and keeps its orders", async () => {
    const database = join(dir, "orders-before-timeout.db");
    const old = await openDatabase({ path: database, migrations: beforeTimeout, owner: "orders" });
    const insert = `INSERT INTO orders (id, customer_id, state, lines_json, currency, total_minor, shipping_json, rejection_reason, lines_version, version, created_at, updated_at)
      VALUES ($1, 'c-1', $2, '[]', 'EUR', 100, '{}', '', 1, $3, 1000, $4)`;
    await old.run(insert, ["01a24ac4-0000-7000-8000-00000000000a", "PENDING", 2, 5_000]);
    await old.run(insert, ["01a24ac4-0000-7000-8000-00000000000b", "CONFIRMED", 3, 6_000]);
    await old.close();
    // No NATS server there: the service migrates, then waits for NATS, which is all this needs of it.
    const service = startServiceProcess("orders", { ORDERS_LISTEN: "127.0.0.1:0", ORDERS_DATABASE_URL: database, NATS_URL: `nats://127.0.0.1:${await freePort()}` });
    try {
      const line = await logged(service, (l) => typeof l.msg === "string" && l.msg.startsWith("migrated the database"));
      expect(line).toMatchObject({
        level: "info",
        database,
        migrations: ["orders_0003_pending_since", "orders_0004_cancellation_reason"],
        msg: "migrated the database: applied orders_0003_pending_since, orders_0004_cancellation_reason",
      });
    } finally {
      await service.stop();
    }
    const db = await openDatabase({ path: database, migrations: [] });
    // The PENDING order counts from its last change towards the saga's timeout; the others have no cause on record.
    expect(await db.query("SELECT id, state, pending_since, cancellation_reason FROM orders ORDER BY id")).toEqual([
      { id: "01a24ac4-0000-7000-8000-00000000000a", state: "PENDING", pending_since: 5_000, cancellation_reason: "" },
      { id: "01a24ac4-0000-7000-8000-00000000000b", state: "CONFIRMED", pending_since: 0, cancellation_reason: "" },
    ]);
    await db.close();
  });

  it("counts a new database's migrations, in one log line", async () => {
    const database = join(dir, "orders-new.db");
    const service = startServiceProcess("orders", { ORDERS_LISTEN: "127.0.0.1:0", ORDERS_DATABASE_URL: database, NATS_URL: `nats://127.0.0.1:${await freePort()}` });
    try {
      const all = orderMigrations.length + eventMigrations.length + requestIdMigrations.length;
      expect(await logged(service, (l) => typeof l.msg === "string" && l.msg.startsWith("made the database"))).toMatchObject({
        migrations: all,
        msg: `made the database: applied its ${all} migrations`,
      });
    } finally {
      await service.stop();
    }
  });

  it("refuses a database a newer version migrated, in one line naming what it lacks, and leaves the file as it was", async () => {
    const database = join(dir, "orders-newer.db");
    const newer = await openDatabase({
      path: database,
      migrations: [...orderMigrations, ...eventMigrations, ...requestIdMigrations, { id: "orders_9999_from_a_later_version", sql: "ALTER TABLE orders ADD COLUMN later TEXT" }],
      owner: "orders",
    });
    await newer.close();
    const before = readFileSync(database);
    const service = startServiceProcess("orders", { ORDERS_LISTEN: "127.0.0.1:0", ORDERS_DATABASE_URL: database, NATS_URL: `nats://127.0.0.1:${await freePort()}` });
    // One that starts instead waits for NATS: it is ended, not left behind.
    const ended = await Promise.race([service.exited, sleep(20_000).then(() => "still running")]).finally(() => service.kill());
    expect(ended, service.lines().join("\n")).toBe(2);
    // Without the check it started, and would have written orders without the later column's values.
    expect(service.logs()).toEqual([
      expect.objectContaining({
        level: "fatal",
        code: "FAILED_PRECONDITION",
        msg:
          "start-up refused: the orders service's database was migrated by a newer version of the code: it records migration " +
          "orders_9999_from_a_later_version, which this version does not have and whose changes it would misread. Start the newer " +
          'version again, or restore the backup taken before the upgrade (README "Upgrades"); nothing was changed',
      }),
    ]);
    expect(readFileSync(database).equals(before)).toBe(true);
    expect(readmeProse()).toContain("refuses to start on a database a newer version migrated");
  });

  it("starts on a database whose newer migration is marked as one older code works with, saying so in a warning", async () => {
    const database = join(dir, "orders-expanded.db");
    const later = { id: "orders_9999_from_a_later_version", sql: "CREATE TABLE later_things (id TEXT PRIMARY KEY)", olderCodeWorks: true };
    const newer = await openDatabase({ path: database, migrations: [...orderMigrations, ...eventMigrations, ...requestIdMigrations, later], owner: "orders" });
    await newer.close();
    const service = startServiceProcess("orders", { ORDERS_LISTEN: "127.0.0.1:0", ORDERS_DATABASE_URL: database, NATS_URL: `nats://127.0.0.1:${await freePort()}` });
    try {
      // It goes on to wait for NATS (none listens there), the database opened.
      const warning = await logged(service, (line) => line.level === "warn" && Array.isArray(line.migrations));
      expect(warning).toMatchObject({
        migrations: ["orders_9999_from_a_later_version"],
        msg:
          "the database records migration orders_9999_from_a_later_version of a newer version of the code, which this version does not have; " +
          "it is marked as one older code works with (olderCodeWorks), so this version runs on it",
      });
      await logged(service, (line) => String(line.msg).startsWith("NATS cannot be reached"));
    } finally {
      await service.stop();
    }
    expect(service.logs().filter((line) => line.level === "fatal")).toEqual([]);
  });
});
