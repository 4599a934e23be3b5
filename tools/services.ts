/**
 * The services Concord runs, in the order `npm start` starts them: the one
 * list that `npm start`, `concord status`, the database and outbox commands,
 * their --help texts and the tests that launch a service read. Adding a
 * service to them is an entry here plus the service's own code (README,
 * "Adding a service").
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { type ConsumerSpec, noServiceOfNameSaid, serviceKind, type ServiceKinds } from "../platform/events/index.js";
import type { Settings } from "../platform/config/index.js";
import { OrderServiceConsumers } from "../gen/ts/shop/orders/v1/order_service_jetstream.js";
import { ProductServiceConsumers } from "../gen/ts/shop/products/v1/product_service_jetstream.js";
import { orderSettings } from "../services/orders/config.js";
import { productSettings } from "../services/products/config.js";

/** One service as the tools know it. */
export interface ServiceEntry {
  /**
   * Its folder under services/ (started from dist/services/<name>/main.js),
   * its NATS user and `ce-source` (the proto package's name, as
   * gen/ts/concord_nats.ts has it), its certificate under DATA_DIR/tls and
   * its database (DATA_DIR/<name>.db, or database <name> with --postgres).
   */
  readonly name: string;
  /** What messages call it: "the product service". */
  readonly title: string;
  /** Prefix of its own variables: <PREFIX>_LISTEN, _METRICS_LISTEN, _DATABASE_URL, _NATS_NKEY_SEED, _ADDRESS (its address, for those calling it). */
  readonly envPrefix: string;
  /** Its gRPC service, as proto/ declares it. */
  readonly grpcService: string;
  /** Its environment (services/<name>/config.ts), which `npm start` checks before starting anything; <PREFIX>_LISTEN's default is its gRPC address. */
  readonly settings: Settings;
  /** Where `npm start` has it serve metrics when <PREFIX>_METRICS_LISTEN is unset (the service itself serves none then). */
  readonly metricsListen: string;
  /** Its durable consumers, in the order `concord status` lists them. */
  readonly consumers: Readonly<Record<string, { readonly spec: ConsumerSpec }>>;
  /** The services it calls over gRPC: `npm start` gives it <PREFIX>_ADDRESS of each, every instance's address. */
  readonly calls: readonly string[];
}

export const services = [
  {
    name: "products",
    title: "the product service",
    envPrefix: "PRODUCTS",
    grpcService: "shop.products.v1.ProductService",
    settings: productSettings,
    metricsListen: "127.0.0.1:9101",
    consumers: ProductServiceConsumers,
    calls: [],
  },
  {
    name: "orders",
    title: "the order service",
    envPrefix: "ORDERS",
    grpcService: "shop.orders.v1.OrderService",
    settings: orderSettings,
    metricsListen: "127.0.0.1:9102",
    consumers: OrderServiceConsumers,
    calls: ["products"],
  },
] as const satisfies readonly ServiceEntry[];

export type ServiceName = (typeof services)[number]["name"];

/** The services' names, in start order. */
export const serviceNames: readonly ServiceName[] = services.map((s) => s.name);

/** Whether `name` is one of the services. */
export function isServiceName(name: string | undefined): name is ServiceName {
  return (serviceNames as readonly string[]).includes(name as string);
}

/** The entry of the service named `name`; throws when there is none. */
export function serviceOf(name: string): ServiceEntry {
  const entry = services.find((s) => s.name === name);
  if (!entry) throw new Error(`no service ${JSON.stringify(name)} in tools/services.ts`);
  return entry;
}

/** Where the service serves gRPC when <PREFIX>_LISTEN is unset: the default of its own settings. */
export function grpcListenOf(entry: ServiceEntry): string {
  const setting = entry.settings[`${entry.envPrefix}_LISTEN`] as { default?: string } | undefined;
  if (typeof setting?.default !== "string") throw new Error(`${entry.name}'s settings have no ${entry.envPrefix}_LISTEN with a default`);
  return setting.default;
}

/** The folders of `root`/services that hold a main.ts: the services the code has, listed or not. */
export function serviceFolders(root: string): string[] {
  const dir = join(root, "services");
  return readdirSync(dir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(join(dir, entry.name, "main.ts")))
    .map((entry) => entry.name)
    .sort();
}

/** A service the code or the contracts have and this list lacks: `npm start` would leave it out. */
export interface UnlistedService {
  readonly name: string;
  /** Whether services/<name>/main.ts exists; when not, the contracts alone declare it (a NATS user of theirs). */
  readonly hasMain: boolean;
}

