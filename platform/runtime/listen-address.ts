import { connect } from "node:net";
import { Code, StatusError } from "../errors/index.js";
import { ephemeralPortRange } from "./ephemeral-ports.js";

/** The host and port of a `host:port` (or `[ipv6]:port`) to listen on. */
export function hostAndPort(listen: string): { readonly host: string; readonly port: number } {
  const match = /^(.*):(\d+)$/.exec(listen);
  if (!match) throw new Error(`the address ${listen} is not host:port`);
  return { host: match[1].replace(/^\[(.*)\]$/, "$1"), port: Number(match[2]) };
}

/** Whether something accepts connections on `port` of `host`. */
export function isListening(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, host);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/**
 * What holds `listen`, found taken (EADDRINUSE): a process listening there
 * (`listening`), or a socket that does not listen, which a port of the
 * kernel's range for outgoing connections most likely is: a connection
 * given it while it was free (a service's own reconnections among them),
 * until that connection closes. `said` says which, as a phrase.
 */
export async function portHolder(listen: string): Promise<{ readonly listening: boolean; readonly said: string }> {
  const { host, port } = hostAndPort(listen);
  const target = ["", "0.0.0.0"].includes(host) ? "127.0.0.1" : host === "::" ? "::1" : host;
  if (await isListening(port, target)) return { listening: true, said: "another process listens there" };
  const range = ephemeralPortRange();
  const inRange = range !== undefined && port >= range.first && port <= range.last;
  const outgoing = inRange
    ? `, most likely an outgoing connection the kernel gave it to while it was free (it is in the range of ports for those, ${range.first}-${range.last}, /proc/sys/net/ipv4/ip_local_port_range)`
    : "";
  return { listening: false, said: `a socket that does not listen holds it${outgoing}` };
}

/**
 * FAILED_PRECONDITION for `what` (the gRPC address, the metrics address) at
 * `listen`, which something else holds (see portHolder), naming the
 * `variable` that gave it.
 */
export async function addressTaken(what: string, listen: string, cause: Error, variable?: string): Promise<StatusError> {
  const elsewhere = variable === undefined ? "give this one another address" : `set ${variable} to another address`;
  const holder = await portHolder(listen);
  const message = holder.listening
    ? `${what} ${listen} is in use by another process (${cause.message}): stop that process, or ${elsewhere}`
    : `${what} ${listen} is taken (${cause.message}): ${holder.said}; ${elsewhere}, or start again once that socket has closed`;
  return new StatusError(Code.FAILED_PRECONDITION, message, { cause });
}

/** Why a listen failed with `code` that no other process causes, as a phrase; undefined for any other code. */
const unusableBecause: Record<string, (port: number) => string> = {
  ENOTFOUND: () => "its host does not resolve",
  EAI_AGAIN: () => "its host does not resolve",
  EADDRNOTAVAIL: () => "it is not an address of this machine",
  EACCES: (port) => `this user may not listen on port ${port}${port < 1024 ? " (ports below 1024 take privileges)" : ""}`,
};

/**
 * FAILED_PRECONDITION for `what` (the gRPC address, the metrics address) at
 * `listen`, which cannot be listened on for want of a host that resolves,
 * of an address this machine has, or of the right to its port (`cause`'s
 * `code`), naming the `variable` that gave it; undefined for another cause.
 */
export function addressUnusable(what: string, listen: string, cause: Error & { code?: string }, variable?: string): StatusError | undefined {
  const because = cause.code === undefined ? undefined : unusableBecause[cause.code];
  if (because === undefined) return undefined;
  const elsewhere = variable === undefined ? "give this one an address" : `set ${variable} to an address`;
  return new StatusError(Code.FAILED_PRECONDITION, `${what} ${listen} cannot be listened on: ${because(hostAndPort(listen).port)} (${cause.message}); ${elsewhere} this machine may listen on, such as 127.0.0.1:<port>`, { cause });
}
