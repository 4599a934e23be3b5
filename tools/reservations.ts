/**
 * Where the product service's reservations and the order service's orders
 * disagree. An order's reservation is made for its OrderPlaced, which the
 * order service publishes only once it has stored the order; so a
 * reservation whose order the order database lacks is for an order that
 * database lost (restored from a backup older than the product database) or
 * that never was (an OrderPlaced forged with the order service's
 * credentials). The order service answers such a reservation's
 * StockReserved with OrderUnknown, and the product service gives the stock
 * back; a reservation whose StockReserved is not delivered again (its
 * stream keeps 30 days) stays held. The other way round, the product
 * database restored from a backup older than the order database has no
 * reservation for the orders placed after the backup, though the order
 * service has them CONFIRMED, and its consumer's position in JetStream is
 * past their OrderPlaced. This finds both; --release sends the OrderUnknown
 * (or OrderCancelled) the order service would have, --reserve the orders'
 * OrderPlaced again.
 */
import { existsSync, realpathSync } from "node:fs";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { OrderCancelledEvent, OrderPlacedEvent, OrderUnknownEvent } from "../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { createEventPublisher } from "../platform/events/index.js";
import { Code, StatusError } from "../platform/errors/index.js";
import { type Database, isNotSqliteFile, isPostgresUrl, openDatabase, type Queryable } from "../platform/sql/index.js";
import { redact } from "../platform/sql/postgres.js";
import { toOrderMessage } from "../services/orders/contract.js";
import type { OrderRecord } from "../services/orders/domain/order.js";
import { existingOrderIds, ordersAfter } from "../services/orders/store/order-store.js";
import type { ReservationRecord } from "../services/products/domain/reservation.js";
import { type HeldReservation, heldReservations, reservationsOf } from "../services/products/store/reservation-store.js";
import { dataDir as dataDirOf } from "./client-security.js";
import { connectNats, defaultNatsUrl, endProcess, exitQuietlyOnClosedOutput, natsUrlProblem, reason, seedFileToUse } from "./event-watch.js";
import { noStartRanIn, otherThanRunningStartNote, serviceDatabase, unusedDatabaseUrlNote } from "./outbox.js";
import { emptyDatabaseOption, parseArgsProblem, usageProblemLine } from "./parse-args-problem.js";

const program = "reservations";

/** Orders changed within this many seconds are left out unless --recent says otherwise: their events may be on their way. */
const defaultRecentSeconds = 60;

const usage = `Usage: npx tsx tools/reservations.ts check [--release [--all-unknown]] [--reserve]
       [--recent SECONDS] [--nats URL] [--products-database PATH] [--orders-database PATH]

Lists, one JSON line each, where the product service's stock reservations
and the order service's orders disagree, after either database was restored
from a backup older than the other's and the events that would set it right
are no longer delivered (README, "Backups and restores"):

  "problem":"no-order"       stock held for an order the order database
                             does not have (the order database the older)
  "problem":"unreserved"     a PENDING or CONFIRMED order the product
                             database holds no stock for (the product
                             database the older): its stock can be sold twice
  "problem":"lines-version"  a reservation for other lines than the order's
  "problem":"refused"        a CONFIRMED order whose stock the product
                             service refused when reserved again
  "problem":"released"       a PENDING or CONFIRMED order whose stock the
                             product service gave back for good (its
                             reservation's linesVersion null, "forGood" saying
                             no lines of the order are reserved again)
  "problem":"held"           stock held for a CANCELLED or REJECTED order

Reads both databases, changes neither; then a summary line for each side.
Exit status: 0 none found (or all found dealt with by --release and
--reserve), 1 some found and not dealt with, 2 bad usage or a database
that is not the service's.

  --release          publish, as the order service would, OrderUnknown for each
                     no-order reservation (the product service gives its stock
                     back, StockReleased, and reserves nothing for the order
                     again) and OrderCancelled for each held one. Sent with the
                     operator's NATS seed (DATA_DIR/nats-credentials, or
                     NATS_NKEY_SEED)
  --all-unknown      release even when the order database has none of the
                     orders the reservations are for, which is refused
                     otherwise: that is far more often the wrong database (a
                     new one, another system's) than every order lost
  --reserve          publish, as the order service would, the OrderPlaced of
                     each unreserved order, and of each whose reservation is
                     for older lines, from the order database's lines: the
                     product service reserves their stock as for a new order,
                     or refuses it for want of stock (a CONFIRMED order stays
                     CONFIRMED, listed as refused from then on, for a person
                     to decide). An order that already has its reservation is
                     left as it is, so running it again changes nothing
  --recent SECONDS   leave out orders changed within the last SECONDS
                     (default ${defaultRecentSeconds}): their events may still be on their way
  --nats URL         NATS server for --release and --reserve (default as for
                     \`npx concord\`: $NATS_URL, nats://127.0.0.1:$NATS_PORT, the
                     server of the \`npm start\` running on DATA_DIR, else
                     nats://127.0.0.1:4222)
  --products-database PATH, --orders-database PATH
                     the services' databases, SQLite files or postgres:// URLs
                     (default as for \`npx concord outbox parked\`:
                     $PRODUCTS_DATABASE_URL and $ORDERS_DATABASE_URL, else those
                     of the \`npm start -- --postgres\` running on DATA_DIR, else
                     DATA_DIR/products.db and DATA_DIR/orders.db)

Run it while both services run or not: a reservation is made only after its
order is stored, and the reservations are read before the orders for the
no-order search, after them for the others. Refused and released orders are
left for a person: no event the order service publishes undoes them.`;

