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
