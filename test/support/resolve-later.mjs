// Loaded with `node --import` (through NODE_OPTIONS): the host names in RESOLVE_LATER_NAMES (comma-separated) do not
// resolve (getaddrinfo's ENOTFOUND) until the file RESOLVE_LATER_ONCE exists, and then resolve to 127.0.0.1, as a
// docker compose service's or a pod's name appears once its container or pod exists. With RESOLVE_LATER_SILENT=1 a
// lookup gets no answer until then instead, holding the event loop as getaddrinfo does while the name server does not
// answer. Other names resolve as usual. Node's connections (net, which pg and nats.js use) look names up through
// dns.lookup, grpc-js through dns.promises.lookup; nats.js asks the name server first (resolve4, resolve6) and falls
// back to dns.lookup.
import dns from "node:dns";
import { existsSync } from "node:fs";

const names = new Set((process.env.RESOLVE_LATER_NAMES ?? "").split(",").filter(Boolean));
const once = process.env.RESOLVE_LATER_ONCE ?? "\0";
const silent = process.env.RESOLVE_LATER_SILENT === "1";
const notFound = (syscall, hostname) => Object.assign(new Error(`${syscall} ENOTFOUND ${hostname}`), { errno: -3008, code: "ENOTFOUND", syscall, hostname });

/** Calls `done` with dns.lookup's error or answer for `hostname`, one of ours (`options.all`: a list of addresses). */
const lookUp = (hostname, options, done) => {
  const resolved = () => (typeof options === "object" && options?.all === true ? done(null, [{ address: "127.0.0.1", family: 4 }]) : done(null, "127.0.0.1", 4));
  if (existsSync(once)) return process.nextTick(resolved);
  if (!silent) return process.nextTick(() => done(notFound("getaddrinfo", hostname)));
  const pending = setInterval(() => {
    if (!existsSync(once)) return;
    clearInterval(pending);
    resolved();
  }, 100);
};

if (names.size > 0) {
  const lookup = dns.lookup;
  dns.lookup = function (hostname, options, callback) {
    if (!names.has(hostname)) return lookup.apply(this, arguments);
    lookUp(hostname, options, typeof options === "function" ? options : callback);
  };
  const lookupPromise = dns.promises.lookup;
  dns.promises.lookup = function (hostname, options) {
    if (!names.has(hostname)) return lookupPromise.apply(this, arguments);
    return new Promise((resolve, reject) => lookUp(hostname, options, (err, address, family) => (err ? reject(err) : resolve(Array.isArray(address) ? address : { address, family }))));
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
