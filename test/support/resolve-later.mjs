// Loaded with `node --import` (through NODE_OPTIONS): the host names in RESOLVE_LATER_NAMES (comma-separated) do not
// resolve (getaddrinfo's ENOTFOUND) until the file RESOLVE_LATER_ONCE exists, and then resolve to 127.0.0.1, as a
// docker compose service's or a pod's name appears once its container or pod exists. Other names resolve as usual.
// Node's connections (net, which pg and nats.js use) look names up through dns.lookup, grpc-js through
// dns.promises.lookup; nats.js asks the name server first (resolve4, resolve6) and falls back to dns.lookup.
import dns from "node:dns";
import { existsSync } from "node:fs";

const names = new Set((process.env.RESOLVE_LATER_NAMES ?? "").split(",").filter(Boolean));
const once = process.env.RESOLVE_LATER_ONCE ?? "\0";
const notFound = (syscall, hostname) => Object.assign(new Error(`${syscall} ENOTFOUND ${hostname}`), { errno: -3008, code: "ENOTFOUND", syscall, hostname });

/** For a name of ours, its answer as dns.lookup gives it (`all` or not); undefined for any other name. */
const answer = (hostname, options) => {
  if (!names.has(hostname)) return undefined;
  if (!existsSync(once)) return { err: notFound("getaddrinfo", hostname) };
  const all = typeof options === "object" && options?.all === true;
  return { addresses: all ? [{ address: "127.0.0.1", family: 4 }] : undefined, address: "127.0.0.1", family: 4 };
};

if (names.size > 0) {
  const lookup = dns.lookup;
  dns.lookup = function (hostname, options, callback) {
    const done = typeof options === "function" ? options : callback;
    const given = answer(hostname, options);
    if (given === undefined) return lookup.apply(this, arguments);
    process.nextTick(() => (given.err ? done(given.err) : given.addresses ? done(null, given.addresses) : done(null, given.address, given.family)));
  };
  const lookupPromise = dns.promises.lookup;
  dns.promises.lookup = async function (hostname, options) {
    const given = answer(hostname, options);
    if (given === undefined) return lookupPromise.apply(this, arguments);
    if (given.err) throw given.err;
    return given.addresses ?? { address: given.address, family: given.family };
  };
  for (const method of ["resolve4", "resolve6"]) {
    const resolve = dns[method];
    dns[method] = function (hostname, ...rest) {
      if (!names.has(hostname)) return resolve.apply(this, [hostname, ...rest]);
      const done = rest.at(-1);
      process.nextTick(() => done(notFound("query", hostname)));
    };
  }
}
