/**
 * Configuration from environment variables, validated at start-up. Every bad
 * value is reported at once, each by the variable's name, so a service never
 * starts half-configured.
 */

import { statSync, type Stats } from "node:fs";
import { longestTimerMs } from "../options/index.js";
import { notRegularFile } from "./setting-file.js";
import { isIPv6 } from "node:net";

/** How to read one variable. */
export interface Setting<T> {
  /** What the variable means, for error messages and --help. */
  readonly description: string;
  /** Used when the variable is unset or empty; without one the variable is required. */
  readonly default?: string;
  /** Another variable read when this one is unset or empty (before the default): `DATABASE_URL` for a service's own database setting. */
  readonly fallback?: string;
  /** Turns the raw text into a value; throws an Error saying what is wrong. */
  readonly parse: (raw: string) => T;
  /** How a bad value is quoted in the error: a secret given by mistake is left out. Default: as it is, in JSON quotes. */
  readonly shown?: (raw: string) => string;
}

export type Settings = Record<string, Setting<unknown>>;
export type ConfigOf<S extends Settings> = { readonly [K in keyof S]: S[K] extends Setting<infer T> ? T : never };

/** Thrown by `readConfig`; its message lists every bad variable. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  /** The values of the settings that were read well, by name: what can be said of the process all the same. */
  readonly read: Readonly<Record<string, unknown>>;

  constructor(message: string, read: Readonly<Record<string, unknown>> = {}) {
    super(message);
    this.read = read;
  }
}

/** For each configuration `readConfig` returned, the variable each setting's value was read from. */
const readFrom = new WeakMap<object, Readonly<Record<string, string>>>();

export function readConfig<S extends Settings>(settings: S, env: NodeJS.ProcessEnv = process.env): ConfigOf<S> {
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  const variables: Record<string, string> = {};
  for (const [name, setting] of Object.entries(settings)) {
    const own = env[name];
    const fallback = setting.fallback === undefined ? undefined : env[setting.fallback];
    const ownSet = own !== undefined && own !== "";
    const raw = ownSet ? own : fallback;
    variables[name] = !ownSet && fallback !== undefined && fallback !== "" ? setting.fallback! : name;
    const text = raw === undefined || raw === "" ? setting.default : raw;
    if (text === undefined) {
      problems.push(`${name} is required (${setting.description})`);
      continue;
    }
    try {
      out[name] = setting.parse(text);
    } catch (err) {
      // Named as set: a bad DATABASE_URL was said to be ORDERS_DATABASE_URL, which was not set.
      const from = raw === undefined || raw === "" ? name : variables[name];
      problems.push(`${from}=${setting.shown?.(text) ?? JSON.stringify(text)} is invalid: ${(err as Error).message} (${setting.description})`);
    }
  }
  if (problems.length > 0) throw new ConfigError(`bad configuration:\n  ${problems.join("\n  ")}`, out);
  readFrom.set(out, variables);
  return out as ConfigOf<S>;
}

/**
 * The variable setting `name`'s value in `config` (from `readConfig`) was
 * read from, for messages that say what to change: its fallback when only
 * that was set (`DATABASE_URL`), else `name` itself, its default included.
 */
export function variableRead(config: object, name: string): string {
  return readFrom.get(config)?.[name] ?? name;
}

/** One line per variable, for a --help text. */
export function describeConfig(settings: Settings): string {
  return Object.entries(settings)
    .map(([name, s]) => `  ${name.padEnd(28)} ${s.description}${s.fallback ? ` (else $${s.fallback})` : ""}${s.default !== undefined ? ` (default: ${s.default || '""'})` : " (required)"}`)
    .join("\n");
}

/** `host:port` to listen on or dial; port 0 picks a free one when listening. */
export function hostPort(raw: string): string {
  const match = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(raw);
  if (!match || Number(match[2]) > 65535) throw new Error("expected host:port, for example 127.0.0.1:50051");
  return raw;
}

/** `host:port` as `hostPort`, or undefined for an empty value (the feature is off). */
export function optionalHostPort(raw: string): string | undefined {
  return raw === "" ? undefined : hostPort(raw);
}

