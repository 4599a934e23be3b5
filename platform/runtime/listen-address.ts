import { createServer } from "node:net";
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

/**
 * Refuses with `addressTaken` an address another process listens on, by
 * listening on it and closing again: a check before a service writes
 * anything (its database's migrations), not a hold, so a process taking
 * the address in the instants after still makes the later listen fail.
 * Port 0 is always free. Other failures to listen are left to the listen itself.
 */
export async function refuseTakenAddress(what: string, listen: string, variable?: string): Promise<void> {
  const { host, port } = hostAndPort(listen);
  if (port === 0) return;
  const probe = createServer();
  const problem = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    probe.once("error", resolve);
    probe.listen(port, host, () => probe.close(() => resolve(undefined)));
  });
  if (problem?.code === "EADDRINUSE") throw addressTaken(what, listen, problem, variable);
}