const options = {
  release: { type: "boolean" },
  reserve: { type: "boolean" },
  recent: { type: "string" },
  "all-unknown": { type: "boolean" },
  nats: { type: "string" },
  "products-database": { type: "string" },
  "orders-database": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** How many reservations (or orders) are read, and their orders (or reservations) looked up, at a time. */
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
  await pageThrough((after) => heldReservations(products, after, limit), (r) => r.orderId, limit, async (page) => {
    const existing = await existingOrderIds(orders, page.map((r) => r.orderId));
    for (const r of page) {
      if (existing.has(r.orderId)) known++;
      else orphaned.push(r);
    }
    checked += page.length;
  });
  return { checked, known, orphaned };
}

/** Hands `take` each page `read` gives, of `limit` at most, each read after the last key of the page before ("" for the first), until one is short. */
async function pageThrough<T>(read: (after: string) => Promise<T[]>, keyOf: (item: T) => string, limit: number, take: (page: T[]) => Promise<void>): Promise<void> {
  for (let after = ""; ; ) {
    const page = await read(after);
    if (page.length === 0) return;
    await take(page);
    if (page.length < limit) return;
    after = keyOf(page[page.length - 1]!);
  }
}

/**
 * How an order's stock in the product database differs from what the order
 * database says of it:
 * - unreserved: a PENDING or CONFIRMED order the product database has no
 *   reservation for (that database restored from a backup older than the
 *   order), its stock not held;
 * - lines-version: one whose reservation (or refusal) is for other lines
 *   than the order's now;
 * - refused: a CONFIRMED order whose reservation the product service
 *   refused (its stock taken by others since, once reserved again);
 * - released: a PENDING or CONFIRMED order whose stock the product service
 *   gave back for good (it took the order's OrderCancelled or OrderUnknown:
 *   the order database restored from a backup older than those);
 * - held: a CANCELLED or REJECTED order the product database holds stock for.
 */
export type OrderProblem = "unreserved" | "lines-version" | "refused" | "released" | "held";

/** What --reserve or --release does about a problem; undefined: nothing, a person decides. */
export type Remedy = "reserve" | "release" | undefined;

/** One order `findOrdersNotHeld` found. */
export interface OrderNotHeld {
  readonly order: OrderRecord;
  readonly problem: OrderProblem;
  /** The product database's record of the order, if it has one. */
  readonly reservation: ReservationRecord | undefined;
  readonly remedy: Remedy;
}

/** What `findOrdersNotHeld` found. */
export interface OrdersNotHeld {
  /** Orders read. */
  readonly checked: number;
  /** Those left out for having changed after `settledBefore`: their events may still be on their way. */
  readonly recent: number;
  /** In order id order. */
  readonly found: readonly OrderNotHeld[];
}

/** The problem with `order`'s stock given the product database's `reservation` of it, if any. */
export function problemOf(order: OrderRecord, reservation: ReservationRecord | undefined): { problem: OrderProblem; remedy: Remedy } | undefined {
  if (order.state === "CANCELLED" || order.state === "REJECTED") return reservation?.status === "reserved" ? { problem: "held", remedy: "release" } : undefined;
  if (reservation === undefined) return { problem: "unreserved", remedy: "reserve" };
  if (reservation.status === "released") return { problem: "released", remedy: undefined };
  // Lines older than the order's are reserved again; newer ones (the order database the older) are not the tool's to undo.
  if (reservation.linesVersion !== order.linesVersion) return { problem: "lines-version", remedy: reservation.linesVersion < order.linesVersion ? "reserve" : undefined };
  // A PENDING order's refusal is on its way to reject it; a CONFIRMED order is never flipped.
  if (reservation.status === "failed" && order.state === "CONFIRMED") return { problem: "refused", remedy: undefined };
  return undefined;
}