/**
 * The family of several `host:port`s that grpc-js dials as one list of
 * addresses (`ipv4:` or `ipv6:`): all IPv4, or all IPv6 in brackets.
 * Undefined for any other mix, names among them: grpc-js has no list of
 * names, and a name that resolves to every instance (`dns:///`) does that.
 */
export function addressListFamily(parts: readonly string[]): "ipv4" | "ipv6" | undefined {
  if (parts.every((p) => /^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(p))) return "ipv4";
  if (parts.every((p) => /^\[[0-9a-fA-F:]+\]:\d+$/.test(p))) return "ipv6";
  return undefined;
}

/**
 * Where the instances of a service are: one `host:port`, several separated
 * by commas (all IPv4 or all IPv6, as `addressListFamily`), or
 * `dns:///host:port` for a name that resolves to all of them.
 */
export function serviceAddress(raw: string): string {
  if (/^dns:\/\/\/[^/]+$/.test(raw)) {
    hostPort(raw.slice("dns:///".length));
    return raw;
  }
  const parts = raw.split(",").map((p) => p.trim());
  for (const part of parts) {
    try {
      hostPort(part);
    } catch {
      throw new Error("expected host:port, several separated by commas, or dns:///host:port");
    }
  }
  // The client refused them once the service had opened its database and reached NATS, and the service hung on there.
  if (parts.length > 1 && addressListFamily(parts) === undefined) {
    throw new Error("several addresses must all be IPv4 or all IPv6 host:port; for host names give one DNS name that resolves to every instance, dns:///name:port");
  }
  return parts.join(",");
}

/**
 * NATS server URL(s) as nats.js dials them: `nats://host:port`, `host:port`
 * or `host` (port 4222), several separated by commas for a cluster; an IPv6
 * address in brackets. What nats.js would throw on when it first connects (a
 * port that is not a number) or would quietly not use (another scheme, such
 * as tls://, credentials, a path) is refused here, saying which part.
 */
export function natsUrl(raw: string): string {
  const parts = raw.split(",").map((p) => p.trim());
  for (const part of parts) {
    if (part === "") throw new Error("an empty URL between commas; expected nats://host:port, several separated by commas");
    const match = /^(?:([^:/?#@]*):\/\/)?([^/?#]*)(.*)$/.exec(part)!;
    const [, scheme, authority, rest] = match as unknown as [string, string | undefined, string, string];
    const where = parts.length > 1 ? `${withoutPassword(part)}: ` : "";
    if (scheme !== undefined && scheme.toLowerCase() !== "nats") throw new Error(`${where}the scheme is "${scheme}://", which is not NATS's: expected nats://host:port`);
    if (authority.includes("@")) throw new Error(`${where}credentials in the URL are not used: the NATS user's nkey seed goes in a file NATS_NKEY_SEED names`);
    if (rest !== "" && rest !== "/") throw new Error(`${where}a NATS URL has no path or query: expected nats://host:port`);
    const hostAndPort = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)(?::(\d+))?$/.exec(authority);
    if (!hostAndPort) {
      const port = /^(?:\[[^\]]*\]|[^:]*):(.*)$/.exec(authority)?.[1];
      throw new Error(port === undefined || port === "" || /^\d+$/.test(port) ? `${where}expected nats://host:port, host a name or an address (IPv6 in brackets)` : `${where}the port ${JSON.stringify(port)} is not a number: expected nats://host:port`);
    }
    const port = hostAndPort[2];
    if (port !== undefined && (port.length > 5 || Number(port) < 1 || Number(port) > 65535)) throw new Error(`${where}the port ${port} is not one from 1 to 65535`);
    const hostProblem = natsHostProblem(hostAndPort[1]!);
    if (hostProblem !== undefined) throw new Error(`${where}${hostProblem}`);
  }
  return parts.join(",");
}

/**
 * What is wrong with the host of a NATS URL that no lookup could mend: an
 * address that is none (999.1.1.1, [1::2::3]), on which nats.js throws
 * "Invalid URL" once it connects; a lone number, which its URL parser reads
 * as an address (4222 as 0.0.16.126: a port given without its host, dialled
 * until a timeout); an empty label (a..b). A name that does not resolve
 * (yet) is none of these: the services wait for it.
 */
function natsHostProblem(host: string): string | undefined {
  if (host.startsWith("[")) return isIPv6(host.slice(1, -1)) ? undefined : `the host ${host} is not an IPv6 address`;
  let read: string;
  try {
    // As nats.js reads it.
    read = new URL(`http://${host}`).hostname;
  } catch {
    return `the host "${host}" is neither an IPv4 address (four numbers from 0 to 255, as 127.0.0.1) nor a name (whose last label is no number)`;
  }
  // 127.1 is 127.0.0.1 as meant; a lone number is a port that lost its host, more likely than an address.
  if (read !== host.toLowerCase() && !host.includes(".")) return `the host "${host}" is a number, read as the address ${read}: a port goes after its host (nats://127.0.0.1:4222)`;
  if (host.replace(/\.$/, "").split(".").some((label) => label === "")) return `the host "${host}" has an empty label (two dots together, or a dot first)`;
  return undefined;
}

/** Each of several comma-separated URLs as an error may quote it (see `withoutPassword`). */
export function urlsWithoutPasswords(raw: string): string {
  return JSON.stringify(raw.split(",").map((part) => JSON.parse(withoutPassword(part)) as string).join(","));
}

/** A whole number within bounds. */
export function integer(min: number, max: number): (raw: string) => number {
  return (raw) => {
    if (!/^-?\d+$/.test(raw)) throw new Error("expected a whole number");
    const n = Number(raw);
    if (n < min || n > max) throw new Error(`expected a number from ${min} to ${max}`);
    return n;
  };
}

/** A duration such as "250ms", "5s", "2m", "1h" or "7d", returned in milliseconds. */
export function duration(raw: string): number {
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(raw);
  if (!match) throw new Error('expected a duration such as "250ms", "5s", "2m", "1h" or "7d"');
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as "ms" | "s" | "m" | "h" | "d"];
  const ms = Number(match[1]) * unit;
  // Past 2^53 ms (some 285,000 years) a number of milliseconds is no longer exact, and every check after fails oddly.
  if (!Number.isSafeInteger(ms)) throw new Error(`expected a duration of at most ${Math.floor(Number.MAX_SAFE_INTEGER / 86_400_000)}d`);
  return ms;
}

