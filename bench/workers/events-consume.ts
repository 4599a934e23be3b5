/**
 * Consuming throughput, two ways, each in a process of its own, from the same
 * prefilled stream and with the same consumer settings (durable pull,
 * explicit ack, the product service's spec for OrderPlaced, pull batch 64):
 * - "concord": `startConsumers` with a typed handler: decode, ce-type and
 *   ce-id checks, the inbox transaction, the handler (which only counts), ack.
 * - "raw": nats.js `consumer.consume()`, `msg.ack()` for each message.
 * Counted for both alike: how far the consumer's ack floor moved on the
 * server in the measured window (messages acknowledged in order).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { connect, type JetStreamManager } from "nats";
import { benchConsumerSpec, OrderPlacedEvent } from "../lib/events.js";
import { compiledPlatform } from "../lib/compiled.js";
import { scratchDir, workerMain } from "../lib/worker.js";

// The code under test as production runs it (compiled), the same for every mode.
const { events, log, sql } = await compiledPlatform();
const { createLogger } = log;
const { openDatabase } = sql;
const { bindConsumer, ensureConsumers, eventMigrations, startConsumers } = events;

export interface ConsumeConfig {
  readonly mode: "concord" | "raw";
  readonly natsUrl: string;
  readonly durable: string;
  readonly pullBatch: number;
  readonly warmupMs: number;
  readonly measureMs: number;
  /** Concord mode: a postgres:// URL of an empty database for the inbox; a SQLite file in a temp dir by default. */
  readonly databaseUrl?: string;
}

export interface ConsumeResult {
  readonly mode: ConsumeConfig["mode"];
  readonly acked: number;
  readonly elapsedMs: number;
  readonly perSecond: number;
  /** Messages still waiting at the end of the window; 0 means the prefill ran out and the rate is a lower bound. */
  readonly pendingAtEnd: number;
  readonly handled: number;
  /** CPU time of this process (user + system) in the window, ms. */
  readonly cpuMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function ackFloor(jsm: JetStreamManager, stream: string, durable: string): Promise<{ acked: number; pending: number }> {
  const info = await jsm.consumers.info(stream, durable);
  return { acked: info.ack_floor.consumer_seq, pending: info.num_pending + info.num_ack_pending };
}

workerMain<ConsumeConfig, ConsumeResult>(async (config) => {
  const spec = benchConsumerSpec(config.durable);
  // Both sides connect as Concord's event bus does.
  const nc = await connect({ servers: config.natsUrl.split(","), name: `bench-${config.mode}-consumer`, noAsyncTraces: true });
  const jsm = await nc.jetstreamManager();
  await ensureConsumers(jsm, [spec]);
  let handled = 0;
  let stop: () => Promise<void>;
  let cleanup = () => {};

  if (config.mode === "concord") {
    const dir = mkdtempSync(join(scratchDir(), "concord-bench-inbox-"));
    const db = await openDatabase({ path: config.databaseUrl ?? join(dir, "consumer.db"), migrations: eventMigrations });
    const running = await startConsumers({
      nc,
      db,
      service: "products",
      consumers: [bindConsumer({ spec, descriptor: OrderPlacedEvent, handle: () => void handled++ })],
      logger: createLogger({ service: "bench-consumer", level: "warn" }),
      pullBatch: config.pullBatch,
    });
    stop = () => running.stop();
    cleanup = () => {
      void db.close();
      rmSync(dir, { recursive: true, force: true });
    };
  } else {
    const consumer = await nc.jetstream().consumers.get(spec.stream, spec.durable);
    const messages = await consumer.consume({ max_messages: config.pullBatch });
    const loop = (async () => {
      for await (const msg of messages) {
        handled++;
        msg.ack();
      }
    })();
    stop = async () => {
      messages.stop();
      await loop;
    };
  }

  await sleep(config.warmupMs);
  const before = await ackFloor(jsm, spec.stream, spec.durable);
  const start = performance.now();
  const cpu0 = process.cpuUsage();
  await sleep(config.measureMs);
  const after = await ackFloor(jsm, spec.stream, spec.durable);
  const cpu = process.cpuUsage(cpu0);
  const elapsedMs = performance.now() - start;
  await stop();
  await nc.close();
  cleanup();
  const acked = after.acked - before.acked;
  return { mode: config.mode, acked, elapsedMs, perSecond: (acked * 1000) / elapsedMs, pendingAtEnd: after.pending, handled, cpuMs: (cpu.user + cpu.system) / 1000 };
});
