import { chmodSync, existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createUser } from "nkeys.js";
import { AckPolicy, connect, millis as nanosToMs, nanos, RetentionPolicy, type NatsConnection } from "nats";
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { allStreams } from "../gen/ts/concord_streams.js";
import { ShopProductsStream } from "../gen/ts/shop/products/v1/product_events_jetstream.js";
import { ProductServiceConsumers as productConsumers } from "../gen/ts/shop/products/v1/product_service_jetstream.js";
import { ensureStreams } from "../platform/events/index.js";
import { connectNats } from "../tools/event-watch.js";
import { runConcord } from "./support/concord.js";
import { freePort, startNatsServer, useNatsServer } from "./support/nats-server.js";
import { readmeProse } from "./support/readme.js";
import { startServiceProcess } from "./support/service-process.js";
import { tempDirForSuite } from "./support/temp-dir.js";

const dir = tempDirForSuite("concord-nats-refusals-");

/** Runs the product service as its own process against `natsUrl` until it exits (within 20 s): its exit code and its log lines past "info". */
async function startProducts(key: string, natsUrl: string, env: Record<string, string> = {}) {
  const svc = startServiceProcess("products", {
    NATS_URL: natsUrl,
    PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`,
    PRODUCTS_DATABASE_URL: join(dir, `${key}.db`),
    LOG_LEVEL: "info",
    ...env,
  });
  const timer = setTimeout(() => void svc.kill(), 20_000);
  const exit = await svc.exited;
  clearTimeout(timer);
  const past = svc.logs().filter((l) => l.level !== "info" && l.level !== "debug");
  return { exit, lines: past.filter((l) => !/not clustered/.test(String(l.msg))), replicasWarned: past.filter((l) => /not clustered/.test(String(l.msg))).map((l) => l.stream) };
}

/** What `concord streams provision` says on standard error but its warnings that a standalone server keeps 1 replica. */
const saidBesidesReplicas = (stderr: string): string[] =>
  stderr.split("\n").filter((line) => line !== "" && !line.startsWith("concord streams provision: nats-server is not clustered: "));

describe("a service whose JetStream streams or consumers conflict with its contracts", () => {
  const nats = useNatsServer();
  let nc: NatsConnection;
  beforeAll(async () => {
    nc = await connect({ servers: nats().url });
  });
  afterAll(async () => {
    await nc?.close();
  });
  afterEach(async () => {
    const jsm = await nc.jetstreamManager();
    for await (const s of jsm.streams.list()) await jsm.streams.delete(s.config.name);
  });

  it("refuses to start on a stream made by hand with other subjects and retention: one line naming the stream, what differs and what to do, exit 2; the stream left as it is", async () => {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: ShopProductsStream.name, subjects: ["by-hand.>"], retention: RetentionPolicy.Workqueue, max_age: nanos(ShopProductsStream.maxAgeMs) });
    const { exit, lines } = await startProducts("stream-by-hand", nats().url);
    // It exited 1 with "start-up failed" and the error's stack, which npm start called "exited unexpectedly".
    expect(exit).toBe(2);
    expect(lines).toEqual([
      {
        level: "fatal",
        time: expect.any(String),
        service: "products",
        instance: expect.any(String),
        code: "FAILED_PRECONDITION",
        msg:
          `start-up refused: stream SHOP_PRODUCTS exists with settings that conflict with its spec (subjects: existing ["by-hand.>"], wanted ["shop.products.v1.>"]; retention: existing "workqueue", wanted "limits"): ` +
          "left as it is; migrate the stream deliberately (for example with the nats CLI: edit it, or remove it if its messages may go), or change the contract back to what the stream has, then start again",
      },
    ]);
    // As README "Two commands" quotes it.
    expect(readmeProse()).toContain("`start-up refused: stream SHOP_PRODUCTS exists with settings that conflict with its spec (...): left as it is; ...`");
    const { config } = await jsm.streams.info(ShopProductsStream.name);
    expect([config.subjects, config.retention]).toEqual([["by-hand.>"], RetentionPolicy.Workqueue]);
  });

  it("refuses to start, in one line naming the stream that holds them, where its stream cannot be created or widened to subjects another stream holds: exit 2", async () => {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: "BY_HAND", subjects: ["shop.products.v1.reservation.>"] });
    const held = '(stream BY_HAND holds shop.products.v1.reservation.>); a subject belongs to one stream only';
    const created = await startProducts("held-create", nats().url);
    // It exited 1 with "start-up failed" and the error's stack.
    expect(created.exit).toBe(2);
    expect(created.lines).toEqual([
      expect.objectContaining({ level: "fatal", code: "FAILED_PRECONDITION", msg: expect.stringContaining(`start-up refused: stream SHOP_PRODUCTS does not exist, and nats-server refuses to create it: subjects overlap with an existing stream ${held}`) }),
    ]);
    await jsm.streams.add({ name: ShopProductsStream.name, subjects: ["shop.products.v1.product.>"], max_age: nanos(ShopProductsStream.maxAgeMs) });
    const widened = await startProducts("held-widen", nats().url);
    expect(widened.exit).toBe(2);
    expect(widened.lines).toEqual([
      expect.objectContaining({
        level: "fatal",
        code: "FAILED_PRECONDITION",
        msg: expect.stringContaining(
          `start-up refused: stream SHOP_PRODUCTS keeps less than its spec (subjects: existing ["shop.products.v1.product.>"], wanted ["shop.products.v1.>"]), and nats-server refuses to widen it: subjects overlap with an existing stream ${held}`,
        ),
      }),
    ]);
    expect((await jsm.streams.info(ShopProductsStream.name)).config.subjects).toEqual(["shop.products.v1.product.>"]);
    // The operator's provisioning, likewise: it exited 1, as for a failure, where the stream is the operator's to narrow.
    const provisioned = await runConcord({ NATS_URL: nats().url, NATS_NKEY_SEED: undefined, DATA_DIR: join(dir, "no-credentials") }, ["streams", "provision"]);
    expect(provisioned.status, provisioned.stderr).toBe(2);
    expect(saidBesidesReplicas(provisioned.stderr)).toEqual([
      `concord streams provision: stream SHOP_PRODUCTS keeps less than its spec (subjects: existing ["shop.products.v1.product.>"], wanted ["shop.products.v1.>"]), and nats-server refuses to widen it: subjects overlap with an existing stream ${held}: ` +
        'where a contract moved these subjects from that stream, it keeps them until the operator narrows it by hand (nats stream edit), once nothing needs them there (README "Breaking changes"); SHOP_PRODUCTS, CONCORD_DLQ not provisioned',
    ]);
  });

  it("refuses to start on a durable consumer of its made by hand as a push consumer: one line naming it, exit 2", async () => {
    const jsm = await nc.jetstreamManager();
    await ensureStreams(jsm, allStreams);
    const durable = productConsumers.orderPlaced.spec;
    await jsm.consumers.add(durable.stream, { durable_name: durable.durable, deliver_subject: "by-hand.deliveries", ack_policy: AckPolicy.Explicit });
    const { exit, lines } = await startProducts("push-consumer", nats().url);
    expect(exit).toBe(2);
    expect(lines).toEqual([
      expect.objectContaining({
        level: "fatal",
        code: "FAILED_PRECONDITION",
        msg:
          `start-up refused: consumer ${durable.durable} on stream ${durable.stream} exists as a push consumer, and the service reads through a pull consumer: ` +
          `delete it (nats consumer rm ${durable.stream} ${durable.durable}, as a NATS user that may: neither the services' users nor the operator's do) ` +
            `and the service makes it again as it starts, from the stream's first event ` +
          `(its inbox skips the events it handled within its retention, 7 days by default; older ones would be handled again); its durable name comes from the contract`,
      }),
    ]);
  });
});

