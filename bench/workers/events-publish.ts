/**
 * Publishing throughput, two ways, in a process of its own:
 * - "outbox": Concord's path. Each event is committed in its own SQLite
 *   transaction through the outbox (`createOutbox`), and the outbox relay
 *   (`createOutboxRelay`, window `window`; atomic batches of up to `window`
 *   events where the stream allows them, as in a service) publishes it to
 *   JetStream and deletes it once acked. A producer keeps the outbox ahead
 *   of the relay.
 *   Counted: events the relay reports acknowledged (stats().published).
 * - "raw": nats.js `js.publish` with the same subject, payload, headers and
 *   Nats-Msg-Id, `window` publishes kept in flight (sliding). Counted: PubAcks
 *   that are not duplicates.
 * - "commit": the outbox side's transactions alone, one per event through
 *   `createOutbox` into a SQLite outbox, with no relay and no NATS: what
 *   the producer's commits cost, which the raw side does not pay.
 *   Counted: transactions committed.
 * - "prefill": `count` events as fast as possible, core NATS publishes with a
 *   flush every 1000 (for the consuming scenario; not timed, checked by count).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { connect } from "nats";
import { idGenerator, OrderPlacedEvent, rawEventFactory, sampleOrderPlaced, streamSpec } from "../lib/events.js";
import { compiledPlatform } from "../lib/compiled.js";
import { scratchDir, workerMain } from "../lib/worker.js";

// The code under test as production runs it (compiled), the same for every mode.
const { events, log, sql } = await compiledPlatform();
const { createLogger } = log;
const { openDatabase } = sql;
const { connectEventBus, createOutbox, createOutboxRelay, ensureStreams, outboxMigrations } = events;

export interface PublishConfig {
  readonly mode: "outbox" | "commit" | "raw" | "prefill";
  readonly natsUrl: string;
  readonly window: number;
  readonly warmupMs: number;
  readonly measureMs: number;
  readonly count?: number;
  /** Raw mode: nats.js `noAsyncTraces` (no stack captured per request). */
  readonly noAsyncTraces?: boolean;
  /** Outbox mode: a postgres:// URL of an empty database; a SQLite file in a temp dir by default. */
  readonly databaseUrl?: string;
  /** Outbox and commit modes: transactions committing at once (default 1; a Postgres server commits side by side, SQLite as a group). */
  readonly producers?: number;
}

