/**
 * The consumer's group commit on Postgres, where another instance's
 * transaction may hold the rows an event needs: the events before it
 * commit rather than wait with their locks held, and the event runs again
 * in the next transaction once the rows are free.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startNatsServer, type NatsServerHandle } from "../../test/support/nats-server.js";
import { startPostgresServer, type PostgresServerHandle } from "../../test/support/postgres.js";
import { sampleStream } from "../../test/support/sample-events.js";
import { eventually } from "../../test/support/streams.js";
import { createLogger } from "../log/index.js";
import { openDatabase } from "../sql/index.js";
import { bindConsumer, connectEventBus, createEventPublisher, ensureStreams, eventMigrations, startConsumers, type EventBus } from "./index.js";

const logger = createLogger({ service: "consumer-postgres-test", level: process.env.TEST_LOG_LEVEL ?? "silent" });
const countersTable = { id: "test_0001_counters", sql: "CREATE TABLE counters (id TEXT PRIMARY KEY, n INTEGER NOT NULL)" };

describe("a consumer's batch on Postgres", () => {
  let postgres: PostgresServerHandle;
  let nats: NatsServerHandle;
  let bus: EventBus;

  beforeAll(async () => {
    [postgres, nats] = await Promise.all([startPostgresServer(), startNatsServer()]);
    bus = await connectEventBus({ url: nats.url, name: "consumer-postgres-test", logger });
  }, 60_000);
  afterAll(async () => {
    await bus?.close();
    await nats?.stop();
    await postgres?.stop();
  });

  it("commits the events before one that would wait for a locked row, and handles that one once the row is free", async () => {
    const url = await postgres.createDatabase("batch_locks");
    const db = await openDatabase({ path: url, migrations: [...eventMigrations, countersTable] });
    await db.run("INSERT INTO counters (id, n) VALUES ('a', 0), ('b', 0)");
    const sample = sampleStream("batchlocks");
    await ensureStreams(bus.jsm, [sample.stream]);
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    // Published before the consumer starts, so that they arrive together in one batch.
    for (const note of ["a", "b", "a"]) await publisher.publish(sample.event, { thingId: `t-${note}`, note });

    // Another transaction (another instance's batch, say) holds row b.
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    await other.query("BEGIN");
    await other.query("SELECT n FROM counters WHERE id = 'b' FOR UPDATE");

    let calls = 0;
    const consumers = await startConsumers({
      nc: bus.nc,
      db,
      service: "worker",
      logger,
      consumers: [
        bindConsumer({
          spec: sample.consumerSpec("batchlocks-worker"),
          descriptor: sample.event,
          async handle(event, context) {
            calls++;
            await context.tx.run("UPDATE counters SET n = n + 1 WHERE id = $1", [event.note]);
          },
        }),
      ],
    });
    const counter = async (id: string) => (await db.query<{ n: number }>("SELECT n FROM counters WHERE id = $1", [id]))[0].n;
    try {
      // The first event is committed while row b is still held: it did not wait with the batch.
      await eventually("the event before the locked row is committed", async () => (await counter("a")) === 1, 5_000);
      expect(await counter("b")).toBe(0);
      await other.query("COMMIT");
      await eventually("every event is handled once the row is free", async () => (await counter("b")) === 1 && (await counter("a")) === 2, 10_000);
      const info = await bus.jsm.consumers.info(sample.stream.name, "batchlocks-worker");
      expect(info.num_redelivered, "nothing was redelivered: the waiting event ran again in the next transaction").toBe(0);
      expect(calls).toBeGreaterThanOrEqual(3);
    } finally {
      await other.end();
      await consumers.stop();
      await db.close();
    }
  });
});