describe("a service whose NATS user the server refuses", () => {
  const nats = useNatsServer({ credentialsDir: join(dir, "credentials"), provision: false });

  it("refuses to start without credentials the server takes: one line, exit 2, not a wait", async () => {
    const { exit, lines } = await startProducts("no-credentials", nats().url);
    expect(exit).toBe(2);
    expect(lines).toEqual([
      expect.objectContaining({
        level: "fatal",
        code: "FAILED_PRECONDITION",
        msg:
          `start-up refused: NATS at ${nats().url} refused this service's connection without credentials (connecting to NATS at ${nats().url} failed: 'Authorization Violation'): ` +
          "name the nkey seed file of its own NATS user, one the server's authorization names, in NATS_NKEY_SEED (npm start, given NATS_URL, passes it the one PRODUCTS_NATS_NKEY_SEED names)",
      }),
    ]);
  });

  it("refuses to start with a seed the server's authorization does not name, saying which setting holds it: one line, exit 2", async () => {
    const stranger = join(dir, "stranger.nk");
    writeFileSync(stranger, new TextDecoder().decode(createUser().getSeed()), { mode: 0o600 });
    const { exit, lines } = await startProducts("stranger-seed", nats().url, { NATS_NKEY_SEED: stranger });
    expect(exit).toBe(2);
    expect(lines).toEqual([
      expect.objectContaining({
        level: "fatal",
        code: "FAILED_PRECONDITION",
        msg: `start-up refused: NATS at ${nats().url} refused this service's credentials (connecting to NATS at ${nats().url} failed: 'Authorization Violation'): the nkey seed file in NATS_NKEY_SEED must be its own NATS user's, one the server's authorization names`,
      }),
    ]);
  });

  it("refuses to start with a seed file whose seed is damaged (its checksum wrong), or that holds none, naming the file: one line, exit 2, before its database is made", async () => {
    const seed = new TextDecoder().decode(createUser().getSeed());
    const damaged = join(dir, "damaged.nk");
    writeFileSync(damaged, `${seed.slice(0, 20)}${seed[20] === "A" ? "B" : "A"}${seed.slice(21)}\n`, { mode: 0o600 });
    const { exit, lines } = await startProducts("damaged-seed", nats().url, { NATS_NKEY_SEED: damaged });
    expect(exit).toBe(2);
    expect(lines).toEqual([
      expect.objectContaining({
        level: "fatal",
        msg: expect.stringContaining(`start-up refused: ${damaged} does not hold a valid NATS user nkey seed: its checksum does not match (the file is damaged, or was edited)`),
      }),
    ]);
    // The database was made and migrated first.
    expect(existsSync(join(dir, "damaged-seed.db"))).toBe(false);
    const noSeed = join(dir, "no-seed.nk");
    writeFileSync(noSeed, "-----BEGIN CERTIFICATE-----\n", { mode: 0o600 });
    const none = await startProducts("no-seed", nats().url, { NATS_NKEY_SEED: noSeed });
    expect(none.exit).toBe(2);
    expect(none.lines).toEqual([expect.objectContaining({ level: "fatal", code: "FAILED_PRECONDITION", msg: `start-up refused: ${noSeed} does not hold a NATS user nkey seed (one line starting with SU)` })]);
    expect(existsSync(join(dir, "no-seed.db"))).toBe(false);
  });

  it("refuses to start with a seed file others may read, naming it and the fix: one line, exit 2, before its database is made", async () => {
    // Started by hand, a service took a seed of mode 0644, where npm start narrows its own and the token key is refused.
    const open = join(dir, "open.nk");
    writeFileSync(open, `${new TextDecoder().decode(createUser().getSeed())}\n`, { mode: 0o644 });
    chmodSync(open, 0o644);
    const { exit, lines } = await startProducts("open-seed", nats().url, { NATS_NKEY_SEED: open });
    expect(exit).toBe(2);
    expect(lines).toEqual([
      expect.objectContaining({
        level: "fatal",
        code: "FAILED_PRECONDITION",
        msg: `start-up refused: the NATS nkey seed file ${open} is readable by others (mode 644), who could connect to NATS as this service's user with it; chmod 600 it`,
      }),
    ]);
    expect(existsSync(join(dir, "open-seed.db"))).toBe(false);
  });

  it("refuses to start when its stream is missing and its user may not create it: one line saying the operator provisions it, exit 2", async () => {
    const { exit, lines } = await startProducts("stream-missing", nats().url, { NATS_NKEY_SEED: nats().seedFile("products") });
    expect(exit).toBe(2);
    // Before it, the connection's own error line names the subject the server refused ($JS.API.STREAM.CREATE.SHOP_ORDERS).
    expect(lines.filter((l) => l.level === "fatal")).toEqual([
      expect.objectContaining({
        level: "fatal",
        code: "FAILED_PRECONDITION",
        msg: expect.stringMatching(/^start-up refused: stream SHOP_\w+ does not exist, and this NATS user may not create it: the operator provisions streams \(npx concord streams provision/),
      }),
    ]);
  });

  it("refuses to start when its stream keeps less than its contract (a shorter max age) and its user may not widen it: one line, exit 2; the operator's provisioning widens it", async () => {
    const operator = await connectNats(nats().url, "test-operator", nats().seedFile("operator"));
    onTestFinished(() => operator.close());
    const jsm = await operator.jetstreamManager();
    const shorter = ShopProductsStream.maxAgeMs / 2;
    await ensureStreams(jsm, allStreams.map((s) => (s.name === ShopProductsStream.name ? { ...s, maxAgeMs: shorter, duplicateWindowMs: Math.min(s.duplicateWindowMs || 120_000, shorter) } : s)));
    const { exit, lines } = await startProducts("stream-short", nats().url, { NATS_NKEY_SEED: nats().seedFile("products") });
    expect(exit).toBe(2);
    expect(lines.filter((l) => l.level === "fatal")).toEqual([
      expect.objectContaining({
        code: "FAILED_PRECONDITION",
        msg:
          `start-up refused: stream SHOP_PRODUCTS keeps less than its spec (max_age (ms): existing ${shorter}, wanted ${ShopProductsStream.maxAgeMs}), ` +
          "and this NATS user may not widen it: the operator provisions streams (npx concord streams provision; npm start does it before the services start)",
      }),
    ]);
    expect(nanosToMs((await jsm.streams.info(ShopProductsStream.name)).config.max_age)).toBe(shorter);
    await ensureStreams(jsm, allStreams);
    expect(nanosToMs((await jsm.streams.info(ShopProductsStream.name)).config.max_age)).toBe(ShopProductsStream.maxAgeMs);
  });
});

describe("a service, or `concord streams provision`, on a nats-server whose JetStream limits leave no room for a stream or consumer", () => {
  /** A nats-server that puts clients without credentials in an account with these JetStream limits ("max_streams: 1"); stopped after the test. */
  async function serverLimitedTo(limits: string) {
    const server = await startNatsServer({ extraConfig: `no_auth_user: limited\naccounts { LIMITED { jetstream { ${limits} }, users [ { user: limited, password: limited } ] } }` });
    onTestFinished(() => server.stop());
    return server;
  }
  /** `concord streams provision` as the operator of that server (no credentials: the account's user). */
  const provision = (url: string) => runConcord({ NATS_URL: url, NATS_NKEY_SEED: undefined, DATA_DIR: join(dir, "no-credentials") }, ["streams", "provision"]);
  /** Its lines on standard error but its logger's (the standalone server's replicas). */
  const refusal = (what: string) => `${what} does not exist, and nats-server refuses to create it: `;

  const maxStreams =
    "maximum number of streams reached (err_code 10027): the account of this NATS user may hold no more streams: raise its max_streams (1, with 1 in use) " +
    "in the server's configuration (accounts { <account> { jetstream { max_streams: ... } } }), or delete streams nothing needs";
  const maxFile =
    "insufficient storage resources available (err_code 10047): JetStream's file storage has no room for it: raise the server's jetstream { max_file_store }, " +
    "or the account's max_file (0 bytes, with 0 bytes in use), whichever binds, or free space on the disk of the server's store";
  it.each([
    ["may hold no more streams", "max_streams: 1", "SHOP_PRODUCTS", maxStreams, "SHOP_PRODUCTS, CONCORD_DLQ"],
    ["has no room in its file storage", "max_file: 0", "SHOP_ORDERS", maxFile, "SHOP_ORDERS, SHOP_PRODUCTS, CONCORD_DLQ"],
  ])("refuses, where the account %s, in one line naming the stream, the server's reason and the limit: exit 2 from the provisioning and from the service's start", { timeout: 60_000 }, async (_, limits, stream, limit, left) => {
    const server = await serverLimitedTo(limits);
    // It ended with "concord: creating stream ... failed: <the server's reason>", exit 1.
    const run = await provision(server.url);
    expect(run.status, run.stderr).toBe(2);
    expect(saidBesidesReplicas(run.stderr)).toEqual([`concord streams provision: ${refusal(`stream ${stream}`)}${limit}; ${left} not provisioned`]);
    // It logged "start-up failed" with the error's stack, exit 1.
    const { exit, lines } = await startProducts(`limited-${stream}`, server.url);
    expect(exit).toBe(2);
    expect(lines).toEqual([expect.objectContaining({ level: "fatal", code: "FAILED_PRECONDITION", msg: `start-up refused: ${refusal(`stream ${stream}`)}${limit}` })]);
  });

  it.each([
    ["max_file: 0", [], "SHOP_ORDERS"],
    ["max_streams: 1", ["SHOP_ORDERS"], "SHOP_PRODUCTS"],
  ])("with %s, warns that a stream keeps 1 replica only of the streams made, not of the one the server then refuses", { timeout: 60_000 }, async (limits, made, refused) => {
    const server = await serverLimitedTo(limits);
    const run = await provision(server.url);
    expect(run.status, run.stderr).toBe(2);
    // The refused stream's warning came first, then its refusal: a replica it never got.
    // Each a line of the command's own: they were JSON log lines.
    const lines = run.stderr.split("\n").filter(Boolean);
    const startingWith = (text: string) => expect.stringMatching(new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
    expect(lines).toEqual([
      ...made.map((stream) => startingWith(`concord streams provision: nats-server is not clustered: stream ${stream} keeps 1 replica, not the 3 its contract declares; `)),
      startingWith(`concord streams provision: ${refusal(`stream ${refused}`)}`),
    ]);
    // The service's own provisioning, likewise.
    const { exit, lines: logged, replicasWarned } = await startProducts(`limited-replicas-said-${made.length}`, server.url);
    expect(exit).toBe(2);
    expect(logged).toEqual([expect.objectContaining({ level: "fatal", msg: expect.stringContaining(`start-up refused: ${refusal(`stream ${refused}`)}`) })]);
    expect(replicasWarned).toEqual([]);
  });

  it("quotes the refusal of a stream over max_streams in the README", () => {
    expect(readmeProse()).toContain(`\`start-up refused: ${refusal("stream SHOP_PRODUCTS")}${maxStreams.slice(0, maxStreams.indexOf(" in the server's"))} ...\``);
  });

  it("refuses to start where the account may hold no more consumers, in one line naming the consumer and max_consumers: exit 2", { timeout: 60_000 }, async () => {
    const server = await serverLimitedTo("max_consumers: 1");
    expect((await provision(server.url)).status).toBe(0);
    const { exit, lines } = await startProducts("max-consumers", server.url);
    const limit =
      "maximum consumers limit reached (err_code 10026): the account of this NATS user, or the stream, may hold no more consumers: raise the account's max_consumers (1, with 1 in use) " +
      "in the server's configuration, or the stream's, or delete consumers nothing reads (npx concord consumer stale lists those no contract declares)";
    expect(exit).toBe(2);
    expect(lines).toEqual([expect.objectContaining({ level: "fatal", code: "FAILED_PRECONDITION", msg: `start-up refused: ${refusal(`consumer ${productConsumers.orderUpdated.spec.durable} on stream SHOP_ORDERS`)}${limit}` })]);
  });
});
