import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { hostPort, type Settings } from "../platform/config/index.js";
import { helps, helpsFor, usage } from "./concord/help.js";
import { brokenAtLast, refilledWhereTooWide } from "./help-text.js";
import { outboxUsage } from "./outbox.js";
import { repoRoot } from "./repo-root.js";
import { services, type ServiceEntry } from "./services.js";
import { startUsage } from "./start-usage.js";

/** A third service as README "Adding a service" adds it: only what the help texts read of its entry is real. */
const shipping: ServiceEntry = {
  name: "shipping",
  title: "the shipping service",
  envPrefix: "SHIPPING",
  grpcService: "shop.shipping.v1.ShippingService",
  settings: { SHIPPING_LISTEN: { description: "gRPC address", default: "127.0.0.1:50070", parse: hostPort } } satisfies Settings,
  metricsListen: "127.0.0.1:9120",
  consumers: {},
  calls: ["orders"],
};
/** The shop's two services, as the texts below were written for: a service added to tools/services.ts leaves these cases as they are. */
const shop = services.filter((s) => s.name === "products" || s.name === "orders");
const three = [...shop, shipping];

/** The text with its line breaks and indents as single spaces, for what a sentence says wherever its lines break. */
const flowing = (text: string) => text.replace(/\s+/g, " ");

