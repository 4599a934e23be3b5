import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface FreePortOptions {
  /**
   * Offsets from the port returned that must be free too, and are reserved
   * with it: `[2]` for a second instance two ports up, `[1, 2, 2000, 4000]`
   * for a cluster's neighbours and its route and monitoring ports.
   */
  readonly alsoFree?: readonly number[];
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago, for a process about to
 * listen on it (tests, the bench, a local PostgreSQL).
 *
 * Taken below the range the OS gives outgoing connections their ports from:
 * a port a listener on port 0 was given comes from that range, and an
 * outgoing connection could take it before the process it was meant for
 * listens on it. Reserved for every process on this machine that asks here
 * (test workers run side by side, and a process may take seconds to listen
 * on the port it was given): never handed out again within
 * `reservationMs`, by this process or another.
 */
export async function freePort(options: FreePortOptions = {}): Promise<number> {
  const offsets = [0, ...(options.alsoFree ?? [])];
  const span = Math.max(...offsets);
  const below = ephemeralPortsStart() - span;
  for (;;) {
    const port = 10_000 + Math.floor(Math.random() * (below - 10_000));
    const ports = offsets.map((offset) => port + offset);
    if (!ports.every(reserve)) continue;
    if ((await Promise.all(ports.map(canListen))).every(Boolean)) return port;
  }
}

/**
 * How long a port handed out stays reserved: between one and two of these.
 * Longer than any process here takes to start listening; short enough that a
 * day of test runs does not use up the 22,000-odd ports below the ephemeral range.
 */
const reservationMs = 10 * 60_000;
const reservations = join(tmpdir(), "concord-free-ports");

/**
 * Takes `port` for this process unless it was taken in this period or the one
 * before: a file per port and period, made with O_EXCL, so two processes
 * asking at once cannot both get it. Files of older periods are removed
 * (they no longer reserve anything).
 */
function reserve(port: number): boolean {
  const period = Math.floor(Date.now() / reservationMs);
  if (period !== sweptPeriod) sweep(period);
  try {
    closeSync(openSync(join(reservations, `${port}.${period - 1}`), "r"));
    return false; // reserved in the period before
  } catch {
    // not reserved then
  }
  try {
    closeSync(openSync(join(reservations, `${port}.${period}`), "wx"));
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw new Error(`cannot reserve a free port in ${reservations}: ${(error as Error).message}`);
  }
}

let sweptPeriod: number | undefined;

function sweep(period: number): void {
  mkdirSync(reservations, { recursive: true, mode: 0o1777 });
  for (const name of readdirSync(reservations)) {
    if (Number(name.split(".")[1]) < period - 1) rmSync(join(reservations, name), { force: true });
  }
  sweptPeriod = period;
}

/** The first port of the OS's range for outgoing connections (Linux's ip_local_port_range), 32768 when unknown. */
function ephemeralPortsStart(): number {
  try {
    const first = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(first) && first > 12_000 ? first : 32_768;
  } catch {
    return 32_768;
  }
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}
