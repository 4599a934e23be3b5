import { readFileSync } from "node:fs";
import { createServer } from "node:net";

/**
 * A TCP port on 127.0.0.1 that was free a moment ago, for a process about to
 * listen on it (tests, the bench, a local PostgreSQL). Taken below the range
 * the OS gives outgoing connections their ports from: a port a listener on
 * port 0 was given comes from that range, and an outgoing connection could
 * take it before the process it was meant for listens on it. Never the same
 * port twice in one process.
 */
export async function freePort(): Promise<number> {
  const below = ephemeralPortsStart();
  for (;;) {
    const port = 10_000 + Math.floor(Math.random() * (below - 10_000));
    if (handedOut.has(port)) continue;
    if (await canListen(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

const handedOut = new Set<number>();

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