/** A duration (see `duration`), or "0" or "off" for none: 0. */
export function durationOrOff(raw: string): number {
  if (raw === "off" || raw === "0") return 0;
  if (!/^\d+(ms|s|m|h|d)$/.test(raw)) throw new Error('expected a duration such as "250ms", "5s", "2m", "1h" or "7d", or 0 or off');
  return duration(raw);
}

/** As `durationOrOff`, but a duration other than 0 must be at least `min`, itself a duration; `why` ends the message of a shorter one. */
export function durationAtLeastOrOff(min: string, why: string): (raw: string) => number {
  const minMs = duration(min);
  return (raw) => {
    const ms = durationOrOff(raw);
    if (ms !== 0 && ms < minMs) throw new Error(`expected at least ${min}, or 0 or off: ${why}`);
    return ms;
  };
}

/** A duration (see `duration`) of at least `min`, itself a duration; `why` ends the message of a shorter one. */
export function durationAtLeast(min: string, why: string): (raw: string) => number {
  const minMs = duration(min);
  return (raw) => {
    const ms = duration(raw);
    if (ms < minMs) throw new Error(`expected at least ${min}: ${why}`);
    return ms;
  };
}

/**
 * A duration (see `duration`) that a timer waits out: at least `min`, itself
 * a duration, and at most 24d, as Node.js would wait 1 ms for a longer one
 * (a stop that was to wait 30 days for its calls waited 1 ms).
 */
export function timerDuration(min: string): (raw: string) => number {
  const minMs = duration(min);
  return (raw) => {
    const ms = duration(raw);
    if (ms < minMs) throw new Error(`expected at least ${min}`);
    if (ms > longestTimerMs) throw new Error("expected at most 24d: a timer waits at most 2^31 - 1 ms (about 24.8 days)");
    return ms;
  };
}

/** One of a fixed set of words. */
export function oneOf<T extends string>(...choices: T[]): (raw: string) => T {
  return (raw) => {
    if (!choices.includes(raw as T)) throw new Error(`expected one of ${choices.join(", ")}`);
    return raw as T;
  };
}

