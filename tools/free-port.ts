import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ephemeralPortRange } from "../platform/runtime/ephemeral-ports.js";

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
 * on the port it was given): not handed out again for 10 to 20 minutes, by
 * this process or another. Where the reservations' directory cannot be
 * used (another user's), only this process's own are kept.
 */
export async function freePort(options: FreePortOptions = {}): Promise<number> {
  const offsets = [0, ...(options.alsoFree ?? [])];
  const below = ephemeralPortsStart() - Math.max(...offsets);
  if (below <= 10_000) throw new Error(`freePort: offsets up to ${Math.max(...offsets)} leave no port below the ephemeral range`);
  for (let tries = 1; ; tries++) {
    const port = 10_000 + Math.floor(Math.random() * (below - 10_000));
    const ports = offsets.map((offset) => port + offset);
    if (reserveAll(ports) && (await Promise.all(ports.map(canListen))).every(Boolean)) return port;
    if (tries >= 5_000) throw new Error(`freePort: no free port found in ${tries} tries (every one taken or reserved; reservations in ${reservations})`);
    // Let the event loop turn (timers, a test's timeout) while the range is crowded.
    if (tries % 50 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * How long a port handed out stays reserved: between one and two of these.
 * Longer than any process here takes to start listening; short enough that a
 * day of test runs does not use up the 22,000-odd ports below the ephemeral range.
 */
const reservationMs = 10 * 60_000;
const reservations = join(tmpdir(), "concord-free-ports");
/** Ports this process reserved, with the period of each one's file: the only reservations when the shared directory cannot be used. */
const reservedIn = new Map<number, number>();

/** Reserves every one of `ports`, or none. */
function reserveAll(ports: readonly number[]): boolean {
  const taken: number[] = [];
  for (const port of ports) {
    if (!reserve(port)) {
      for (const p of taken) release(p);
      return false;
    }
    taken.push(port);
  }
  return true;
}

/**
 * Takes `port` for this process unless it is reserved: a file per port and
 * period, made with O_EXCL, so two processes asking at once cannot both get
 * it; then the periods either side are looked at, so two that ask across a
 * period's end cannot both get it either (both may lose, and try another).
 */
function reserve(port: number): boolean {
  if (reservedIn.has(port)) return false;
  const period = Math.floor(Date.now() / reservationMs);
  if (shared && period !== sweptPeriod) sweep(period);
  if (shared) {
    try {
      closeSync(openSync(fileOf(port, period), "wx"));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
      shared = false; // not ours to use: reserve in this process only
    }
  }
  if (shared && (existsSync(fileOf(port, period - 1)) || existsSync(fileOf(port, period + 1)))) {
    rmSync(fileOf(port, period), { force: true });
    return false;
  }
  reservedIn.set(port, period);
  return true;
}

/** Gives back a port `reserve` took but that is not handed out after all. */
function release(port: number): void {
  const period = reservedIn.get(port);
  reservedIn.delete(port);
  if (shared && period !== undefined) rmSync(fileOf(port, period), { force: true });
}

const fileOf = (port: number, period: number) => join(reservations, `${port}.${period}`);
let shared = true;
let sweptPeriod: number | undefined;

/** Makes the directory (open to every user, as /tmp is) and removes reservations of periods that no longer count. */
function sweep(period: number): void {
  sweptPeriod = period;
  try {
    mkdirSync(reservations, { recursive: true });
    // mkdir's mode is cut by the umask; the owner opens it to all (sticky: each removes only its own).
    chmodSync(reservations, 0o1777);
  } catch {
    // made by another user: theirs to open
  }
  let names: string[] = [];
  try {
    names = readdirSync(reservations);
  } catch {
    shared = false;
    return;
  }
  for (const name of names) {
    if (Number(name.split(".")[1]) >= period - 1) continue;
    try {
      rmSync(join(reservations, name), { force: true });
    } catch {
      // another user's, in a sticky directory: it reserves nothing any more, and its owner removes it
    }
  }
}

/** The first port of the OS's range for outgoing connections (Linux's ip_local_port_range), 32768 when unknown. */
function ephemeralPortsStart(): number {
  const first = ephemeralPortRange()?.first;
  return first !== undefined && first > 12_000 ? first : 32_768;
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}