export interface PublishResult {
  readonly mode: PublishConfig["mode"];
  /** Events acknowledged by JetStream in the measured window. */
  readonly acked: number;
  readonly duplicates: number;
  readonly failed: number;
  readonly elapsedMs: number;
  readonly perSecond: number;
  /** CPU time of this process (user + system) in the window, ms. */
  readonly cpuMs: number;
  /** Outbox only: events committed in the window, and left unpublished at its end. */
  readonly committed?: number;
  readonly backlogAtEnd?: number;
  /** Outbox only: least and mean number of committed, unpublished events, sampled every 10 ms in the window (0 would mean the relay starved). */
  readonly backlogMin?: number;
  readonly backlogMean?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cpuSince = (start: NodeJS.CpuUsage) => {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1000;
};

workerMain<PublishConfig, PublishResult>(async (config, emit) => {
  const logger = createLogger({ service: "bench-publisher", level: "warn" });
  if (config.mode === "outbox") return outbox(config, logger, emit);
  if (config.mode === "commit") return commitsAlone(config);
  const nc = await connect({ servers: config.natsUrl.split(","), name: "bench-raw-publisher", noAsyncTraces: config.noAsyncTraces ?? false });
  try {
    await ensureStreams(await nc.jetstreamManager(), [streamSpec]);
    const js = nc.jetstream();
    const nextEvent = rawEventFactory("orders", { consumable: config.mode === "prefill" });
    if (config.mode === "prefill") {
      const t0 = performance.now();
      const jsm = await nc.jetstreamManager();
      const before = (await jsm.streams.info(streamSpec.name)).state.messages;
      for (let i = 0; i < (config.count ?? 0); i++) {
        const e = nextEvent();
        nc.publish(e.subject, e.payload, { headers: e.headers });
        if (i % 1000 === 999) await nc.flush();
      }
      await nc.flush();
      let stored = 0;
      for (let tries = 0; tries < 100; tries++) {
        stored = (await jsm.streams.info(streamSpec.name)).state.messages - before;
        if (stored >= (config.count ?? 0)) break;
        await sleep(50);
      }
      const elapsedMs = performance.now() - t0;
      return { mode: config.mode, acked: stored, duplicates: 0, failed: (config.count ?? 0) - stored, elapsedMs, perSecond: (stored * 1000) / elapsedMs, cpuMs: 0 };
    }
    let acked = 0;
    let duplicates = 0;
    let failed = 0;
    let measuring = false;
    let stop = false;
    const lane = async () => {
      while (!stop) {
        const e = nextEvent();
        try {
          const ack = await js.publish(e.subject, e.payload, { msgID: e.id, headers: e.headers });
          if (measuring) {
            if (ack.duplicate) duplicates++;
            else acked++;
          }
        } catch {
          if (measuring) failed++;
        }
      }
    };
    const lanes = Array.from({ length: config.window }, lane);
    await sleep(config.warmupMs);
    measuring = true;
    emit("window-start");
    const start = performance.now();
    const cpu0 = process.cpuUsage();
    await sleep(config.measureMs);
    measuring = false;
    emit("window-end");
    const cpuMs = cpuSince(cpu0);
    const elapsedMs = performance.now() - start;
    stop = true;
    await Promise.all(lanes);
    return { mode: config.mode, acked, duplicates, failed, elapsedMs, perSecond: (acked * 1000) / elapsedMs, cpuMs };
  } finally {
    await nc.close();
  }
});

/** Tells the runner where the measured window starts and ends (it meters nats-server's CPU over it). */
type Emit = (name: "window-start" | "window-end") => void;

async function commitsAlone(config: PublishConfig): Promise<PublishResult> {
  const dir = mkdtempSync(join(scratchDir(), "concord-bench-commits-"));
  const db = await openDatabase({ path: join(dir, "outbox.db"), migrations: outboxMigrations });
  try {
    const box = createOutbox({ db, source: "orders" });
    const nextId = idGenerator();
    let committed = 0;
    let stop = false;
    // The outbox side's producer loop, without the relay it yields to.
    const produce = async () => {
      while (!stop) {
        for (let i = 0; i < 64; i++) {
          await db.transaction(async (tx) => void box.add(tx, OrderPlacedEvent, sampleOrderPlaced(nextId())));
          committed++;
        }
        await new Promise((r) => setImmediate(r));
      }
    };
    const producing = Promise.all(Array.from({ length: config.producers ?? 1 }, produce));
    await sleep(config.warmupMs);
    const before = committed;
    const start = performance.now();
    const cpu0 = process.cpuUsage();
    await sleep(config.measureMs);
    const cpuMs = cpuSince(cpu0);
    const elapsedMs = performance.now() - start;
    const done = committed - before;
    stop = true;
    await producing;
    return { mode: "commit", acked: done, duplicates: 0, failed: 0, elapsedMs, perSecond: (done * 1000) / elapsedMs, cpuMs, committed: done };
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function outbox(config: PublishConfig, logger: ReturnType<typeof createLogger>, emit: Emit): Promise<PublishResult> {
  const dir = mkdtempSync(join(scratchDir(), "concord-bench-outbox-"));
  const db = await openDatabase({ path: config.databaseUrl ?? join(dir, "outbox.db"), migrations: outboxMigrations });
  const bus = await connectEventBus({ url: config.natsUrl, name: "bench-outbox", logger });
  try {
    // As a service runs it: atomic batches on a stream that allows them (nats-server 2.12 and later).
    const { atomicBatch } = await ensureStreams(bus.jsm, [streamSpec]);
    const box = createOutbox({ db, source: "orders" });
    const relay = createOutboxRelay({ db, nc: bus.nc, logger, maxInFlight: config.window, batchStreams: atomicBatch });
    const nextId = idGenerator();
    let committed = 0;
    let stop = false;
    // Producer: one transaction per event, as a service commits one state change
    // at a time; it stays up to two windows ahead of the relay and yields to it.
    const produce = async () => {
      while (!stop) {
        const backlog = committed - relay.stats().published;
        const room = Math.min(2 * config.window - backlog, 64);
        for (let i = 0; i < room; i++) {
          await db.transaction(async (tx) => void box.add(tx, OrderPlacedEvent, sampleOrderPlaced(nextId())));
          committed++;
        }
        // Two windows ahead already: wait for the relay without spinning (a slow server, sync always, would
        // otherwise have this loop take a core from it and count as the relay's CPU).
        if (room <= 0) await sleep(1);
        else await new Promise((r) => setImmediate(r));
      }
    };
    const producing = Promise.all(Array.from({ length: config.producers ?? 1 }, produce));
    await sleep(config.warmupMs);
    const before = relay.stats();
    const committedBefore = committed;
    const start = performance.now();
    const cpu0 = process.cpuUsage();
    const backlog: number[] = [];
    const sampler = setInterval(() => backlog.push(committed - relay.stats().published), 10);
    emit("window-start");
    await sleep(config.measureMs);
    emit("window-end");
    clearInterval(sampler);
    const cpuMs = cpuSince(cpu0);
    const after = relay.stats();
    const elapsedMs = performance.now() - start;
    const committedInWindow = committed - committedBefore;
    stop = true;
    await producing;
    const backlogAtEnd = await box.pending();
    await relay.stop();
    const acked = after.published - before.published - (after.duplicates - before.duplicates);
    return {
      mode: "outbox",
      acked,
      duplicates: after.duplicates - before.duplicates,
      failed: 0,
      elapsedMs,
      perSecond: (acked * 1000) / elapsedMs,
      cpuMs,
      committed: committedInWindow,
      backlogAtEnd,
      backlogMin: Math.min(...backlog),
      backlogMean: Math.round(backlog.reduce((a, b) => a + b, 0) / Math.max(1, backlog.length)),
    };
  } finally {
    await bus.close();
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
