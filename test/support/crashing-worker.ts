/*
 * A consumer in a process of its own whose handler kills that process
 * (SIGKILL, as a crash would) on an event with the note "poison", and
 * records every other event in an `effects` table. For tests of what
 * becomes of an event that takes its process down each time it runs.
 *
 *   node --import tsx test/support/crashing-worker.ts <nats url> <sqlite file> <stream key> <maxDeliver> <ackWaitMs>
 *
 * Prints "consuming" once its consumer runs; SIGTERM stops it cleanly.
 */
import { bindConsumer, connectEventBus, eventMigrations, startConsumers } from "../../platform/events/index.js";
import { createLogger } from "../../platform/log/index.js";
import { openDatabase } from "../../platform/sql/index.js";
import { sampleStream } from "./sample-events.js";

const [url, path, key, maxDeliver, ackWaitMs] = process.argv.slice(2);
const logger = createLogger({ service: "crashing-worker", level: process.env.TEST_LOG_LEVEL ?? "silent" });
const sample = sampleStream(key);
const db = await openDatabase({ path, migrations: [...eventMigrations, { id: "test_0001_effects", sql: "CREATE TABLE effects (event_id TEXT NOT NULL, note TEXT NOT NULL)" }] });
const bus = await connectEventBus({ url, name: "crashing-worker", logger });
const consumers = await startConsumers({
  nc: bus.nc,
  db,
  service: "worker",
  logger,
  consumers: [
    bindConsumer({
      spec: sample.consumerSpec(`${key}-worker`, { maxDeliver: Number(maxDeliver), ackWaitMs: Number(ackWaitMs) }),
      descriptor: sample.event,
      async handle(event, context) {
        await context.tx.run("INSERT INTO effects (event_id, note) VALUES ($1, $2)", [context.eventId, event.note]);
        if (event.note === "poison") process.kill(process.pid, "SIGKILL");
      },
    }),
  ],
});
process.stdout.write("consuming\n");
process.once("SIGTERM", async () => {
  await consumers.stop();
  await bus.close();
  await db.close();
  process.exit(0);
});