describe("the --help texts that name the services", () => {
  it("name a service added to tools/services.ts: npm start's", () => {
    const usage = startUsage(three);
    expect(flowing(usage)).toContain("Starts nats-server (unless NATS_URL is set), the product service, the order service and the shipping service.");
    expect(flowing(usage)).toContain("It is refused with PRODUCTS_DATABASE_URL, ORDERS_DATABASE_URL or SHIPPING_DATABASE_URL set, which name other databases");
    expect(flowing(usage)).toContain(
      "(products 50051, 50053, ...; orders 50052, 50054, ...; shipping 50070, 50072, ...), and the order service's instances spread their calls over all the product service's; the shipping service's instances spread their calls over all the order service's",
    );
    expect(flowing(usage)).toContain("unless PRODUCTS_NATS_NKEY_SEED, ORDERS_NATS_NKEY_SEED and SHIPPING_NATS_NKEY_SEED name their seed files");
    expect(usage).toContain("\n  SHIPPING_LISTEN   shipping service address (default 127.0.0.1:50070)\n");
    expect(usage).toContain("\n  PRODUCTS_METRICS_LISTEN, ORDERS_METRICS_LISTEN, SHIPPING_METRICS_LISTEN\n");
    expect(flowing(usage)).toContain("defaults 127.0.0.1:9101, 127.0.0.1:9102 and 127.0.0.1:9120, moved up by 2 per instance");
    expect(usage).toContain("\n  PRODUCTS_DATABASE_URL, ORDERS_DATABASE_URL, SHIPPING_DATABASE_URL\n");
    expect(flowing(usage)).toContain("not used: the three need a database each");
    // The longer sentences are broken again, not left running past the text's width.
    expect(usage.split("\n").filter((line) => line.length > 90)).toEqual([]);
  });

  it("name a service added to tools/services.ts: concord's and the outbox tool's", () => {
    const texts = helpsFor(three);
    expect(texts.status).toContain("[--orders HOST:PORT[,...]] [--shipping HOST:PORT[,...]]\n");
    expect(texts.status).toContain("[--orders-metrics HOST:PORT[,...]] [--shipping-metrics HOST:PORT[,...]]\n");
    expect(flowing(texts.status!)).toContain("unless PRODUCTS_LISTEN, ORDERS_LISTEN, SHIPPING_LISTEN or their _METRICS_LISTEN name another address");
    expect(texts.status).toContain(
      "  --shipping HOST:PORT[,...]          the shipping service's gRPC address, one per instance\n" +
        "                                      (default: as above; without a start, $SHIPPING_LISTEN or 127.0.0.1:50070)\n",
    );
    expect(texts.status).toContain(
      "  --shipping-metrics HOST:PORT[,...]  the shipping service's metrics endpoint, as above\n" +
        "                                      (default: $SHIPPING_METRICS_LISTEN or 127.0.0.1:9120, ...)\n",
    );
    for (const command of ["database backup", "database restore"]) expect(texts[command], command).toMatch(new RegExp(`^Usage: npx concord ${command} \\(products\\|orders\\|shipping\\) FILE`));
    expect(texts["database backup"]).toContain("$PRODUCTS_DATABASE_URL, $ORDERS_DATABASE_URL or\n                      $SHIPPING_DATABASE_URL, else the database");
    expect(texts["outbox parked"]).toContain("npx concord outbox parked retry (products|orders|shipping|--database PATH)");
    expect(texts["outbox parked"]).toContain("$PRODUCTS_DATABASE_URL, $ORDERS_DATABASE_URL or $SHIPPING_DATABASE_URL, else the");
    // Words that counted two services, wrong once there is a third.
    for (const [command, text] of Object.entries(texts)) expect(flowing(text), command).not.toMatch(/\bthe other service\b|\bboth services\b/);
    const outbox = outboxUsage(three);
    expect(outbox).toMatch(/^Usage: npx tsx tools\/outbox\.ts <products\|orders\|shipping\|--database PATH>/);
    expect(outbox).toContain("$PRODUCTS_DATABASE_URL, $ORDERS_DATABASE_URL or\n                          $SHIPPING_DATABASE_URL, else the database");
  });

  it("say for the shop's two services what they said when written by hand", () => {
    const helpsOfShop = helpsFor(shop);
    expect(startUsage(shop)).toContain("Starts nats-server (unless NATS_URL is set), the product service and the order\nservice. nats-server runs");
    expect(startUsage(shop)).toContain(
      "                    (products 50051, 50053, ...; orders 50052, 50054, ...), and the\n" +
        "                    order service's instances spread their calls over all the\n" +
        "                    product service's. Each instance's log lines name it as this script\n" +
        "                    does (\"instance\":\"products#2\")\n",
    );
    expect(startUsage(shop)).toContain("\n  PRODUCTS_LISTEN   product service address (default 127.0.0.1:50051)\n  ORDERS_LISTEN     order service address (default 127.0.0.1:50052)\n");
    expect(startUsage(shop)).toContain("unless PRODUCTS_NATS_NKEY_SEED\n                    and ORDERS_NATS_NKEY_SEED name their seed files");
    expect(helpsOfShop.status).toMatch(/^Usage: npx concord status \[--nats URL\] \[--products HOST:PORT\[,HOST:PORT\.\.\.\]\] \[--orders HOST:PORT\[,\.\.\.\]\]\n {27}\[--products-metrics/);
    expect(helpsOfShop.status).toContain(
      "  --products-metrics HOST:PORT[,...]  the product service's metrics endpoint, one per instance in\n" +
        "                                      the same order (default: $PRODUCTS_METRICS_LISTEN or\n" +
        "                                      127.0.0.1:9101, 2 ports up for each next instance)\n",
    );
    expect(helpsOfShop["database backup"]).toContain("under `npm start`, $PRODUCTS_DATABASE_URL or\n                      $ORDERS_DATABASE_URL, else the database");
    expect(outboxUsage(shop)).toContain("$PRODUCTS_DATABASE_URL or\n                          $ORDERS_DATABASE_URL, else the database");
  });

  it("say what the commands do today: a database of another service refused by its schema_owner, a redelivery after a restore, a span id shown, a dead letter's reason printed", () => {
    // outbox parked's said nothing of the first, and the outbox tool's said "the other service's", wrong with a third.
    for (const text of [helpsFor(three)["outbox parked"]!, outboxUsage(three)]) expect(flowing(text)).toContain("one that holds no outbox, or that is another service's (its schema_owner), is refused (exit 2), left as it was");
    expect(flowing(usage)).toContain("consumer redeliver DURABLE publish again the events a consumer's server stopped delivering (a max_deliver reached), or those it handled after a backup that was restored");
    expect(usage).toContain("traces show TEXT            print the traces of an order (or a trace or span id) as a tree\n");
    expect(flowing(helps["events tail"]!)).toContain("(stream, sequence, subject, type, id, source, time, a dead letter's reason, decoded payload)");
  });

  it("write npm start's options after npm's --, as a start takes them (`npm start --cluster` is refused, exit 2)", () => {
    const watchEvents = execFileSync(process.execPath, ["--import", "tsx", "tools/watch-events.ts", "--help"], { cwd: repoRoot, encoding: "utf8" });
    const texts = { ...helps, "watch-events": watchEvents, start: startUsage(), outbox: outboxUsage() };
    for (const [command, text] of Object.entries(texts)) expect(flowing(text), command).not.toMatch(/npm start --[a-z]/);
    expect(flowing(watchEvents)).toContain("the cluster's other two when the `npm start -- --cluster` running on DATA_DIR put its first there");
  });

  it("name each npm script as it is typed (`npm run gen:check`, `npm start`), never the file npm runs for it (`tsx tools/gen.ts`)", () => {
    const { scripts } = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { scripts: Record<string, string> };
    const typed = (script: string) => (script === "start" || script === "test" ? `npm ${script}` : `npm run ${script}`);
    // The scripts that run a file of ours (tsx FILE ARGS, or node --import tsx FILE ARGS), with --help after their own arguments as npm puts it.
    const ours = Object.entries(scripts).flatMap(([script, command]) => {
      const words = command.replace(/^exec /, "").split(" ");
      const at = words[0] === "tsx" ? 1 : words[0] === "node" && words[1] === "--import" && words[2] === "tsx" ? 3 : -1;
      return at < 0 ? [] : [{ script, file: words[at]!, args: words.slice(at + 1) }];
    });
    expect(ours.map((s) => s.script)).toEqual(expect.arrayContaining(["start", "gen", "gen:check", "gen:image", "lint:proto", "breaking", "bench"]));
    for (const { script, file, args } of ours) {
      const text = execFileSync(process.execPath, ["--import", "tsx", file, ...args, "--help"], { cwd: repoRoot, encoding: "utf8", timeout: 60_000 });
      const usageLines = text.slice(0, text.indexOf("\n\n")).replace(/^Usage: /, "").split("\n").map((line) => line.trim());
      expect(usageLines.some((line) => line === typed(script) || line.startsWith(`${typed(script)} `)), `${script}: ${usageLines.join(" | ")}`).toBe(true);
      expect(usageLines.filter((line) => /^(npx )?tsx |^node /.test(line)), script).toEqual([]);
    }
  }, 180_000);

  it("say to keep a database's password off the command line, where --database takes a postgres:// URL", () => {
    for (const text of [outboxUsage(), helps["outbox parked"]]) expect(text.replace(/\s+/g, " ")).toContain("a password in a URL given here shows in the process list (ps): leave it out and set PGPASSWORD (or ~/.pgpass), or set the variable");
  });
});

describe("refilledWhereTooWide", () => {
  it("leaves a text whose lines fit as it is, and fills a paragraph again from its first line too wide, as deep as its continuation", () => {
    const fits = "Usage: x\n  --a   one\n        two";
    expect(refilledWhereTooWide(fits, 20)).toBe(fits);
    // An option's description, to the next option.
    expect(refilledWhereTooWide("  --a   one two three four five\n        six\n  --b   seven", 20)).toBe("  --a   one two\n        three four\n        five six\n  --b   seven");
    // A paragraph to the next blank line; the lines before the one too wide as they were.
    expect(refilledWhereTooWide("Short one\nStarts one two three four\nfive\n\nsix", 12)).toBe("Short one\nStarts one\ntwo three\nfour five\n\nsix");
    // A description's line too wide, to the end of the description.
    expect(refilledWhereTooWide("  opt  x\n       aaa bbb ccc ddd\n       eee\n  opt2", 14)).toBe("  opt  x\n       aaa bbb\n       ccc ddd\n       eee\n  opt2");
  });

  it("breaks a list before or after its last word, or leaves one item as it is", () => {
    expect(brokenAtLast("A, B and C", "and", "before", 2)).toBe("A, B\n  and C");
    expect(brokenAtLast("A, B or C", "or", "after", 2)).toBe("A, B or\n  C");
    expect(brokenAtLast("A", "or", "after", 2)).toBe("A");
  });
});