/**
 * The services of `folders` (serviceFolders) and of `declared` (those the
 * contracts declare: the NATS users of gen/ts/concord_nats.ts and its
 * services of gRPC alone) that `list` (this list) lacks, by name.
 */
export function unlistedServices(folders: readonly string[], declared: readonly string[], list: readonly ServiceEntry[] = services): UnlistedService[] {
  const names = [...new Set([...folders, ...declared])].filter((name) => !list.some((s) => s.name === name)).sort();
  return names.map((name) => ({ name, hasMain: folders.includes(name) }));
}

/**
 * What `npm start` says of `unlisted`: a refusal, when one of them has a
 * main.ts (its service written, its entry forgotten), else a note naming
 * those the contracts alone declare; undefined when there are none.
 */
export function unlistedServicesSaid(unlisted: readonly UnlistedService[]): { readonly refused: boolean; readonly message: string } | undefined {
  const written = unlisted.filter((u) => u.hasMain).map((u) => u.name);
  if (written.length > 0) {
    const files = written.map((name) => `services/${name}/main.ts`);
    return {
      refused: true,
      message:
        `${listed(files)} ${written.length === 1 ? "runs a service" : "run services"} that tools/services.ts does not list, ` +
        `so npm start would leave ${written.length === 1 ? "it" : "them"} out: add ${written.length === 1 ? "its entry" : "an entry for each"} there (README "Adding a service", step 4)`,
    };
  }
  if (unlisted.length === 0) return undefined;
  const names = unlisted.map((u) => u.name);
  const one = names.length === 1;
  return {
    refused: false,
    message:
      `the contracts declare ${listed(names)}, ${one ? "a service" : "services"} with no services/${one ? names[0] : "<name>"}/main.ts and no entry in tools/services.ts yet: ` +
      `npm start does not start ${one ? "it" : "them"}`,
  };
}

/**
 * What `npm start` refuses when an entry of `list` has no NATS user in the
 * generated authorization (`kinds`, read by `serviceKind`) and lists
 * consumers (they come from a subscription of another package than the one
 * its name says, so it would start with no stream to read them from), or is
 * not one of its services of gRPC alone either: no contract declares a service of its
 * name, a name mistyped or one `npm run gen` has not seen. Undefined when
 * there is none. An entry of gRPC alone never connects to NATS: `npm start`
 * makes it no seed.
 */
export function servicesWithoutNatsUserSaid(kinds: ServiceKinds, list: readonly ServiceEntry[] = services): string | undefined {
  const userless = list.filter((s) => serviceKind(s.name, kinds) !== "nats");
  const without = userless.filter((s) => Object.keys(s.consumers).length > 0);
  const unknown = userless.filter((s) => serviceKind(s.name, kinds) === undefined);
  if (without.length === 0 && unknown.length > 0) return unknownServicesSaid(unknown.map((s) => s.name), kinds);
  if (without.length === 0) return undefined;
  const one = without.length === 1;
  return (
    `tools/services.ts lists ${listed(without.map((s) => s.name))} with consumers, and ${one ? "it has" : "they have"} no NATS user in gen/ts/concord_nats.ts: no proto package of ${one ? "that name" : "those names"} ` +
    `(shop.${without[0].name}.v1) declares a stream or a (concord.v1.subscribe), so ${one ? "its consumers have" : "their consumers have"} nothing to read; ` +
    `give the entry its package's name (the one before its version), or run \`npm run gen\` if the contract changed`
  );
}

/** What `npm start` and `concord status` refuse when tools/services.ts lists `names` and the contracts have no service of them. */
export function unknownServicesSaid(names: readonly string[], kinds: ServiceKinds): string {
  return (
    `tools/services.ts lists ${listed(names)}, and ${noServiceOfNameSaid(names, kinds)}; ` +
    "give the entry its package's name (the one before its version), or run `npm run gen` if the contract is new"
  );
}

/** "a and b", "a, b and c": the words as a sentence lists them. */
export function listed(words: readonly string[]): string {
  return words.length < 2 ? (words[0] ?? "") : `${words.slice(0, -1).join(", ")} and ${words.at(-1)}`;
}

/** "a or b", "a, b or c". */
export function eitherOf(words: readonly string[]): string {
  return words.length < 2 ? (words[0] ?? "") : `${words.slice(0, -1).join(", ")} or ${words.at(-1)}`;
}

/** `n` in a word ("two"), as messages say it; figures past nine. */
export function counted(n: number): string {
  return ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][n] ?? String(n);
}

/** How many services there are, in a word ("two"), as messages say it. */
export const servicesCounted = counted(services.length);
