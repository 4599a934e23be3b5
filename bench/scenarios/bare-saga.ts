/**
 * The saga scenario's baseline: the saga's messages through two bare
 * processes (bench/workers/bare-saga-service.ts) on the same nats-server,
 * driven by the same load generator with the same settings. It says what
 * the pattern itself costs on this machine (a gRPC call, three events
 * published, two consumed), with no database, checks or logging.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { connect } from "nats";
import { allStreams } from "../../gen/ts/concord_streams.js";
import { ensureConsumers, ensureStreams } from "../../platform/events/index.js";
import { serviceNodeFlags } from "../../tools/service-launch.js";
import type { RunningNats } from "../lib/nats-server.js";
import { bareSagaConsumers } from "../lib/events.js";
import { freePort, type ManagedProcess, nodeArgs, sleep, startProcess } from "../lib/proc.js";
import type { BenchContext } from "../lib/report.js";
import { profileArgs } from "../lib/services.js";
import { resetStreams } from "../lib/shop-processes.js";

export interface BareSaga {
  readonly ordersAddress: string;
  /** The stand-ins' processes: products first, then orders (as the shop's are metered). */
  readonly processes: readonly [ManagedProcess, ManagedProcess];
  stop(): Promise<void>;
}

/** Waits for a stand-in to write that it is ready to its log past `from`, or fails when it exits first. */
async function untilReady(proc: ManagedProcess, from: number, role: string): Promise<void> {
  const until = Date.now() + 30_000;
  while (!readFileSync(proc.logFile).subarray(from).toString("utf8").includes(`bare-saga-service: ${role} ready`)) {
    if (proc.child.exitCode !== null) throw new Error(`${proc.name} exited at start; see ${proc.logFile}`);
    if (Date.now() > until) throw new Error(`${proc.name} was not ready within 30 s; see ${proc.logFile}`);
    await sleep(50);
  }
}

/**
 * Starts the two stand-ins on fresh copies of the shop's streams, with the
 * services' V8 flags. The shop must be stopped: its streams are deleted and
 * made again, without its consumers.
 */
export async function startBareSaga(ctx: BenchContext, nats: RunningNats): Promise<BareSaga> {
  await resetStreams(nats.url);
  const nc = await connect({ servers: nats.url.split(","), name: "bench-runner" });
  try {
    const jsm = await nc.jetstreamManager();
    await ensureStreams(jsm, allStreams);
    await ensureConsumers(jsm, [bareSagaConsumers.orderPlaced, bareSagaConsumers.stockReserved]);
  } finally {
    await nc.close();
  }
  const ordersAddress = `127.0.0.1:${await freePort()}`;
  /** Starts one stand-in; `from` is where its log ends now (an earlier run's lines stay in it). */
  const start = (role: "products" | "orders") => {
    const name = `bare-saga-${role}`;
    const log = join(ctx.tmp, `${name}.log`);
    const from = existsSync(log) ? statSync(log).size : 0;
    const proc = startProcess({
      name,
      command: process.execPath,
      args: nodeArgs("bench/workers/bare-saga-service.ts", [...serviceNodeFlags, ...profileArgs({ name, profileDir: ctx.profileDir })]),
      env: { ...process.env, BARE_ROLE: role, NATS_URL: nats.url, BARE_LISTEN: ordersAddress },
      logDir: ctx.tmp,
    });
    return { role, from, proc };
  };
  const started = [start("products"), start("orders")];
  const processes = [started[0].proc, started[1].proc] as const;
  const stop = async () => {
    for (const p of processes) await p.stop();
    await resetStreams(nats.url);
  };
  try {
    await Promise.all(started.map((s) => untilReady(s.proc, s.from, s.role)));
  } catch (err) {
    await stop();
    throw err;
  }
  return { ordersAddress, processes, stop };
}
