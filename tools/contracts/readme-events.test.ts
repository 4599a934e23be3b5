import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { OrderServiceConsumers } from "../../gen/ts/shop/orders/v1/order_service_jetstream.js";
import { ProductServiceConsumers } from "../../gen/ts/shop/products/v1/product_service_jetstream.js";
import { backoffDelay } from "../../platform/events/retry.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { protoFile, streamOption } from "../protoc-gen-events/compile-snippets.js";
import { repoRoot } from "../repo-root.js";
import { checkReadmeEventTable, checkReadmeNatsTable, eventTableEnd, eventTableOfContracts, eventTableStart, natsTableEnd, natsTableOfContracts, natsTableStart, withEventTable, withNatsTable } from "./readme-events.js";

const tmp = tempDirForSuite("concord-readme-events-");

/** A proto/ of `snippets` next to the real concord/v1/options.proto. */
function protoDir(name: string, snippets: Record<string, string>): string {
  const dir = join(tmp, name);
  for (const [path, source] of Object.entries({ ...snippets, "concord/v1/options.proto": readFileSync(join(repoRoot, "proto/concord/v1/options.proto"), "utf8") })) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), source);
  }
  return dir;
}

/** A copy of README.md with `edit` applied, as tmp/<name>/README.md. */
function readmeCopy(name: string, edit: (readme: string) => string = (r) => r): string {
  const path = join(tmp, name, "README.md");
  mkdirSync(dirname(path), { recursive: true });
  copyFileSync(join(repoRoot, "README.md"), path);
  writeFileSync(path, edit(readFileSync(path, "utf8")));
  return path;
}

describe("the README's event table", () => {
  it("has a row per stream with its subjects and its events in declaration order, then the dead letter stream", () => {
    const dir = protoDir("two-streams", {
      "zeta/v1/z.proto": protoFile(
        "zeta.v1",
        `${streamOption("ZETA", ["zeta.v1.>", "zeta.legacy.>"])}
message Wound { option (concord.v1.event) = { subject: "zeta.v1.wound" }; }
message Armed { option (concord.v1.event) = { subject: "zeta.v1.armed" }; }
message NotAnEvent { string id = 1; }
message Counted { option (concord.v1.event) = { subject: "zeta.v1.counted.{n}" }; int64 n = 1; }`,
      ),
      "alpha/v1/a.proto": protoFile("alpha.v1", streamOption("ALPHA", ["alpha.v1.>"])),
    });
    expect(eventTableOfContracts(dir)).toBe(
      [
        "| stream | subjects | events |",
        "|---|---|---|",
        "| `ALPHA` | `alpha.v1.>` | none yet |",
        "| `ZETA` | `zeta.v1.>`, `zeta.legacy.>` | Wound, Armed, Counted |",
        "| `CONCORD_DLQ` | `concord.dlq.<stream>.<consumer>` | events that could not be handled |",
      ].join("\n"),
    );
  });

  it("in README.md is the one proto/ produces", () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const table = eventTableOfContracts();
    expect(table).toContain("| `SHOP_ORDERS` | `shop.orders.v1.>` | OrderPlaced, OrderUpdated, OrderConfirmed, OrderRejected, OrderCancelled, OrderUnknown |");
    expect(readme).toContain(`${eventTableStart}\n\n${table}\n\n${eventTableEnd}`);
    expect(checkReadmeEventTable(join(repoRoot, "README.md"), table)).toEqual([]);
  });

  it("fails gen:check's comparison, naming README.md, when the table drifted from the contracts", () => {
    const table = eventTableOfContracts();
    const dropped = readmeCopy("dropped-event", (r) => r.replace("OrderPlaced, OrderUpdated, ", "OrderPlaced, "));
    expect(checkReadmeEventTable(dropped, table)).toEqual(["README.md (event table)"]);
    const extraRow = readmeCopy("extra-row", (r) => r.replace(`${eventTableEnd}`, `| \`SHOP_RETURNS\` | \`shop.returns.v1.>\` | ReturnOpened |\n${eventTableEnd}`));
    expect(checkReadmeEventTable(extraRow, table)).toEqual(["README.md (event table)"]);
  });

  it("replaces only what lies between the markers", () => {
    const drifted = readFileSync(readmeCopy("to-rewrite", (r) => r.replace("OrderPlaced, OrderUpdated, ", "")), "utf8");
    const table = eventTableOfContracts();
    const rewritten = withEventTable(drifted, table);
    expect(rewritten).toBe(readFileSync(join(repoRoot, "README.md"), "utf8"));
    expect(withEventTable("# Title\n\nBefore.\n\n" + eventTableStart + "\nold\n" + eventTableEnd + "\n\nAfter.\n", "| t |")).toBe(
      `# Title\n\nBefore.\n\n${eventTableStart}\n\n| t |\n\n${eventTableEnd}\n\nAfter.\n`,
    );
  });

  it("refuses a README whose markers are missing, repeated or out of order", () => {
    const message = /README\.md needs the event table between the lines/;
    expect(() => withEventTable("no table here", "| t |")).toThrow(message);
    expect(() => withEventTable(`${eventTableStart}\n${eventTableEnd}\n${eventTableEnd}`, "| t |")).toThrow(message);
    expect(() => withEventTable(`${eventTableEnd}\n${eventTableStart}`, "| t |")).toThrow(message);
    const unmarked = readmeCopy("unmarked", (r) => r.replace(eventTableStart, ""));
    expect(() => checkReadmeEventTable(unmarked, eventTableOfContracts())).toThrow(message);
  });
});