/**
 * Every order in `orders` whose stock `products` does not hold as the order
 * says (see OrderProblem), read a page at a time, orders first: a
 * reservation is made after its order is stored, so one made meanwhile is
 * seen. Orders changed after `settledBefore` (ms since the epoch) are left
 * out.
 */
export async function findOrdersNotHeld(orders: Queryable, products: Queryable, settledBefore: number, limit = pageSize): Promise<OrdersNotHeld> {
  let checked = 0;
  let recent = 0;
  const found: OrderNotHeld[] = [];
  await pageThrough((after) => ordersAfter(orders, after, limit), (o) => o.id, limit, async (page) => {
    const settled = page.filter((o) => o.updatedAt <= settledBefore);
    recent += page.length - settled.length;
    const reservations = await reservationsOf(products, settled.map((o) => o.id));
    for (const order of settled) {
      const reservation = reservations.get(order.id);
      const problem = problemOf(order, reservation);
      if (problem) found.push({ order, reservation, ...problem });
    }
    checked += page.length;
  });
  return { checked, recent, found };
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
    if (err instanceof StatusError && err.code === Code.FAILED_PRECONDITION) throw new Refusal(err.message, 2);
    if (isNotSqliteFile(err)) {
      throw new Refusal(`${shown} is not a SQLite database (file is not a database), nor the ${service} service's; name it with ${option}, or set ${variable} as for the service (nothing was changed)`, 2);
    }
    const cause = err instanceof Error && err.cause instanceof Error && !err.message.includes(err.cause.message) ? `: ${err.cause.message}` : "";
    throw new Error(`${shown}: ${err instanceof Error ? err.message : err}${cause}`, { cause: err });
  }
}

/** What --release and --reserve publish: each an event as the order service would publish it. */
interface Remedies {
  readonly unknown: readonly HeldReservation[];
  readonly cancelled: readonly OrderRecord[];
  readonly placed: readonly OrderRecord[];
}

/**
 * Publishes, as the order service (its ce-source), with the operator's seed:
 * OrderUnknown for each reservation of an order the order database lacks,
 * OrderCancelled for each cancelled or rejected order holding stock, and
 * each order to reserve again's OrderPlaced, from its stored lines.
 */
async function publishRemedies(remedies: Remedies, url: string): Promise<void> {
  const nc = await connectNats(url, "reservations", seedFileToUse(undefined, "operator"));
  try {
    const publisher = createEventPublisher({ nc, source: "orders" });
    for (const r of remedies.unknown) await publisher.publish(OrderUnknownEvent, { orderId: r.orderId, linesVersion: r.linesVersion });
    for (const o of remedies.cancelled) await publisher.publish(OrderCancelledEvent, { orderId: o.id, customerId: o.customerId, reason: o.cancellationReason });
    for (const o of remedies.placed) {
      const { lines, total } = toOrderMessage(o);
      await publisher.publish(OrderPlacedEvent, { orderId: o.id, customerId: o.customerId, lines, total, linesVersion: o.linesVersion });
    }
  } finally {
    await nc.close();
  }
}

/** The problems `found` has, in the order OrderProblem names them, each with how many have it. */
function problemCounts(found: readonly OrderNotHeld[]): Array<[OrderProblem, number]> {
  const problems = Object.keys(forAPerson) as OrderProblem[];
  return problems.map((problem): [OrderProblem, number] => [problem, found.filter((f) => f.problem === problem).length]).filter(([, n]) => n > 0);
}

/** What is said of the orders left for a person: what each problem means, and what may be done. */
const forAPerson: Record<OrderProblem, string> = {
  unreserved: "--reserve reserves their stock",
  "lines-version": "--reserve reserves the order's lines where the product database has older ones; newer ones are not undone",
  refused: "CONFIRMED orders whose stock the product service refused, now held for others: the order service keeps them CONFIRMED and nothing reserves for them again; cancel each (CancelOrder) or add its stock (AdjustStock) and fulfil it",
  released: "orders whose stock the product service gave back for good (it took their OrderCancelled or OrderUnknown): the order database may be older than those; nothing reserves for them again, so cancel each or fulfil it by hand",
  held: "--release gives their stock back",
};

/**
 * The product database's record of an order as a check line shows it. A
 * released one carries no lines version of the order (the product service
 * stores one above any real one, so that nothing reserves for it again):
 * that is said in words instead.
 */
export function reservationShown(reservation: ReservationRecord): Record<string, unknown> {
  if (reservation.status === "released") return { status: reservation.status, linesVersion: null, forGood: releasedForGood, lines: reservation.lines };
  return { status: reservation.status, linesVersion: reservation.linesVersion, lines: reservation.lines };
}

