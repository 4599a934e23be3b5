/**
 * Where a running `npm start` has put each instance of each service, and the
 * NATS server(s) it gave them, kept in DATA_DIR/start-services.json while it
 * runs, so that the tools find every instance (`--instances N` moves instance
 * i two ports above instance i-1) without being told how many there are, and
 * NATS on whatever NATS_PORT (or --cluster) that start was given; and whether
 * it is still starting them (an instance not answering then is not yet up,
 * rather than failed). A start of `--postgres-only` records only that it
 * runs PostgreSQL alone.
 */
import { readFileSync, rmSync } from "node:fs";
import { replaceOwnerFile } from "./nats/server-config.js";
import { join } from "node:path";
import { serviceNames, type ServiceName } from "./services.js";

/** One instance of a service: its gRPC address and its metrics endpoint (host:port). */
export interface StartedInstance {
  readonly grpc: string;
  readonly metrics: string;
}

export type StartedServices = Readonly<Record<ServiceName, readonly StartedInstance[]>>;

/**
 * The services of a running `npm start`, whether it is still starting them,
 * the NATS URL(s) it gave them (comma-separated; unset until it knows them),
 * and the INBOX_RETENTION it gave them, when it was set.
 */
export type StartedRecord = StartedServices & { readonly starting: boolean; readonly nats?: string; readonly inboxRetention?: string };

const fileIn = (dataDir: string) => join(dataDir, "start-services.json");

/** `host:port` with the port moved up by `by`: instance i of a service is 2i above the first. */
export function shiftPort(hostPort: string, by: number): string {
  const match = /^(.*):(\d+)$/.exec(hostPort);
  if (!match) throw new Error(`${hostPort} is not host:port`);
  return `${match[1]}:${Number(match[2]) + by}`;
}

/** Whether `pid` is a running `npm start` (tools/start.ts), not just any process that got its number. */
export function isStartScript(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").some((arg) => arg.endsWith(join("tools", "start.ts")));
  } catch {
    return false;
  }
}

/**
 * Records this process's services in `dataDir` as starting (replacing a file
 * a start killed outright left), with the INBOX_RETENTION given them, if any
 * (for the tools that replay events, which go by it); `nats` records the
 * NATS URL(s) given to the services once they are known, `up` records the
 * services as up once they serve. Removed at exit.
 */
export function recordStartedServices(dataDir: string, services: StartedServices, inboxRetention?: string): { nats(url: string): void; up(): void } {
  let starting = true;
  let nats: string | undefined;
  const write = () => writeRecord(dataDir, { starting, ...(nats !== undefined && { nats }), ...(inboxRetention && { inboxRetention }), ...services });
  write();
  removeAtExit(dataDir);
  return {
    nats: (url) => {
      nats = url;
      write();
    },
    up: () => {
      starting = false;
      write();
    },
  };
}

/**
 * Records in `dataDir` that this process (`npm start -- --postgres-only`)
 * runs the PostgreSQL server alone, with no service and no NATS, for
 * `concord status` to say so (see `runsPostgresOnly`). Removed at exit.
 */
export function recordPostgresOnly(dataDir: string): void {
  writeRecord(dataDir, { postgresOnly: true });
  removeAtExit(dataDir);
}

/**
 * Whether the `npm start` running on `dataDir` is one of `--postgres-only`,
 * which runs PostgreSQL alone (its record says so, and its process runs).
 */
export function runsPostgresOnly(dataDir: string): boolean {
  const record = readStartedBy(dataDir);
  return record?.postgresOnly === true && Number.isInteger(record.pid) && isStartScript(record.pid);
}

/** Writes this process's record in `dataDir` whole (through a new file renamed into place), replacing any there. */
function writeRecord(dataDir: string, fields: object): void {
  const file = fileIn(dataDir);
  // Through a file of this process's own name: two starts on one DATA_DIR do not write into each other's.
  replaceOwnerFile(file, `${JSON.stringify({ pid: process.pid, ...fields })}\n`, `${file}.${process.pid}`);
}

/** Removes the record in `dataDir` when this process exits, unless another start's has replaced it. */
function removeAtExit(dataDir: string): void {
  process.once("exit", () => {
    if (readStartedBy(dataDir)?.pid === process.pid) rmSync(fileIn(dataDir), { force: true });
  });
}

type StoredRecord = StartedServices & { pid: number; starting?: unknown; nats?: unknown; inboxRetention?: unknown; postgresOnly?: unknown };

function readStartedBy(dataDir: string): StoredRecord | undefined {
  try {
    return JSON.parse(readFileSync(fileIn(dataDir), "utf8")) as StoredRecord;
  } catch {
    return undefined;
  }
}

/**
 * The services of the `npm start` running on `dataDir`, whether it is still
 * starting them, and the NATS URL(s) it gave them; undefined when none runs there (no file, one that
 * cannot be read, or one a start killed outright left behind).
 */
export function readStartedServices(dataDir: string): StartedRecord | undefined {
  const record = readStartedBy(dataDir);
  if (!record || !Number.isInteger(record.pid) || !isStartScript(record.pid)) return undefined;
  const instances = (list: unknown): StartedInstance[] | undefined =>
    Array.isArray(list) && list.length > 0 && list.every((i) => typeof i?.grpc === "string" && typeof i?.metrics === "string") ? list : undefined;
  const services: Partial<Record<ServiceName, StartedInstance[]>> = {};
  for (const name of serviceNames) {
    const listed = instances(record[name]);
    // A start of before a service was added leaves it out: it is no start of these services.
    if (!listed) return undefined;
    services[name] = listed;
  }
  return {
    ...(services as Record<ServiceName, StartedInstance[]>),
    starting: record.starting === true,
    ...(typeof record.nats === "string" && record.nats !== "" && { nats: record.nats }),
    ...(typeof record.inboxRetention === "string" && record.inboxRetention !== "" && { inboxRetention: record.inboxRetention }),
  };
}
