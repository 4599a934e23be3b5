import { join } from "node:path";
import type { ChannelCredentials } from "@grpc/grpc-js";
import { waitForServing } from "../../platform/grpc/index.js";
import { serviceCommand, type ServiceName } from "../../tools/service-launch.js";
import { freePort, type ManagedProcess, startProcess } from "./proc.js";

export interface ServiceLaunch {
  /** Process name, also the log file's and the profile's name. */
  readonly name: string;
  readonly logDir: string;
  readonly dataDir: string;
  /** LOG_LEVEL of the service; production default is info. */
  readonly logLevel: string;
  readonly natsUrl?: string;
  /** Write a V8 CPU profile here when the process exits (`node --cpu-prof`). */
  readonly profileDir?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** host:port to listen on; a free loopback port by default. */
  readonly address?: string;
  /** The service's database: a postgres:// URL; a SQLite file `<name>.db` in dataDir by default. */
  readonly database?: string;
  /** How to reach its health service when `env` turns TLS on (plaintext and no tokens unless `env` says otherwise). */
  readonly healthCredentials?: ChannelCredentials;
}

export interface ServiceProcess {
  readonly address: string;
  readonly process: ManagedProcess;
  readonly logLevel: string;
}

/**
 * One directory per process: V8 writes a profile per thread (tsx's loader
 * hooks run on a worker thread), and `profileOf` picks the main thread's.
 */
export const profileArgs = (launch: { name: string; profileDir?: string }) =>
  launch.profileDir ? ["--cpu-prof", "--cpu-prof-dir", join(launch.profileDir, launch.name)] : [];

async function startService(launch: ServiceLaunch, service: ServiceName, env: NodeJS.ProcessEnv, address: string): Promise<ServiceProcess> {
  const { command, args } = serviceCommand(service, profileArgs(launch));
  const proc = startProcess({
    name: launch.name,
    command,
    args,
    env: { ...process.env, GRPC_INSECURE: "1", GRPC_AUTH: "none", ...launch.env, ...env, LOG_LEVEL: launch.logLevel, ...(launch.natsUrl && { NATS_URL: launch.natsUrl }) },
    logDir: launch.logDir,
  });
  try {
    await Promise.race([
      waitForServing(address, 30_000, launch.healthCredentials),
      proc.exited.then(() => Promise.reject(new Error(`${launch.name} exited (${proc.ending()}) during start-up; see ${proc.logFile}`))),
    ]);
  } catch (err) {
    await proc.stop(2_000);
    throw err;
  }
  return { address, process: proc, logLevel: launch.logLevel };
}

/** The real product service, as production (`npm start`) runs it: compiled, from dist/. */
export async function startProductsProcess(launch: ServiceLaunch): Promise<ServiceProcess> {
  const address = launch.address ?? `127.0.0.1:${await freePort()}`;
  return startService(launch, "products", { PRODUCTS_LISTEN: address, PRODUCTS_DATABASE_URL: launch.database ?? join(launch.dataDir, `${launch.name}.db`) }, address);
}

/** The real order service, talking to the product service at `productsAddress`. */
export async function startOrdersProcess(launch: ServiceLaunch & { readonly productsAddress: string }): Promise<ServiceProcess> {
  const address = launch.address ?? `127.0.0.1:${await freePort()}`;
  return startService(
    launch,
    "orders",
    { ORDERS_LISTEN: address, ORDERS_DATABASE_URL: launch.database ?? join(launch.dataDir, `${launch.name}.db`), PRODUCTS_ADDRESS: launch.productsAddress },
    address,
  );
}