const releasedForGood = "given back for good: no lines version of this order is reserved again";

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
  const emptyDatabase = emptyDatabaseOption(values, ["products-database", "orders-database"]);
  if (emptyDatabase) return refuse(emptyDatabase);
  if (values["all-unknown"] && !values.release) return refuse("--all-unknown goes with --release");
  const publishing = values.release || values.reserve;
  if (values.nats !== undefined && !publishing) return refuse("--nats goes with --release or --reserve: the check itself reads the databases only");
  const recentSeconds = values.recent === undefined ? defaultRecentSeconds : Number(values.recent);
  if (!/^\d+$/.test(values.recent ?? "0") || !Number.isSafeInteger(recentSeconds)) return refuse(`--recent takes a whole number of seconds, not ${JSON.stringify(values.recent)}`);
  const natsProblem = publishing ? natsUrlProblem(values.nats) : undefined;
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
    const notHeld = await findOrdersNotHeld(orders, products, Date.now() - recentSeconds * 1000);
    for (const r of orphaned) console.log(JSON.stringify({ orderId: r.orderId, problem: "no-order", linesVersion: r.linesVersion, lines: r.lines, reservedAt: new Date(r.updatedAt).toISOString() }));
    for (const { order, problem, reservation, remedy } of notHeld.found) {
      const lines = order.lines.map((l) => ({ productId: l.productId, quantity: l.quantity }));
      const held = reservation && reservationShown(reservation);
      console.log(JSON.stringify({ orderId: order.id, problem, state: order.state, linesVersion: order.linesVersion, lines, reservation: held ?? null, remedy: remedy ? `--${remedy}` : null }));
    }
    const found = `${checked} reservation(s) holding stock in ${products.location}; ${orphaned.length} for orders ${orders.location} does not have`;
    const recent = notHeld.recent > 0 ? ` (${notHeld.recent} changed in the last ${recentSeconds} s left out: their events may be on their way)` : "";
    const foundOrders = `${notHeld.checked} order(s) in ${orders.location}${recent}; ${notHeld.found.length} whose stock ${products.location} does not hold as the order says${notHeld.found.length > 0 ? ` (${problemCounts(notHeld.found).map(([problem, n]) => `${n} ${problem}`).join(", ")})` : ""}`;
    if (orphaned.length === 0 && notHeld.found.length === 0) {
      console.error(`${program}: ${found}\n${program}: ${foundOrders}`);
      return 0;
    }
    if (orphaned.length > 0 && values.release && known === 0 && !values["all-unknown"]) {
      throw new Refusal(`${found}, and none of the ${checked} orders reserved for: is ${orders.location} this system's order database? Name it with --orders-database; if every order was lost, add --all-unknown (nothing was released)`, 2);
    }
    const remedies: Remedies = {
      unknown: values.release ? orphaned : [],
      cancelled: values.release ? notHeld.found.filter((f) => f.remedy === "release").map((f) => f.order) : [],
      placed: values.reserve ? notHeld.found.filter((f) => f.remedy === "reserve").map((f) => f.order) : [],
    };
    const url = values.nats ?? defaultNatsUrl();
    const sent = remedies.unknown.length + remedies.cancelled.length + remedies.placed.length;
    if (sent > 0) {
      try {
        await publishRemedies(remedies, url);
      } catch (err) {
        throw new Refusal(`${found}\n${program}: ${foundOrders}; publishing their events failed: ${reason(err)} (those published before it take effect; run again for the rest)`, 1);
      }
    }
    const done: Array<[number, string, string]> = [
      [remedies.unknown.length, "OrderUnknown for each order it does not have", "the product service gives their stock back as it takes them (a StockReleased each)"],
      [remedies.cancelled.length, `OrderCancelled for ${remedies.cancelled.length} cancelled or rejected order(s)`, "the product service gives their stock back"],
      [
        remedies.placed.length,
        `OrderPlaced for ${remedies.placed.length} order(s), from the order database's lines`,
        "the product service reserves their stock (StockReserved), or refuses it for want of stock (StockReservationFailed, which rejects a PENDING order and leaves a CONFIRMED one as it is): run check again to see which",
      ],
    ];
    console.error(`${program}: ${found}${orphaned.length > 0 && !values.release ? "; run again with --release to give their stock back" : ""}`);
    console.error(`${program}: ${foundOrders}`);
    for (const [n, what, then] of done) if (n > 0) console.error(`${program}: published ${what} on ${url}, as the order service would: ${then}`);
    const taken = new Set<OrderRecord>([...remedies.cancelled, ...remedies.placed]);
    const left = notHeld.found.filter((f) => !taken.has(f.order));
    for (const [problem, n] of problemCounts(left)) console.error(`${program}: ${n} ${problem}: ${forAPerson[problem]}`);
    return left.length > 0 || (orphaned.length > 0 && !values.release) ? 1 : 0;
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
