import { Code, StatusError } from "../errors/index.js";

/** The host and port of a `host:port` (or `[ipv6]:port`) to listen on. */
export function hostAndPort(listen: string): { readonly host: string; readonly port: number } {
  const match = /^(.*):(\d+)$/.exec(listen);
  if (!match) throw new Error(`the address ${listen} is not host:port`);
  return { host: match[1].replace(/^\[(.*)\]$/, "$1"), port: Number(match[2]) };
}

/** FAILED_PRECONDITION for `what` (the gRPC address, the metrics address) at `listen`, which another process holds, naming the `variable` that gave it. */
export function addressTaken(what: string, listen: string, cause: Error, variable?: string): StatusError {
  const elsewhere = variable === undefined ? "give this one another address" : `set ${variable} to another address`;
  return new StatusError(Code.FAILED_PRECONDITION, `${what} ${listen} is in use by another process (${cause.message}): stop that process, or ${elsewhere}`, { cause });
}
