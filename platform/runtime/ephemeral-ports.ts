/**
 * The ports the kernel hands out as the local ports of outgoing connections
 * (Linux's ip_local_port_range): a listener on one of them may find it held,
 * while it was free, by a connection of any process on the machine.
 */
import { readFileSync } from "node:fs";

/** The kernel's range for outgoing connections' own ports; undefined where it cannot be read (not Linux). */
export function ephemeralPortRange(): { readonly first: number; readonly last: number } | undefined {
  try {
    const [first, last] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    return Number.isInteger(first) && Number.isInteger(last) && first <= last ? { first, last } : undefined;
  } catch {
    return undefined;
  }
}
