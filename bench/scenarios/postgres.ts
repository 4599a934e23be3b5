/**
 * Scenario 7: Concord on Postgres, the production store. A local PostgreSQL
 * server of its own (Debian's package, its durable default settings: fsync
 * on), a fresh database for every run:
 * - outbox publishing against the same raw js.publish baseline as scenario 2,
 *   with several transactions committing at once, as a service's calls do;
 * - consuming with the inbox against the same raw pull consumer as scenario 3;
 * - the saga with one and with two instances of each service sharing their
 *   databases and durable consumers: highest sustainable rate, and latency
 *   at 200 orders/s offered. Two instances are held to a p99 under 25 ms
 *   at that rate, and to 1.6 times one instance's rate.
 * The CPU figures are the services'; the saga's notes give the server's too
 * (the postmaster and its backends), per order.
 */
import { chmodSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { findPostgresBinDir } from "../../tools/postgres/find-postgres.mjs";
import { type LocalPostgres, startLocalPostgres } from "../../tools/postgres/local-postgres.js";
import { row, type BenchContext, type Row, type Scenario, type ScenarioResult } from "../lib/report.js";
import { measureConsume } from "./event-consume.js";
import { measurePublish } from "./event-publish.js";
import { measureSaga, SAGA_WINDOW } from "./saga.js";

/** Orders/s offered to the saga on Postgres: the SQLite saga's rate, at which two instances of each service are held to POSTGRES_P99_TARGET_MS. */
export const POSTGRES_SAGA_RATE = 200;
/** Two instances' p99 at POSTGRES_SAGA_RATE, ms. */
export const POSTGRES_P99_TARGET_MS = 25;
/** Two instances of each service against one: the closed loop's confirmed orders/s, at least this many times. */
export const POSTGRES_SCALE_TARGET = 1.6;
/** Transactions committing at once on the publishing side. */
const PRODUCERS = 16;

/** The pid of the server running in `dataDir` (the first line of its postmaster.pid). */
function postmasterPid(dataDir: string): number {
  const pid = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`${join(dataDir, "postmaster.pid")} names no process`);
  return pid;
}

export const postgres: Scenario = {
  name: "postgres",
  summary: "on a local PostgreSQL server: outbox publishing and inbox consuming vs the raw baselines, the saga with 1 and 2 instances of each service",
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    if (!findPostgresBinDir()) throw new Error("the PostgreSQL server is not installed (node tools/setup.mjs --postgres installs it)");
    // Under the run's temp dir, which an interrupted run removes whether or not this scenario got to stop the server.
    // The server runs as the postgres user, which needs to reach it there.
    chmodSync(ctx.tmp, 0o755);
    const dataDir = join(ctx.tmp, "postgres");
    const server: LocalPostgres = await startLocalPostgres({ dataDir });
    ctx.log(`  PostgreSQL on 127.0.0.1:${server.port} (fsync on)`);
    let n = 0;
    const fresh = (what: string) => () => server.createDatabase(`${what}_${++n}`);
    const rows: Row[] = [];
    const details: Record<string, unknown> = { saga: {} };
    try {
      const scenario = "7 Postgres";
      const publish = await measurePublish(ctx, { scenario, label: "Postgres", outboxDatabase: fresh("outbox"), producers: PRODUCERS, judged: false });
      rows.push(...publish.rows);
      details.publish = publish.details;
      const consume = await measureConsume(ctx, { scenario, label: "Postgres", inboxDatabase: fresh("inbox"), judged: false });
      rows.push(...consume.rows);
      details.consume = consume.details;
      const capacity = new Map<number, number>();
      for (const instances of [1, 2]) {
        const label = `Postgres, ${instances} instance${instances > 1 ? "s" : ""} of each service`;
        const databases = { products: await fresh("products")(), orders: await fresh("orders")() };
        // The p99 target is held by two instances of each service, as the scale-out set-up runs.
        const saga = await measureSaga(ctx, {
          scenario,
          prefix: `pg${instances}`,
          label,
          shop: { instances, databases },
          rate: POSTGRES_SAGA_RATE,
          judged: false,
          latencyJudged: instances === 2,
          p99TargetMs: POSTGRES_P99_TARGET_MS,
          databasePid: postmasterPid(dataDir),
        });
        rows.push(...saga.rows);
        (details.saga as Record<string, unknown>)[`${instances}`] = saga.details;
        const closedLoop = (saga.details as { max?: { perSecond: number } }).max;
        if (closedLoop) capacity.set(instances, closedLoop.perSecond);
      }
      const one = capacity.get(1);
      const two = capacity.get(2);
      if (one !== undefined && two !== undefined) {
        rows.push(
          row({
            scenario,
            case: "CreateOrder -> CONFIRMED, highest sustainable rate, Postgres: 2 instances of each service against 1",
            view: "closed loop",
            inFlight: SAGA_WINDOW,
            unit: "orders/s",
            concord: two,
            baseline: one,
            ratio: two / one,
            target: `ratio >= ${POSTGRES_SCALE_TARGET}`,
            pass: two / one >= POSTGRES_SCALE_TARGET,
          }),
        );
      }
    } finally {
      await server.stop();
      // A data dir given is kept by stop; a failed run keeps the temp dir for its logs, not for a cluster of tens of MB.
      rmSync(dataDir, { recursive: true, force: true });
    }
    return { rows, details };
  },
};
