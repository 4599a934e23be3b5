import { readFileSync } from "node:fs";

/** CPU use during a stretch of the run, as shares of the whole machine (all cores = 100%). */
export interface CpuShare {
  /** Everything that ran. */
  readonly busyPct: number;
  /** The bench: this process, its children (services, generators, ghz) and nats-server. */
  readonly benchPct: number;
  /** Everything else on the machine: other people's builds and tests. Large values make the figures unreliable. */
  readonly otherPct: number;
  /** Time the hypervisor gave to other guests. */
  readonly stealPct: number;
}

function machine(): { total: number; idle: number; steal: number } {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
  return { total: user + nice + system + idle + iowait + irq + softirq + steal, idle: idle + iowait, steal };
}

function ticksOf(pid: number | "self", withChildren: boolean): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
    // Fields after the name: state is [0]; utime [11], stime [12], cutime [13], cstime [14].
    return f[11] + f[12] + (withChildren ? f[13] + f[14] : 0);
  } catch {
    return 0;
  }
}

/**
 * Measures how busy the machine was, and how much of that was not the bench.
 * Finished children count through cutime/cstime (Node reaps them); long-lived
 * ones that are still running (nats-server) are passed in `pids`.
 */
export function startCpuMeter(pids: () => readonly number[]): () => CpuShare {
  const m0 = machine();
  const p0 = pids();
  const o0 = ticksOf("self", true) + p0.reduce((n, pid) => n + ticksOf(pid, false), 0);
  return () => {
    const m1 = machine();
    const o1 = ticksOf("self", true) + p0.reduce((n, pid) => n + ticksOf(pid, false), 0);
    const total = m1.total - m0.total || 1;
    const busy = total - (m1.idle - m0.idle);
    const ours = Math.min(busy, o1 - o0);
    const pct = (v: number) => Math.round((1000 * v) / total) / 10;
    return { busyPct: pct(busy), benchPct: pct(ours), otherPct: pct(Math.max(0, busy - ours - (m1.steal - m0.steal))), stealPct: pct(m1.steal - m0.steal) };
  };
}
