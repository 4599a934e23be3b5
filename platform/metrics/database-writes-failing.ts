import { Gauge, type Registry } from "prom-client";
import type { Database } from "../sql/index.js";

/** The reasons `concord_database_writes_failing` is labelled with, each a series of its own. */
const reasons = ["full", "failing"] as const;

/**
 * `concord_database_writes_failing{reason}`: 1 for `full` from a write that
 * failed for want of space (SQLITE_FULL, PostgreSQL's disk_full), or for
 * `failing` from one whose storage failed (an I/O error), until a write
 * commits again; 0 otherwise. Calls', consumers' and the outbox relay's
 * writes alike, on either database: its health stays `SERVING` meanwhile,
 * its reads working. Read from the database's own note
 * (`Database.storageRefusal`) at each scrape, no statement run.
 */
export function databaseWritesFailingMetrics(registry: Registry, db: Pick<Database, "storageRefusal">): void {
  new Gauge({
    name: "concord_database_writes_failing",
    help: "1 while the service's database refuses writes, from a write that failed for its storage (reason full: no space; failing: an I/O error) until one commits",
    labelNames: ["reason"],
    registers: [registry],
    collect() {
      const refusal = db.storageRefusal();
      for (const reason of reasons) this.set({ reason }, refusal === reason ? 1 : 0);
    },
  });
}