/** Any non-empty text. */
export function text(raw: string): string {
  return raw;
}

/** A path to a regular file that exists, or undefined for an empty value; a device, a FIFO or a directory is refused, saying which it is. */
export function optionalFile(raw: string): string | undefined {
  if (raw === "") return undefined;
  let found: Stats | undefined;
  try {
    found = statSync(raw, { throwIfNoEntry: false });
  } catch (err) {
    // A path through a file (ENOTDIR) names none either; a directory it may not search (EACCES) is said as such.
    if ((err as NodeJS.ErrnoException).code !== "ENOTDIR") throw new Error(`it cannot be looked at (${(err as NodeJS.ErrnoException).code})`, { cause: err });
  }
  if (!found) throw new Error("no such file");
  const kind = notRegularFile(found);
  if (kind) throw new Error(`it is ${kind}, not a regular file`);
  return raw;
}

/** A URL as an error may quote it, in JSON quotes: its passwords replaced by `***` (see `urlWithoutSecrets`). */
export function withoutPassword(raw: string): string {
  return JSON.stringify(urlWithoutSecrets(raw));
}

/**
 * A URL as a log line or an error may show it: the password of its user
 * (`scheme://user:password@host`) and a `password` or `sslpassword` in its
 * query (which node-postgres and libpq take too) replaced by `***`. A
 * password the URL leaves unencoded may hold `/`, `?`, `#` or `@`, which
 * make the URL unparsable or move the password into its path: everything
 * from the user's `:` to the last `@` goes, so a URL with an `@` in its
 * query and no password is shown with less of it than it has, never more.
 * Text without a `scheme://` (a SQLite path) is returned as it is.
 */
export function urlWithoutSecrets(raw: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(raw)?.[0];
  if (scheme === undefined) return raw;
  let rest = raw.slice(scheme.length);
  const colon = rest.indexOf(":");
  const at = rest.lastIndexOf("@");
  if (colon >= 0 && colon < at) rest = `${rest.slice(0, colon + 1)}***${rest.slice(at)}`;
  return scheme + rest.replace(/([?&](?:ssl)?password=)[^&#]*/gi, "$1***");
}

/** `text` with its %-escapes decoded, or as it is when one is malformed. */
function decodedOrAsIs(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/**
 * Where a service keeps its data. SQLite is the embedded default: a file
 * path, or a `file:` / `sqlite:` URL, taken as the path that follows it
 * (`file:///var/x.db`, `sqlite:x.db`). One with a host, a query, a fragment
 * or a %-escape is refused, saying to give the path: SQLite would read
 * `file:x.db?mode=ro` as x.db opened read-only, and it was opened as a file
 * named `x.db?mode=ro`. Other stores come with their own URL schemes; an
 * unknown scheme is refused here rather than at first use.
 */
export function databaseUrl(raw: string): { readonly kind: "sqlite" | "postgres"; readonly location: string } {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(raw)?.[1]?.toLowerCase();
  if (scheme === undefined) return { kind: "sqlite", location: raw };
  if (scheme === "file" || scheme === "sqlite") {
    const location = raw.replace(/^[a-z]+:(\/\/)?/i, "");
    // `file://host/x`: what follows the two slashes is a host, not the path's first directory.
    const hosted = /^[a-z]+:\/\//i.test(raw) && !location.startsWith("/");
    if (hosted || /[?#%]/.test(location)) {
      const path = hosted ? undefined : decodedOrAsIs(location.replace(/[?#].*$/, ""));
      throw new Error(
        `a ${scheme}: URL is taken as the path that follows it, so its host, query (?mode=ro), fragment or %-escapes would be part of the file's name ("${location}"): give the file's path${path ? ` (${path})` : ""}; the service opens it read-write`,
      );
    }
    return { kind: "sqlite", location };
  }
  if (scheme === "postgres" || scheme === "postgresql") {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new Error("not a valid postgres:// URL");
    }
    if (url.hostname === "" || url.pathname.length <= 1) throw new Error("a postgres URL needs a host and a database, for example postgres://user@127.0.0.1:5432/products");
    return { kind: "postgres", location: raw };
  }
  throw new Error(`unsupported database scheme "${scheme}:"; use a SQLite file (a path, file: or sqlite:) or a postgres:// URL`);
}
