import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AckPolicy, connect, nkeyAuthenticator } from "nats";
import { createUser } from "nkeys.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { allStreams } from "../gen/ts/concord_streams.js";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { deadLetterStreamSpec } from "../platform/events/index.js";
import { freePort, useNatsServer } from "./support/nats-server.js";
import { address, type Shop, startShop } from "./support/shop.js";

/** Runs tools/watch-events.ts as a user would, collecting what it prints. */
function watchEvents(args: string[], env: NodeJS.ProcessEnv = {}) {
  const child = spawn(process.execPath, ["--import", "tsx", "tools/watch-events.ts", ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, exited, stdout: () => stdout, stderr: () => stderr };
}

describe("tools/watch-events.ts", () => {
  const started: ChildProcess[] = [];
  const run = (args: string[]) => {
    const tool = watchEvents(args);
    started.push(tool.child);
    return tool;
  };
  afterEach(() => {
    for (const child of started.splice(0)) child.kill("SIGKILL");
  });

  it("refuses a mistyped option naming the one it likely meant, and an option without its value, in one line naming --help (exit 2)", async () => {
    for (const [args, says] of [
      [["--nat", "nats://127.0.0.1:1"], "watch-events: unknown option --nat; did you mean --nats?"],
      [["--al"], "watch-events: unknown option --al; did you mean --all?"],
      [["--nkey"], "watch-events: Option '--nkey <value>' argument missing"],
    ] as const) {
      const tool = run([...args]);
      expect(await tool.exited, args.join(" ")).toBe(2);
      // The whole usage, 18 lines, followed it.
      expect(tool.stderr()).toBe(`${says} (\`npx tsx tools/watch-events.ts --help\` shows the usage)\n`);
      expect(tool.stdout()).toBe("");
    }
  });

  it("says in its --help what each line holds, a dead letter's reason too, and what it says on standard error once it follows the streams", async () => {
    const tool = run(["--help"]);
    expect(await tool.exited).toBe(0);
    const help = tool.stdout().replace(/\s+/g, " ");
    expect(help).toContain("stream, sequence, subject, type, id, source, time, a dead letter's reason and the decoded payload");
    expect(help).toContain("Once it follows the streams, it says so on standard error, naming them, the server and from where on it prints; standard output holds the events alone.");
  });

  it("refuses a --nkey that is a FIFO or a device in one line (exit 1), where it waited for ever on the FIFO and read /dev/zero until memory ran out", async () => {
    const fifo = join(tmpdir(), `concord-watch-fifo-${process.pid}`);
    execFileSync("mkfifo", [fifo]);
    try {
      for (const nkey of [fifo, "/dev/zero"]) {
        const tool = run(["--nats", "nats://127.0.0.1:1", "--nkey", nkey]);
        expect(await tool.exited, nkey).toBe(1);
        expect(tool.stderr()).toBe(`watch-events: cannot read the nkey seed file ${nkey}: it is ${nkey === fifo ? "a FIFO" : "a character device"}, not a regular file\n`);
      }
    } finally {
      rmSync(fifo, { force: true });
    }
  });

  it("refuses a --nkey others may read as the services refuse such a seed (exit 1), and takes one another user owns, which gives it no more than that user's rights", async () => {
    const seed = new TextDecoder().decode(createUser().getSeed());
    const open = join(tmpdir(), `concord-watch-open-${process.pid}.nk`);
    const theirs = join(tmpdir(), `concord-watch-theirs-${process.pid}.nk`);
    try {
      writeFileSync(open, `${seed}\n`, { mode: 0o644 });
      chmodSync(open, 0o644);
      // It connected with it, where a service started with it refused to start.
      const refused = run(["--nats", "nats://127.0.0.1:1", "--nkey", open]);
      expect(await refused.exited).toBe(1);
      expect(refused.stderr()).toBe(`watch-events: the NATS nkey seed file ${open} is readable by others (mode 644), who could connect to NATS as its user with it; chmod 600 it\n`);
      writeFileSync(theirs, `${seed}\n`, { mode: 0o600 });
      if (process.getuid?.() === 0) chownSync(theirs, 12345, 12345);
      const taken = run(["--nats", "nats://127.0.0.1:1", "--nkey", theirs]);
      expect(await taken.exited).toBe(1);
      expect(taken.stderr()).toMatch(/^watch-events: cannot reach NATS at nats:\/\/127\.0\.0\.1:1: CONNECTION_REFUSED/);
    } finally {
      rmSync(open, { force: true });
      rmSync(theirs, { force: true });
    }
  });

  it("refuses a --nats or NATS_URL that is not a NATS URL as the services refuse NATS_URL, and a NATS_PORT npm start refuses, in one line, before connecting (exit 2)", async () => {
    // It said "cannot reach NATS at nats://127.0.0.1:notaport: Invalid URL" (exit 1).
    for (const [args, env, says] of [
      [["--nats", "nats://127.0.0.1:notaport"], {}, 'watch-events: --nats "nats://127.0.0.1:notaport" is invalid: the port "notaport" is not a number: expected nats://host:port\n'],
      [[], { NATS_URL: "tls://127.0.0.1:4222" }, 'watch-events: NATS_URL="tls://127.0.0.1:4222" is invalid: the scheme is "tls://", which is not NATS\'s: expected nats://host:port\n'],
      [[], { NATS_URL: "", NATS_PORT: "42x" }, 'watch-events: NATS_PORT="42x" is not a port: give a whole number from 1 to 65535\n'],
      // It dialled 0.0.16.126 until "read ECONNRESET" (exit 1, 11 s), and said "Invalid URL" of 999.1.1.1 (exit 1).
      [["--nats", "4222"], {}, 'watch-events: --nats "4222" is invalid: the host "4222" is a number, read as the address 0.0.16.126: a port goes after its host (nats://127.0.0.1:4222)\n'],
      [[], { NATS_URL: "999.1.1.1:4222" }, 'watch-events: NATS_URL="999.1.1.1:4222" is invalid: the host "999.1.1.1" is neither an IPv4 address (four numbers from 0 to 255, as 127.0.0.1) nor a name (whose last label is no number)\n'],
    ] as const) {
      const tool = watchEvents([...args], env);
      started.push(tool.child);
      expect(await tool.exited, args.join(" ")).toBe(2);
      expect(tool.stderr()).toBe(says);
      expect(tool.stdout()).toBe("");
    }
  });

  describe("against a running shop", () => {
    let shop: Shop;
    beforeAll(async () => {
      shop = await startShop();
    }, 60_000);
    afterAll(() => shop?.stop());

    it("replays the events stored before it started with --all, decoded", async () => {
      const { product } = await shop.products.client.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1999 }, initialStock: 5 });
      const { order } = await shop.orders.client.createOrder({ customerId: "c-1", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address });
      await expect.poll(async () => (await shop.orders.client.getOrder({ id: order!.id })).order!.state, { timeout: 10_000 }).toBe(OrderState.ORDER_STATE_CONFIRMED);

      const tool = run(["--all", "--nats", shop.nats.url]);
      // Each stream is read on its own, so one stream's events may be printed before another's: wait for all of them.
      const expected = ["shop.products.v1.ProductCreated", "shop.orders.v1.OrderPlaced", "shop.products.v1.StockReserved", "shop.orders.v1.OrderConfirmed"];
      await expect.poll(() => expected.filter((type) => !tool.stdout().includes(`"${type}"`)), { timeout: 20_000, interval: 100 }).toEqual([]);
      const lines = tool.stdout().trim().split("\n").map((line) => JSON.parse(line) as { stream: string; seq: number; type: string; source: string; payload: Record<string, unknown> });
      const created = lines.find((l) => l.type === "shop.products.v1.ProductCreated");
      expect(created).toMatchObject({ stream: "SHOP_PRODUCTS", seq: 1, source: "products" });
      expect(JSON.stringify(created!.payload)).toContain(product!.id);
      expect(lines.map((l) => l.type)).toEqual(expect.arrayContaining(["shop.orders.v1.OrderPlaced", "shop.products.v1.StockReserved", "shop.orders.v1.OrderConfirmed"]));
      expect(tool.stderr()).toBe(`watch-events: following SHOP_ORDERS, SHOP_PRODUCTS and CONCORD_DLQ at ${shop.nats.url.replace("nats://", "")}: printing the stored events from the first, then each new one; Ctrl-C stops\n`);
      tool.child.kill("SIGINT");
      expect(await tool.exited).toBe(0);
    });

    it("says once on standard error what it follows and from where on, before any event comes; standard output holds the events alone", async () => {
      const tool = run(["--nats", shop.nats.url]);
      // It printed nothing at all until an event came, and looked hung.
      const following = `watch-events: following SHOP_ORDERS, SHOP_PRODUCTS and CONCORD_DLQ at ${shop.nats.url.replace("nats://", "")}: printing each new event from now on; Ctrl-C stops\n`;
      await expect.poll(() => tool.stderr(), { timeout: 20_000, interval: 100 }).toBe(following);
      expect(tool.stdout()).toBe("");
      const { product } = await shop.products.client.createProduct({ name: "Awaited teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 1 });
      await expect.poll(() => tool.stdout(), { timeout: 20_000, interval: 100 }).toContain(product!.id);
      expect(JSON.parse(tool.stdout().trim().split("\n")[0]!)).toMatchObject({ stream: "SHOP_PRODUCTS", type: "shop.products.v1.ProductCreated" });
      expect(tool.stderr()).toBe(following);
      tool.child.kill("SIGINT");
      expect(await tool.exited).toBe(0);
    });

    it("cuts a long payload string on a terminal, saying so once, and prints it whole with --full", async () => {
      const description = "d".repeat(1_500);
      const { product } = await shop.products.client.createProduct({ name: "Long teapot", description, price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 1 });
      /** What the tool prints on a terminal (script(1)'s), standard output and error together, once the product's event is there. */
      const onTerminal = async (extra: string[]): Promise<string> => {
        const command = [process.execPath, "--import", "tsx", "tools/watch-events.ts", "--all", "--nats", shop.nats.url, ...extra].join(" ");
        const child = spawn("script", ["-qfec", command, "/dev/null"], { stdio: ["ignore", "pipe", "pipe"], detached: true });
        let out = "";
        child.stdout!.on("data", (d) => (out += d));
        try {
          await expect.poll(() => out.includes(product!.id) && out.includes("Long teapot"), { timeout: 20_000, interval: 100 }).toBe(true);
          return out;
        } finally {
          process.kill(-child.pid!, "SIGKILL");
        }
      };
      const cut = await onTerminal([]);
      expect(cut).toContain(`"description":"${"d".repeat(200)}… (+1300 characters)"`);
      expect(cut).not.toContain(description);
      expect(cut.split("watch-events: a payload is cut to a readable size").length - 1).toBe(1);
      const whole = await onTerminal(["--full"]);
      expect(whole).toContain(`"description":"${description}"`);
      expect(whole).not.toContain("a payload is cut");
    });

    it("ends with status 0 and no stack trace when what reads its output closes it (--all | head -1)", async () => {
      await shop.products.client.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 999 }, initialStock: 1 });
      const tool = run(["--all", "--nats", shop.nats.url]);
      // The first output read, nobody reads the rest; the tool learns so at its next write, which a new event makes
      // (what it printed first may have been everything it had).
      const closed = new Promise<void>((resolve) => tool.child.stdout!.once("data", () => resolve(void tool.child.stdout!.destroy())));
      await closed;
      await shop.products.client.createProduct({ name: "Kettle XL", description: "", price: { currencyCode: "EUR", amountMinor: 1999 }, initialStock: 1 });
      expect(await tool.exited).toBe(0);
      expect(tool.stderr()).not.toContain("EPIPE");
    });

    it("takes several comma-separated URLs, as of a cluster, and reads through one that answers", async () => {
      const down = `nats://127.0.0.1:${await freePort()}`;
      const tool = run(["--all", "--nats", `${down},${shop.nats.url}`]);
      await expect.poll(() => tool.stdout(), { timeout: 20_000, interval: 100 }).toContain("shop.products.v1.ProductCreated");
      tool.child.kill("SIGINT");
      expect(await tool.exited).toBe(0);
    });
  });

  describe("against a shop behind the generated authorization", () => {
    let shop: Shop;
    beforeAll(async () => {
      shop = await startShop({ secured: true });
    }, 60_000);
    afterAll(() => shop?.stop());

    it("reads every stream with the observer's seed (--nkey), and is refused without one", async () => {
      const { product } = await shop.products.client.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1999 }, initialStock: 5 });
      const tool = run(["--all", "--nats", shop.nats.url, "--nkey", shop.nats.seedFile("observer")]);
      await expect.poll(() => tool.stdout(), { timeout: 20_000, interval: 100 }).toContain(product!.id);
      expect(tool.stderr()).toMatch(/^watch-events: following SHOP_ORDERS, SHOP_PRODUCTS and CONCORD_DLQ at \S+: printing the stored events from the first, then each new one; Ctrl-C stops\n$/);
      const observer = await connect({ servers: shop.nats.url, authenticator: nkeyAuthenticator(new TextEncoder().encode(readFileSync(shop.nats.seedFile("observer"), "utf8").trim())) });
      const jsm = await observer.jetstreamManager();
      const readers = async () => {
        const names: string[] = [];
        for (const stream of ["SHOP_ORDERS", "SHOP_PRODUCTS", "CONCORD_DLQ"]) for await (const name of jsm.consumers.list(stream)) if (name.name.startsWith("observer-")) names.push(`${stream}/${name.name}`);
        return names.sort();
      };
      // One consumer a stream, under the observer's first name, deleted on Ctrl-C rather than left for the server to drop a minute later.
      expect(await readers()).toEqual(["CONCORD_DLQ/observer-1", "SHOP_ORDERS/observer-1", "SHOP_PRODUCTS/observer-1"]);
      tool.child.kill("SIGINT");
      expect(await tool.exited).toBe(0);
      expect(await readers()).toEqual([]);
      await observer.close();

      const refused = watchEvents(["--all", "--nats", shop.nats.url], { NATS_NKEY_SEED: "", DATA_DIR: `${shop.dir}/no-credentials-here` });
      started.push(refused.child);
      expect(await refused.exited).toBe(1);
      expect(refused.stderr()).toContain(`watch-events: NATS at ${shop.nats.url} refused the connection: Authorization Violation: it wants credentials, and no seed was given`);

      // A service's seed connects, and its user may not take replies on _INBOX: the tool says which seeds it takes.
      const service = watchEvents(["--all", "--nats", shop.nats.url, "--nkey", shop.nats.seedFile("products")]);
      started.push(service.child);
      expect(await service.exited).toBe(1);
      expect(service.stderr()).toMatch(/^watch-events: Permissions Violation for Subscription to "_INBOX\.[^"]+": the seed connected with is not the observer's or the operator's/);
    });
  });

  describe("against a server that refuses it", () => {
    const nats = useNatsServer();

    it("says that no stream exists and exits with status 1", async () => {
      const tool = run(["--all", "--nats", nats().url]);
      expect(await tool.exited).toBe(1);
      for (const stream of ["SHOP_ORDERS", "SHOP_PRODUCTS", "CONCORD_DLQ"]) expect(tool.stderr()).toContain(`stream ${stream} does not exist yet`);
      expect(tool.stderr()).toContain("no stream can be read");
      expect(tool.stderr()).not.toContain("following");
    });

    it("prints the server's refusal of its consumer and exits with status 1 when nothing can be read", async () => {
      // Streams that take one consumer, and have it already.
      const nc = await connect({ servers: nats().url });
      const jsm = await nc.jetstreamManager();
      for (const spec of [...allStreams, deadLetterStreamSpec]) {
        await jsm.streams.add({ name: spec.name, subjects: [...spec.subjects], max_consumers: 1 });
        await jsm.consumers.add(spec.name, { durable_name: "the-only-one", ack_policy: AckPolicy.Explicit });
      }
      await nc.close();

      const tool = run(["--all", "--nats", nats().url]);
      expect(await tool.exited).toBe(1);
      for (const stream of ["SHOP_ORDERS", "SHOP_PRODUCTS", "CONCORD_DLQ"]) {
        expect(tool.stderr()).toMatch(new RegExp(`the server refused a consumer on stream ${stream}: maximum consumers limit reached \\(err_code 10026\\)`));
      }
      expect(tool.stdout()).toBe("");
    });
  });
});
