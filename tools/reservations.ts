/**
 * Stock the product service holds for orders the order service does not
 * have. An order's reservation is made for its OrderPlaced, which the order
 * service publishes only once it has stored the order; so a reservation
 * whose order the order database lacks is for an order that database lost
 * (restored from a backup older than the product database) or that never
 * was (an OrderPlaced forged with the order service's credentials). The
 * order service answers such a reservation's StockReserved with
 * OrderUnknown, and the product service gives the stock back; a
 * reservation whose StockReserved is not delivered again (its stream
 * keeps 30 days) stays held. This finds those, and with --release sends
 * the OrderUnknown the order service would have.
 */
import { existsSync, realpathSync } from "node:fs";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { OrderUnknownEvent } from "../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { createEventPublisher } from "../platform/events/index.js";
import { Code, StatusError } from "../platform/errors/index.js";
import { type Database, isPostgresUrl, openDatabase, type Queryable } from "../platform/sql/index.js";
import { redact } from "../platform/sql/postgres.js";
import { existingOrderIds } from "../services/orders/store/order-store.js";
import { type HeldReservation, heldReservations } from "../services/products/store/reservation-store.js";
import { dataDir as dataDirOf } from "./client-security.js";
import { connectNats, defaultNatsUrl, endProcess, exitQuietlyOnClosedOutput, natsUrlProblem, reason, seedFileToUse } from "./event-watch.js";
import { noStartRanIn, otherThanRunningStartNote, serviceDatabase, unusedDatabaseUrlNote } from "./outbox.js";
import { parseArgsProblem, usageProblemLine } from "./parse-args-problem.js";

const program = "reservations";

const usage = `Usage: npx tsx tools/reservations.ts check [--release [--all-unknown]] [--nats URL]
       [--products-database PATH] [--orders-database PATH]

Lists, one JSON line each, the stock reservations the product service holds
for orders the order service's database does not have: orders lost when the
order database was restored from a backup older than the product database,
whose StockReserved is no longer in its stream to deliver again (README,
"Backups and restores"). Reads both databases, changes neither. Exit status:
0 none found, 1 some found (and not released), 2 bad usage or a database that
is not the service's.

  --release          publish, as the order service would, OrderUnknown for each
                     order listed: the product service gives its stock back
                     (StockReleased) and reserves nothing for it again. Sent
                     with the operator's NATS seed (DATA_DIR/nats-credentials,
                     or NATS_NKEY_SEED); exit 0 once all are published
  --all-unknown      release even when the order database has none of the
                     orders the reservations are for, which is refused
                     otherwise: that is far more often the wrong database (a
                     new one, another system's) than every order lost
  --nats URL         NATS server for --release (default as for \`npx concord\`:
                     $NATS_URL, nats://127.0.0.1:$NATS_PORT, the server of the
                     \`npm start\` running on DATA_DIR, else nats://127.0.0.1:4222)
  --products-database PATH, --orders-database PATH
                     the services' databases, SQLite files or postgres:// URLs
                     (default as for \`npx concord outbox parked\`:
                     $PRODUCTS_DATABASE_URL and $ORDERS_DATABASE_URL, else those
                     of the \`npm start -- --postgres\` running on DATA_DIR, else
                     DATA_DIR/products.db and DATA_DIR/orders.db)

Run it while both services run or not: a reservation is made only after its
order is stored, and the reservations are read before the orders.`;

