import { hostname } from "node:os";
import { databaseUrl, durationAtLeast, hostPort, natsUrl, oneOf, optionalFile, optionalHostPort, timerDuration, urlsWithoutPasswords, variableRead, withoutPassword, type ConfigOf, type Setting } from "../config/index.js";
import { seedGivenForItsFile } from "../events/index.js";
import { grpcSecurityOf, grpcSecuritySettings, type GrpcSecurity } from "./grpc-security.js";

/**
 * The variables two services on one machine must set apart, named after the
 * service (`ORDERS_LISTEN`, `ORDERS_METRICS_LISTEN`, `ORDERS_DATABASE_URL`).
 */
export type AddressSettings<P extends string> = { readonly [K in `${P}_LISTEN`]: Setting<string> } & {
  readonly [K in `${P}_METRICS_LISTEN`]: Setting<string | undefined>;
} & { readonly [K in `${P}_DATABASE_URL`]: Setting<ReturnType<typeof databaseUrl>> };

export type PlatformSettings = ReturnType<typeof platformSettings>;

/**
 * Where a service serves gRPC and metrics and where its database is, under
 * its `prefix`; the database falls back to DATABASE_URL. A service's
 * settings are these, then its own, then `platformSettings` (the order
 * --help lists them in).
 */
export function addressSettings<P extends string>(prefix: P, defaults: { readonly listen: string; readonly database: string }): AddressSettings<P> {
  return {
    [`${prefix}_LISTEN`]: { description: "host:port to serve gRPC on", default: defaults.listen, parse: hostPort },
    [`${prefix}_METRICS_LISTEN`]: {
      description: "host:port to serve Prometheus metrics on (GET /metrics); empty: none are kept",
      default: "",
      parse: optionalHostPort,
    },
    [`${prefix}_DATABASE_URL`]: {
      description: "the service's database: a SQLite file (path, file: or sqlite: URL) or a postgres:// URL",
      fallback: "DATABASE_URL",
      default: defaults.database,
      parse: databaseUrl,
      shown: withoutPassword,
    },
  } as AddressSettings<P>;
}

/** What every service reads under the same names: NATS, how long the inbox and request ids remember, gRPC security, stopping, logging. */
export function platformSettings(service: string) {
  return {
    NATS_URL: {
      description: "NATS server with JetStream, nats://host:port (several comma-separated for a cluster)",
      default: "nats://127.0.0.1:4222",
      parse: natsUrl,
      shown: urlsWithoutPasswords,
    },
    NATS_NKEY_SEED: {
      description: `file holding the service's NATS user nkey seed (mode 0600, owned by the service's user or root; or 0440, root's, readable by a group of the service's; npm start makes DATA_DIR/nats-credentials/${service}.nk); empty: connect without credentials`,
      default: "",
      parse: (raw: string) => {
        if (seedGivenForItsFile(raw) !== undefined) throw new Error("a seed itself, where the path of a file holding one goes: put the seed in a file and give its path");
        return optionalFile(raw);
      },
      // The seed itself, set where its file's path goes, would be printed into the logs.
      shown: (raw: string) => (seedGivenForItsFile(raw) === undefined ? JSON.stringify(raw) : "<a seed, not shown>"),
    },
    INBOX_RETENTION: {
      description: "how long the inbox remembers a processed event, to ignore it if it comes again (at least 1h)",
      default: "7d",
      parse: durationAtLeast("1h", "an event can come again long after it was processed"),
    },
    REQUEST_ID_RETENTION: {
      description: "how long a request_id is remembered, so that a repeated create returns its first result (at least 1h)",
      default: "24h",
      parse: durationAtLeast("1h", "clients retry for a while after a failure"),
    },
    ...grpcSecuritySettings(service),
    SHUTDOWN_TIMEOUT: { description: "how long a stop waits for in-flight calls (at most 24d)", default: "10s", parse: timerDuration("0ms") },
    INSTANCE: {
      description: "what this process is called on each of its log lines (`instance`), in its NATS connection's name and as its spans' service.instance.id, to tell the service's instances apart; empty: <host name>:<port it serves gRPC on> (<host name> pid <pid> on port 0)",
      default: "",
      parse: instanceName,
    },
    LOG_LEVEL: { description: "log level", default: "info", parse: oneOf("fatal", "error", "warn", "info", "debug", "trace", "silent") },
  };
}

