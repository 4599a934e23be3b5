/**
 * Times the contract check a server runs on each request before its handler
 * (`checkDecoded(type, decoded) ?? check(type, bytes)`, as bind-service.ts
 * and the event consumers call it), on a valid message of each of a few
 * request and event types, many calls in one process. Not part of
 * `npm run bench`; it starts nothing.
 *
 *   node --expose-gc --import tsx bench/checker-calls.ts [--calls N] [--against DIR]
 *
 * --against DIR times the same calls with the checker of another checkout
 * (`git worktree add DIR <commit>`) in the same process, the two taking
 * turns type by type, the first swapped every round, so that both meet the
 * same noise; --expose-gc lets each block start with the garbage of the
 * one before collected.
 */
import { existsSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { join, resolve } from "node:path";
import { repoRoot } from "../tools/repo-root.js";

type Checker = { checkDecoded(t: string, m: unknown): unknown[] | undefined; check(t: string, b: Uint8Array): unknown[] };
type Codec = { encode(m: unknown): { finish(): Uint8Array }; decode(b: Uint8Array): unknown; fromPartial(m: unknown): unknown };

const usage = "Usage: node --expose-gc --import tsx bench/checker-calls.ts [--calls N] [--against DIR]";
const args = process.argv.slice(2);
if (args.includes("--help")) {
  console.log(usage);
  process.exit(0);
}
const refuse = (why: string): never => {
  console.error(`checker-calls: ${why} (see --help)`);
  process.exit(2);
};
const flags = new Map<string, string>();
for (let i = 0; i < args.length; i += 2) {
  if (args[i] !== "--calls" && args[i] !== "--against") refuse(`unknown argument ${JSON.stringify(args[i])}`);
  if (args[i + 1] === undefined) refuse(`${args[i]} takes a value`);
  flags.set(args[i]!, args[i + 1]!);
}
const calls = Number(flags.get("--calls") ?? 20_000);
if (!Number.isInteger(calls) || calls <= 0) refuse(`--calls must be a whole number above 0, not ${JSON.stringify(flags.get("--calls"))}`);
const against = flags.get("--against");
if (against !== undefined && !existsSync(join(against, "platform", "contracts", "message-checker.ts"))) {
  refuse(`--against ${against} is no checkout of this repository (it has no platform/contracts/message-checker.ts)`);
}

const uuid = (n: number) => `01890a5d-ac96-774b-bcce-${String(n).padStart(12, "0")}`;
const address = { recipient: "Ann Example", line1: "1 High Street", line2: "", city: "Leeds", postalCode: "LS1 1AA", countryCode: "GB" };
const lines = [{ productId: uuid(1), quantity: 2 }, { productId: uuid(2), quantity: 1 }];
const price = { currencyCode: "EUR", amountMinor: 1299 };
/** A valid message of each type timed, by its module under gen/ts and its name there. */
const samples: Array<[module: string, name: string, pkg: string, value: unknown]> = [
  ["shop/orders/v1/order_service_pb.js", "UpdateOrderRequest", "shop.orders.v1", { id: uuid(9), expectedVersion: 3, updateMask: ["shipping_address", "lines"], shippingAddress: address, lines }],
  ["shop/products/v1/product_service_pb.js", "UpdateProductRequest", "shop.products.v1", { id: uuid(9), expectedVersion: 3, updateMask: ["name", "price"], name: "Tea", price }],
  ["shop/orders/v1/order_service_pb.js", "CreateOrderRequest", "shop.orders.v1", { customerId: "c-1", lines, shippingAddress: address, requestId: uuid(5) }],
  ["shop/products/v1/product_service_pb.js", "GetProductRequest", "shop.products.v1", { id: uuid(3) }],
  ["shop/orders/v1/order_events_pb.js", "OrderPlaced", "shop.orders.v1", { orderId: uuid(4), customerId: "c-1", lines: lines.map((l) => ({ ...l, productName: "Tea", unitPrice: price, lineTotal: price })), total: price, linesVersion: 1 }],
  ["shop/products/v1/product_events_pb.js", "StockReserved", "shop.products.v1", { orderId: uuid(4), lines, linesVersion: 1 }],
];

async function load(root: string) {
  const at = (path: string) => import(pathToFileURL(join(root, path)).href);
  const { descriptorSet } = await at("gen/ts/descriptor_set.ts");
  const { createMessageChecker } = await at("platform/contracts/message-checker.ts");
  const checker = createMessageChecker(descriptorSet) as Checker;
  const cases = [];
  for (const [module, name, pkg, value] of samples) {
    const codec = (await at(`gen/ts/${module.replace(/\.js$/, ".ts")}`))[name] as Codec;
    const bytes = codec.encode(codec.fromPartial(value)).finish();
    const type = `${pkg}.${name}`;
    const decoded = codec.decode(bytes);
    const found = checker.checkDecoded(type, decoded) ?? checker.check(type, bytes);
    if (found.length > 0) throw new Error(`the sample ${type} is not valid: ${JSON.stringify(found)}`);
    cases.push({ type, run: () => checker.checkDecoded(type, decoded) ?? checker.check(type, bytes), compiled: checker.checkDecoded(type, decoded) !== undefined });
  }
  return cases;
}

const roots = [repoRoot, ...(against ? [resolve(against)] : [])];
const checkers = await Promise.all(roots.map(load));
const rounds = 7;
const times = checkers.map((cases) => cases.map(() => [] as number[]));
/** Collects the garbage of the calls before, when node runs with --expose-gc, so that no block pays for another's. */
const collect = (globalThis as { gc?: () => void }).gc ?? (() => {});
for (let round = 0; round < rounds; round++) {
  // Each type in turn, the two checkers one after the other, the one going first swapped every round.
  checkers[0]!.forEach((_, i) => {
    const order = round % 2 === 0 ? checkers.keys() : [...checkers.keys()].reverse();
    for (const c of order) {
      const k = checkers[c]![i]!;
      if (round === 0) for (let n = 0; n < calls / 10; n++) k.run();
      collect();
      const start = process.hrtime.bigint();
      for (let n = 0; n < calls; n++) k.run();
      times[c]![i]!.push(Number(process.hrtime.bigint() - start) / calls / 1000);
    }
  });
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const range = (xs: number[]) => `${median(xs).toFixed(2)} µs (${Math.min(...xs).toFixed(2)} to ${Math.max(...xs).toFixed(2)})`;
console.log(`${calls} calls a round, ${rounds} rounds; median per call (min to max of the rounds)`);
checkers[0]!.forEach((k, i) => {
  const here = `${k.type.padEnd(36)} ${k.compiled ? "compiled     " : "protovalidate"} ${range(times[0]![i]!)}`;
  const there = checkers[1] ? `   against: ${checkers[1][i]!.compiled ? "compiled     " : "protovalidate"} ${range(times[1]![i]!)}` : "";
  console.log(here + there);
});