const options = {
  release: { type: "boolean" },
  "all-unknown": { type: "boolean" },
  nats: { type: "string" },
  "products-database": { type: "string" },
  "orders-database": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** How many reservations are read, and their orders looked up, at a time. */
const pageSize = 500;

/** A refusal that names its problem in one line; `code` is the exit status. */
class Refusal extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

/** What `findOrphanedReservations` found. */
export interface OrphanedReservations {
  /** Reservations holding stock, all read. */
  readonly checked: number;
  /** Those whose order the order database has. */
  readonly known: number;
  /** The others, in order id order. */
  readonly orphaned: readonly HeldReservation[];
}

/** Every reservation holding stock in `products` whose order `orders` lacks, read a page at a time. */
export async function findOrphanedReservations(products: Queryable, orders: Queryable, limit = pageSize): Promise<OrphanedReservations> {
  let checked = 0;
  let known = 0;
  const orphaned: HeldReservation[] = [];
  for (let after = ""; ; ) {
    const page = await heldReservations(products, after, limit);
    if (page.length === 0) break;
    const existing = await existingOrderIds(orders, page.map((r) => r.orderId));
    for (const r of page) {
      if (existing.has(r.orderId)) known++;
      else orphaned.push(r);
    }
    checked += page.length;
    after = page[page.length - 1]!.orderId;
    if (page.length < limit) break;
  }
  return { checked, known, orphaned };
}

/** The migration each service's database has from its first start, by which it is told from another's. */
const firstMigrationOf = { products: "products_0002_reservations", orders: "orders_0001_orders" } as const;

/** `service`'s database at `path`, opened to read; refused when it does not exist or is not that service's. */
async function openServiceDatabase(service: "products" | "orders", path: string, option: string, dataDir: string): Promise<Database> {
  const shown = isPostgresUrl(path) ? redact(path) : path;
  const variable = `${service.toUpperCase()}_DATABASE_URL`;
  if (!isPostgresUrl(path) && !existsSync(path)) {
    const fix = !existsSync(dataDir) ? noStartRanIn(dataDir, option) : `name it with ${option}, or set ${variable} as for the service`;
    throw new Refusal(`the ${service} service's database ${shown} does not exist; ${fix}`, 2);
  }
  try {
    // No migration is run: a database without the service's first one is none of its, and is left as it was.
    return await openDatabase({ path, migrations: [], requireApplied: firstMigrationOf[service] });
  } catch (err) {
    if (err instanceof StatusError && err.code === Code.FAILED_PRECONDITION && /has no migration/.test(err.message)) {
      throw new Refusal(`${shown} is not the ${service} service's database (it has none of its tables); name it with ${option}, or set ${variable} as for the service (nothing was changed)`, 2);
    }
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : "";
    throw new Error(`${shown}: ${err instanceof Error ? err.message : err}${cause}`, { cause: err });
  }
}

/** Publishes OrderUnknown for each of `orphaned`, as the order service (its ce-source), with the operator's seed. */
async function release(orphaned: readonly HeldReservation[], url: string): Promise<void> {
  const nc = await connectNats(url, "reservations", seedFileToUse(undefined, "operator"));
  try {
    const publisher = createEventPublisher({ nc, source: "orders" });
    for (const r of orphaned) await publisher.publish(OrderUnknownEvent, { orderId: r.orderId, linesVersion: r.linesVersion });
  } finally {
    await nc.close();
  }
}

/** The tool with `argv`; resolves with its exit status. */
export async function reservationsCommand(argv: string[]): Promise<number> {
  const refuse = (problem: string) => {
    console.error(usageProblemLine(program, problem, "npx tsx tools/reservations.ts --help"));
    return 2;
  };
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options });
  } catch (err) {
    return refuse(parseArgsProblem(err, Object.keys(options)));
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const [command, ...more] = positionals;
  if (command !== "check") return refuse(command === undefined ? "say check" : `unknown command ${JSON.stringify(command)}: expected check`);
  if (more.length > 0) return refuse(`unexpected ${more.join(" ")}`);
  if (values["all-unknown"] && !values.release) return refuse("--all-unknown goes with --release");
  if (values.nats !== undefined && !values.release) return refuse("--nats goes with --release: the check itself reads the databases only");
  const natsProblem = values.release ? natsUrlProblem(values.nats) : undefined;
  if (natsProblem) return refuse(natsProblem);
  const dataDir = dataDirOf();
  const databases = { products: values["products-database"], orders: values["orders-database"] };
  for (const service of ["products", "orders"] as const) {
    const note = databases[service] === undefined ? (unusedDatabaseUrlNote(service) ?? otherThanRunningStartNote(service, dataDir)) : undefined;
    if (note) console.error(`${program}: ${note}`);
  }
  const opened: Database[] = [];
  try {
    const products = await openServiceDatabase("products", databases.products ?? serviceDatabase("products", dataDir), "--products-database", dataDir);
    opened.push(products);
    const orders = await openServiceDatabase("orders", databases.orders ?? serviceDatabase("orders", dataDir), "--orders-database", dataDir);
    opened.push(orders);
    const { checked, known, orphaned } = await findOrphanedReservations(products, orders);
    for (const r of orphaned) console.log(JSON.stringify({ orderId: r.orderId, linesVersion: r.linesVersion, lines: r.lines, reservedAt: new Date(r.updatedAt).toISOString() }));
    const found = `${checked} reservation(s) holding stock in ${products.location}; ${orphaned.length} for orders ${orders.location} does not have`;
    if (orphaned.length === 0) {
      console.error(`${program}: ${found}`);
      return 0;
    }
    if (!values.release) {
      console.error(`${program}: ${found}; run again with --release to give their stock back`);
      return 1;
    }
    if (known === 0 && !values["all-unknown"]) {
      throw new Refusal(`${found}, and none of the ${checked} orders reserved for: is ${orders.location} this system's order database? Name it with --orders-database; if every order was lost, add --all-unknown (nothing was released)`, 2);
    }
    const url = values.nats ?? defaultNatsUrl();
    try {
      await release(orphaned, url);
    } catch (err) {
      throw new Refusal(`${found}; publishing OrderUnknown for them failed: ${reason(err)} (those published before it are released; run again to release the rest)`, 1);
    }
    console.error(`${program}: ${found}; published OrderUnknown for each on ${url}: the product service gives their stock back as it takes them (a StockReleased each)`);
    return 0;
  } catch (err) {
    if (!(err instanceof Refusal)) throw err;
    console.error(`${program}: ${err.message}`);
    return err.code;
  } finally {
    await Promise.all(opened.map((db) => db.close()));
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  exitQuietlyOnClosedOutput();
  reservationsCommand(process.argv.slice(2)).then(endProcess, (err: unknown) => {
    console.error(`${program}: ${err instanceof Error ? err.message : err}`);
    endProcess(1);
  });
}