/** A name for log lines: at most 100 characters, none of them a control character. */
function instanceName(raw: string): string {
  if (raw.length > 100) throw new Error(`${raw.length} characters, where at most 100 go`);
  if (/[\u0000-\u001f\u007f]/.test(raw)) throw new Error("it holds a control character (a line feed, a tab)");
  return raw;
}

/**
 * What the log lines of a service configured by `addressSettings(prefix)`
 * call this process: INSTANCE when set, else the machine's host name and
 * the port it serves gRPC on (`shop-7f9c:50052`), which tell apart both
 * instances on one machine and pods that listen on one port; on port 0
 * (the system picks one, as tests do) its process id instead. Given only
 * the settings read well of a configuration refused (ConfigError's
 * `read`), undefined when those do not say: INSTANCE bad, or unset and
 * the address bad.
 */
export function instanceOf<P extends string>(prefix: P, config: ConfigOf<AddressSettings<P>> & ConfigOf<PlatformSettings>): string;
export function instanceOf<P extends string>(prefix: P, config: Partial<ConfigOf<AddressSettings<P>> & ConfigOf<PlatformSettings>>): string | undefined;
export function instanceOf<P extends string>(prefix: P, config: Partial<ConfigOf<AddressSettings<P>> & ConfigOf<PlatformSettings>>): string | undefined {
  if (config.INSTANCE !== "") return config.INSTANCE;
  const listen = (config as unknown as Record<string, string | undefined>)[`${prefix}_LISTEN`];
  if (listen === undefined) return undefined;
  const port = listen.slice(listen.lastIndexOf(":") + 1);
  return port === "0" ? `${hostname()} pid ${process.pid}` : `${hostname()}:${port}`;
}

/** The variables a service's addresses and database were read from, for refusals that say what to change. */
export interface HostVariables {
  /** Where it serves gRPC (`ORDERS_LISTEN`). */
  readonly listen: string;
  /** Where it serves metrics (`ORDERS_METRICS_LISTEN`). */
  readonly metricsListen: string;
  /** The one its database was read from: its own, or `DATABASE_URL`, which every service falls back to. */
  readonly database: string;
  /** Its own for its database (`ORDERS_DATABASE_URL`). */
  readonly ownDatabase: string;
  /** The one its NATS URL was read from (`NATS_URL`). */
  readonly nats: string;
  /** The one naming its NATS user's nkey seed file (`NATS_NKEY_SEED`). */
  readonly natsSeed: string;
}

/** The service host's options the settings above give (see ServiceHostOptions). */
export interface HostSettingsOptions {
  readonly listen: string;
  readonly instance: string;
  readonly database: string;
  readonly variables: HostVariables;
  readonly natsUrl: string;
  readonly security: GrpcSecurity;
  readonly natsSeedFile?: string;
  readonly shutdownTimeoutMs: number;
  readonly inboxRetentionMs: number;
  readonly requestIdRetentionMs: number;
  readonly metricsListen?: string;
}

/** The values of `addressSettings(prefix)` and `platformSettings` as the service host's options. */
export function hostSettingsOf<P extends string>(prefix: P, config: ConfigOf<AddressSettings<P>> & ConfigOf<PlatformSettings>): HostSettingsOptions {
  const own = config as unknown as Record<string, unknown>;
  const metricsListen = own[`${prefix}_METRICS_LISTEN`] as string | undefined;
  return {
    listen: own[`${prefix}_LISTEN`] as string,
    instance: instanceOf(prefix, config),
    database: (own[`${prefix}_DATABASE_URL`] as ReturnType<typeof databaseUrl>).location,
    variables: {
      listen: `${prefix}_LISTEN`,
      metricsListen: `${prefix}_METRICS_LISTEN`,
      database: variableRead(config, `${prefix}_DATABASE_URL`),
      ownDatabase: `${prefix}_DATABASE_URL`,
      nats: "NATS_URL",
      natsSeed: "NATS_NKEY_SEED",
    },
    natsUrl: config.NATS_URL,
    security: grpcSecurityOf(config),
    ...(config.NATS_NKEY_SEED !== undefined && { natsSeedFile: config.NATS_NKEY_SEED }),
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT,
    inboxRetentionMs: config.INBOX_RETENTION,
    requestIdRetentionMs: config.REQUEST_ID_RETENTION,
    ...(metricsListen !== undefined && { metricsListen }),
  };
}
