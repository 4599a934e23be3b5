/**
 * What waking an idle Node process costs on this machine: a timer that does
 * nothing, fired `perSecond` times a second, and the CPU time (user +
 * system) this process spends per firing once warmed up. At a low rate
 * each firing finds the process idle, as each message of the saga at its
 * fixed rate finds the services.
 */
import { workerMain } from "../lib/worker.js";

export interface TimerWakesConfig {
  readonly perSecond: number;
  readonly warmupMs: number;
  readonly measureMs: number;
}

export interface TimerWakesResult {
  readonly firings: number;
  /** Firings a second achieved in the window. */
  readonly perSecond: number;
  readonly cpuUsPerFiring: number;
}

workerMain<TimerWakesConfig, TimerWakesResult>(async (config) => {
  let firings = 0;
  let timer: NodeJS.Timeout | undefined;
  // On a fixed schedule, so that a late firing does not slow the rate down.
  const t0 = performance.now();
  const interval = 1000 / config.perSecond;
  const fire = () => {
    firings++;
    timer = setTimeout(fire, Math.max(0, t0 + firings * interval - performance.now()));
  };
  fire();
  await new Promise((r) => setTimeout(r, config.warmupMs));
  const from = firings;
  const start = performance.now();
  const cpu0 = process.cpuUsage();
  await new Promise((r) => setTimeout(r, config.measureMs));
  const cpu = process.cpuUsage(cpu0);
  const elapsedMs = performance.now() - start;
  clearTimeout(timer);
  const n = firings - from;
  return { firings: n, perSecond: (n * 1000) / elapsedMs, cpuUsPerFiring: (cpu.user + cpu.system) / n };
});