describe("the README's NATS users' table", () => {
  it("has a row per service user with its events and its durables, from the contracts, so a new event or subscriber needs no hand edit", () => {
    const dir = protoDir("nats-users", {
      "shop/returns/v1/returns.proto": protoFile(
        "shop.returns.v1",
        `${streamOption("SHOP_RETURNS", ["shop.returns.v1.>"])}
message ReturnOpened { option (concord.v1.event) = { subject: "shop.returns.v1.return.{return_id}.opened" }; string return_id = 1; }
service ReturnService { option (concord.v1.subscribe) = { event: "shop.returns.v1.ReturnOpened" durable: "returns-return-opened" }; }`,
      ),
    });
    const table = natsTableOfContracts(dir);
    expect(table).toContain("| `returns` | `shop.returns.v1.return.*.opened`, its dead letters (`concord.dlq.<stream>.<its durable>`) | `SHOP_RETURNS`: returns-return-opened |");
    expect(table.split("\n").map((row) => row.split(" | ")[0])).toEqual(["| user", "|---|---|---|", "| `returns`", "| `observer`", "| `operator`"]);
  });

  it("in README.md is the one proto/ produces, and gen:check's comparison names it when a row drifted", () => {
    const table = natsTableOfContracts();
    expect(readFileSync(join(repoRoot, "README.md"), "utf8")).toContain(`${natsTableStart}\n\n${table}\n\n${natsTableEnd}`);
    expect(checkReadmeNatsTable(join(repoRoot, "README.md"), table)).toEqual([]);
    const stale = readmeCopy("stale-nats-row", (r) => r.replace("`shop.orders.v1.order.*.confirmed`, ", ""));
    expect(checkReadmeNatsTable(stale, table)).toEqual(["README.md (NATS users' table)"]);
    expect(withNatsTable(readFileSync(stale, "utf8"), table)).toBe(readFileSync(join(repoRoot, "README.md"), "utf8"));
    const unmarked = readmeCopy("unmarked-nats", (r) => r.replace(natsTableEnd, ""));
    expect(() => checkReadmeNatsTable(unmarked, table)).toThrow(/README\.md needs the NATS users' table between the lines[\s\S]*section "NATS: who may do what"/);
  });
});

describe("the README's figure of a handler that keeps failing", () => {
  it("is how long the contracts' consumers take from an event's first attempt to its dead letter", () => {
    const specs = [...Object.values(ProductServiceConsumers), ...Object.values(OrderServiceConsumers)].map((c) => c.spec);
    // The pauses between attempts: after the last one, the event is filed at once.
    const pausesMs = specs.map((spec) => Array.from({ length: spec.maxDeliver - 1 }, (_, i) => backoffDelay(spec.backoffMs, i + 1)).reduce((a, b) => a + b, 0));
    expect(new Set(pausesMs).size).toBe(1);
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8").replace(/\s+/g, " ");
    expect(readme).toContain(`after ${specs[0].maxDeliver} attempts (about ${pausesMs[0] / 1000} s`);
  });
});
