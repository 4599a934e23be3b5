import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createUser } from "nkeys.js";
import { AckPolicy, connect, headers as natsHeaders, nanos, nkeyAuthenticator, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { allStreams } from "../gen/ts/concord_streams.js";
import { deadLetterStreamSpec, ensureStreams } from "../platform/events/index.js";
import { fileDeadLetter } from "../platform/events/dead-letter.js";
import { abandonedRange, PastInboxError, redeliver } from "../tools/concord/redeliver.js";
import { uuidv7 } from "../platform/ids/index.js";
import { wireHeaders } from "../platform/events/nats-internals.js";
import { type ConcordRun, runConcord } from "./support/concord.js";
import { useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { createTempDir } from "./support/temp-dir.js";

/** Runs the `concord` bin with DATA_DIR set as `npm start` sets it (its seeds under DATA_DIR/nats-credentials). */
function concord(dataDir: string, ...args: string[]): Promise<ConcordRun> {
  return runConcord({ DATA_DIR: dataDir, NATS_NKEY_SEED: undefined }, args);
}

describe("npx concord consumer redeliver", () => {
  const dir = createTempDir("concord-redeliver-");
  afterAll(() => dir.remove());
  // The seeds where npm start puts them: DATA_DIR/nats-credentials.
  const nats = useNatsServer({ credentialsDir: join(dir.path, "nats-credentials") });
  const connections: NatsConnection[] = [];
  const durable = "orders-stock-reserved";

  /** A client with a user's seed, on the inbox prefix its permissions allow. */
  const connectAs = async (user: string): Promise<NatsConnection> => {
    const seed = new TextEncoder().encode(readFileSync(nats().seedFile(user), "utf8").trim());
    const nc = await connect({ servers: nats().url, authenticator: nkeyAuthenticator(seed), inboxPrefix: user === "operator" || user === "observer" ? "_INBOX" : `_INBOX_${user}`, name: `test-as-${user}` });
    connections.push(nc);
    return nc;
  };

  beforeAll(async () => {
    await ensureStreams(await (await connectAs("products")).jetstreamManager(), [...allStreams, deadLetterStreamSpec]);
  });
  afterAll(async () => {
    await Promise.all(connections.map((nc) => nc.close()));
  });

  it("publishes again, as the operator under the platform's permissions, the events a consumer's max_deliver left behind; the consumer, left as it was, receives them", { timeout: 90_000 }, async () => {
    const asOrders = await connectAs("orders");
    // Made as earlier versions made consumers, with a max_deliver (1 here) and its own user.
    await (await asOrders.jetstreamManager()).consumers.add("SHOP_PRODUCTS", {
      durable_name: durable,
      filter_subject: "shop.products.v1.reservation.*.reserved",
      ack_policy: AckPolicy.Explicit,
      max_deliver: 1,
      ack_wait: nanos(1_000),
    });
    const events: Array<{ id: string; subject: string; data: number[] }> = [];
    const asProducts = (await connectAs("products")).jetstream();
    for (const n of [1, 2, 3]) {
      const id = uuidv7();
      const subject = `shop.products.v1.reservation.order-${n}.reserved`;
      const h = natsHeaders();
      h.set("ce-id", id);
      h.set("ce-type", "shop.products.v1.StockReserved");
      h.set("ce-source", "products");
      // A header with two values: both go out again.
      h.append("x-note", "a");
      h.append("x-note", "b");
      const data = new Uint8Array([n, 7, 7]);
      await asProducts.publish(subject, data, { headers: h, msgID: id });
      events.push({ id, subject, data: [...data] });
    }
    // The second is delivered once and never acknowledged: the server gives up on it after the ack wait.
    const consumer = await asOrders.jetstream().consumers.get("SHOP_PRODUCTS", durable);
    const seen: number[] = [];
    for (let m = await consumer.next({ expires: 1_000 }); m; m = await consumer.next({ expires: 1_000 })) {
      seen.push(m.info.streamSequence);
      if (m.info.streamSequence !== 2) await m.ackAck();
    }
    expect(seen).toEqual([1, 2, 3]);
    await new Promise((r) => setTimeout(r, 2_500));
    expect(await consumer.next({ expires: 1_000 })).toBeNull();
    const info = await (await asOrders.jetstreamManager()).consumers.info("SHOP_PRODUCTS", durable);
    expect({ floor: info.ack_floor.stream_seq, delivered: info.delivered.stream_seq, ackPending: info.num_ack_pending }).toEqual({ floor: 1, delivered: 3, ackPending: 0 });

    // What a dry run would do; nothing is published.
    const dry = await concord(dir.path, "consumer", "redeliver", durable, "--dry-run", "--nats", nats().url);
    expect(dry.stderr).toContain("would publish 2 event(s) of stream SHOP_PRODUCTS sequences 2 to 3 again");
    expect(dry.status, dry.stderr).toBe(0);
    expect(dry.stdout.trim().split("\n").map((l) => JSON.parse(l).wouldRedeliver)).toEqual([2, 3]);
    expect(await consumer.next({ expires: 1_000 })).toBeNull();

    const run = await concord(dir.path, "consumer", "redeliver", durable, "--nats", nats().url);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toContain("published 2 event(s) of stream SHOP_PRODUCTS sequences 2 to 3 again for orders-stock-reserved");
    const again: Array<{ id: string | undefined; subject: string; data: number[] }> = [];
    for (let m = await consumer.next({ expires: 1_000 }); m; m = await consumer.next({ expires: 1_000 })) {
      again.push({ id: m.headers?.get("ce-id"), subject: m.subject, data: [...m.data] });
      expect(m.headers?.values("x-note")).toEqual(["a", "b"]);
      await m.ackAck();
    }
    // The one given up on, and the one after it (handled already: the service's inbox drops it), as they were published.
    expect(again).toEqual([events[1], events[2]]);

    // Run again within the stream's duplicate window: JetStream stores each copy once.
    const twice = await concord(dir.path, "consumer", "redeliver", durable, "--from", "2", "--to", "3", "--nats", nats().url);
    expect(twice.status, twice.stderr).toBe(0);
    expect(twice.stdout.trim().split("\n").map((l) => JSON.parse(l).duplicate)).toEqual([true, true]);
    expect(await consumer.next({ expires: 1_000 })).toBeNull();

    // The consumer's acks have moved its floor past them: nothing is left to redeliver.
    const none = await concord(dir.path, "consumer", "redeliver", durable, "--nats", nats().url);
    expect(none.status, none.stderr).toBe(0);
    expect(none.stderr).toContain("holds no events the server stopped delivering");
  });

  it("publishes nothing when an event in the range is older than the inboxes' retention, which may have forgotten it was handled", async () => {
    const operator = await connectAs("operator");
    const info = await (await operator.jetstreamManager()).consumers.info("SHOP_PRODUCTS", durable);
    const before = (await (await operator.jetstreamManager()).streams.info("SHOP_PRODUCTS")).state.messages;
    // Every event counts as old against a retention that ended tomorrow.
    const published: number[] = [];
    const err = await redeliver(operator, info, { from: 1, to: 3 }, { dryRun: false, notBefore: new Date(Date.now() + 86_400_000), each: (e) => published.push(e.seq), skipped: () => undefined }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PastInboxError);
    expect((err as PastInboxError).count).toBe(3);
    expect(published).toEqual([]);
    expect((await (await operator.jetstreamManager()).streams.info("SHOP_PRODUCTS")).state.messages).toBe(before);
  });

  it("leaves out, saying why, an event whose headers nats.js cannot read (another client's header name with a space), and publishes the others", async () => {
    const asProducts = await connectAs("products");
    const operator = await connectAs("operator");
    const jsm = await operator.jetstreamManager();
    const oddId = uuidv7();
    const goodId = uuidv7();
    const block = (id: string, extra: string) => Buffer.from(`NATS/1.0\r\nce-id: ${id}\r\nce-type: shop.products.v1.StockReserved\r\nce-source: products\r\n${extra}\r\n\r\n`, "latin1");
    const odd = await asProducts.jetstream().publish(`shop.products.v1.reservation.${oddId}.reserved`, new Uint8Array([1]), { headers: wireHeaders(block(oddId, "x trace: 1")) });
    const good = await asProducts.jetstream().publish(`shop.products.v1.reservation.${goodId}.reserved`, new Uint8Array([2]), { headers: wireHeaders(block(goodId, "x-trace: 1")) });
    const info = await jsm.consumers.info("SHOP_PRODUCTS", durable);
    const published: number[] = [];
    const skipped: Array<[number, string]> = [];
    const { count } = await redeliver(operator, info, { from: odd.seq, to: good.seq }, { dryRun: false, each: (e) => published.push(e.seq), skipped: (seq, why) => skipped.push([seq, why]) });
    expect(count).toBe(1);
    expect(published).toEqual([good.seq]);
    expect(skipped).toEqual([[odd.seq, expect.stringMatching(/^its headers cannot be read \(' ' is not a valid character/)]]);
  });

  it("tells a consumer that skipped other subjects' events, with nothing unacknowledged, from one the server gave up on, by the consumer's own sequences", () => {
    // As a cluster shows a filtered consumer that was never given an event: its delivered stream sequence moved on.
    const passedOver = { name: durable, num_ack_pending: 0, ack_floor: { consumer_seq: 0, stream_seq: 0 }, delivered: { consumer_seq: 0, stream_seq: 28 } };
    expect(abandonedRange(passedOver as never)).toMatch(/holds no events the server stopped delivering/);
    const gaveUp = { name: durable, num_ack_pending: 0, ack_floor: { consumer_seq: 1, stream_seq: 1 }, delivered: { consumer_seq: 3, stream_seq: 3 } };
    expect(abandonedRange(gaveUp as never)).toEqual({ from: 2, to: 3 });
  });

  it("names the streams when the consumer does not exist, and refuses a range that is not one", async () => {
    const consumers = (await (await connectAs("orders")).jetstreamManager()).consumers;
    await consumers.info("SHOP_PRODUCTS", durable).catch(() => consumers.add("SHOP_PRODUCTS", { durable_name: durable, filter_subject: "shop.products.v1.reservation.*.reserved", ack_policy: AckPolicy.Explicit }));
    // An event of its own on the consumer's subject, so that the stream holds one whether or not the tests before ran.
    const h = natsHeaders();
    h.set("ce-id", uuidv7());
    h.set("ce-type", "shop.products.v1.StockReserved");
    h.set("ce-source", "products");
    const last = await (await connectAs("products")).jetstream().publish("shop.products.v1.reservation.order-own.reserved", new Uint8Array([1]), { headers: h });
    const missing = await concord(dir.path, "consumer", "redeliver", "nope", "--nats", nats().url);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("there is no durable consumer nope on stream SHOP_ORDERS or SHOP_PRODUCTS; the durable consumers are ");
    expect(missing.stderr).toMatch(/the durable consumers are [a-z-, ]*\borders-stock-reserved\b/);
    // A name no consumer may have: "reading consumer ../x on stream SHOP_ORDERS failed: invalid durable name - ...".
    const unnamable = await concord(dir.path, "consumer", "redeliver", "../x", "--nats", nats().url);
    expect(unnamable.status).toBe(1);
    expect(unnamable.stderr).toContain("there is no durable consumer ../x on stream SHOP_ORDERS or SHOP_PRODUCTS; the durable consumers are ");
    const backwards = await concord(dir.path, "consumer", "redeliver", durable, "--from", "5", "--to", "2", "--nats", nats().url);
    expect(backwards.status).toBe(2);
    expect(backwards.stderr).toContain("--from 5 is after --to 2");
    const toAlone = await concord(dir.path, "consumer", "redeliver", durable, "--to", "3", "--nats", nats().url);
    expect(toAlone.status).toBe(2);
    expect(toAlone.stderr).toContain("--to needs a --from");
    // --from alone goes up to the consumer's last delivery: past it, there is nothing to publish.
    const fromAlone = await concord(dir.path, "consumer", "redeliver", durable, "--from", "1000", "--nats", nats().url);
    expect(fromAlone.status, fromAlone.stderr).toBe(0);
    expect(fromAlone.stderr).toMatch(/^concord consumer redeliver: orders-stock-reserved was given no event of stream SHOP_PRODUCTS from sequence 1000 on \(its last delivery is sequence \d+\); nothing published\n$/);
    // A range past the stream's end publishes nothing, and says what the stream holds.
    const past = await concord(dir.path, "consumer", "redeliver", durable, "--from", "1000", "--to", "1002", "--nats", nats().url);
    expect(past.status, past.stderr).toBe(0);
    // It said first "published 0 event(s) ...; its inbox skips those it handled already", then why.
    expect(past.stderr).toBe(
      `concord consumer redeliver: stream SHOP_PRODUCTS has no event on shop.products.v1.reservation.*.reserved (orders-stock-reserved's subject) in sequences 1000 to 1002; it holds sequences 1 to ${last.seq}; nothing published\n`,
    );
  });

  it("says, given a service's seed, that the tools take the observer's or the operator's", async () => {
    // A service's user takes replies only on _INBOX_<service>, so the server refuses the tool's first request's inbox.
    const run = await runConcord({ DATA_DIR: dir.path, NATS_NKEY_SEED: nats().seedFile("products") }, ["consumer", "redeliver", durable, "--nats", nats().url]);
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/^concord consumer redeliver: Permissions Violation for Subscription to "_INBOX\.[^"]+": the seed connected with is not the observer's or the operator's/);
    expect(run.stderr).toContain("leave NATS_NKEY_SEED (and watch-events' --nkey) unset for npm start's, in DATA_DIR/nats-credentials");
  });

  it("says, refused for want of credentials, where it looked for a seed, and, refused a seed, which seed that was", async () => {
    const elsewhere = createTempDir("concord-no-seeds-");
    try {
      const none = await runConcord({ DATA_DIR: elsewhere.path, NATS_NKEY_SEED: undefined }, ["dlq", "list", "--nats", nats().url]);
      expect(none.status).toBe(1);
      expect(none.stderr).toContain(
        `concord dlq list: NATS at ${nats().url} refused the connection: Authorization Violation: it wants credentials, and no seed was given: NATS_NKEY_SEED is unset and ${join(elsewhere.path, "nats-credentials")} holds none`,
      );
      const stranger = join(elsewhere.path, "stranger.nk");
      writeFileSync(stranger, new TextDecoder().decode(createUser().getSeed()), { mode: 0o600 });
      const unknown = await runConcord({ DATA_DIR: dir.path, NATS_NKEY_SEED: stranger }, ["dlq", "list", "--nats", nats().url]);
      expect(unknown.status).toBe(1);
      expect(unknown.stderr).toContain(`Authorization Violation: it does not know the seed in ${stranger}`);
    } finally {
      elsewhere.remove();
    }
  });

  it("says, given the observer's seed to a command that changes things, that it takes the operator's", { timeout: 60_000 }, async () => {
    // A dead letter the replay's check passes: an order's event in SHOP_ORDERS, filed by the product service's user.
    const id = uuidv7();
    const subject = `shop.orders.v1.order.${id}.placed`;
    const headers = { "ce-specversion": "1.0", "ce-id": id, "ce-type": "shop.orders.v1.OrderPlaced", "ce-source": "orders" };
    const h = natsHeaders();
    for (const [name, value] of Object.entries(headers)) h.set(name, value);
    const data = new Uint8Array([1]);
    const asOrders = await connectAs("orders");
    const { seq } = await asOrders.jetstream().publish(subject, data, { headers: h });
    // The consumer to redeliver for, unless the test before made it.
    const consumers = (await asOrders.jetstreamManager()).consumers;
    await consumers.info("SHOP_PRODUCTS", durable).catch(() => consumers.add("SHOP_PRODUCTS", { durable_name: durable, filter_subject: "shop.products.v1.reservation.*.reserved", ack_policy: AckPolicy.Explicit }));
    await fileDeadLetter((await connectAs("products")).jetstream(), deadLetterStreamSpec, { consumer: "products-order-placed", stream: "SHOP_ORDERS", subject, streamSequence: seq, deliveryCount: 5, headers, data, storedAt: new Date() }, "the handler gave up");
    const reserved = natsHeaders();
    for (const [name, value] of Object.entries({ ...headers, "ce-id": uuidv7(), "ce-type": "shop.products.v1.StockReserved", "ce-source": "products" })) reserved.set(name, value);
    const event = await (await connectAs("products")).jetstream().publish(`shop.products.v1.reservation.${id}.reserved`, data, { headers: reserved });
    // The observer's seed, as one set for the nats CLI: the server refuses every publish the command makes.
    const asObserver = { DATA_DIR: dir.path, NATS_NKEY_SEED: nats().seedFile("observer") };
    const runs = {
      replay: await runConcord(asObserver, ["dlq", "replay", "--all", "--nats", nats().url]),
      purge: await runConcord(asObserver, ["dlq", "purge", "--yes", "--nats", nats().url]),
      redeliver: await runConcord(asObserver, ["consumer", "redeliver", durable, "--from", String(event.seq), "--to", String(event.seq), "--nats", nats().url]),
    };
    for (const [command, run] of Object.entries(runs)) {
      expect(run.status, command).toBe(1);
      expect(run.stderr, command).toMatch(/Permissions Violation for Publish to "[^"]+": the seed connected with is not the operator's; dlq replay, dlq purge, consumer redeliver and streams provision act as the operator: leave NATS_NKEY_SEED unset/);
      expect(run.stderr, command).not.toContain(`'Permissions`);
    }
    expect(runs.replay.stderr).toContain("replaying dead letter");
  });
});

describe("redeliver", () => {
  const nc = useNatsConnection(useNatsServer(), { streams: allStreams });

  it("reads each event again when its turn comes: one gone from the stream meanwhile is left out, saying so, and the others published", async () => {
    const jsm = await nc().jetstreamManager();
    const info = await jsm.consumers.add("SHOP_PRODUCTS", { durable_name: "late-reader", filter_subject: "shop.products.v1.reservation.*.reserved", ack_policy: AckPolicy.Explicit });
    const seqs: number[] = [];
    for (const n of [1, 2, 3]) {
      const h = natsHeaders();
      h.set("ce-id", uuidv7());
      h.set("ce-type", "shop.products.v1.StockReserved");
      seqs.push((await nc().jetstream().publish(`shop.products.v1.reservation.order-${n}.reserved`, new Uint8Array([n]), { headers: h })).seq);
    }
    const published: number[] = [];
    const skipped: Array<[number, string]> = [];
    const { count } = await redeliver(nc(), info, { from: seqs[0], to: seqs[2] }, {
      dryRun: false,
      each: (e) => published.push(e.seq),
      skipped: (seq, why) => skipped.push([seq, why]),
      betweenPasses: async () => {
        await jsm.streams.deleteMessage("SHOP_PRODUCTS", seqs[1]);
      },
    });
    expect(count).toBe(2);
    expect(published).toEqual([seqs[0], seqs[2]]);
    expect(skipped).toEqual([[seqs[1], "it is gone from the stream since the range was read"]]);
  });

  /** `count` events on late-reader's subject; resolves with their stream sequences. */
  const publishReserved = async (count: number): Promise<number[]> => {
    const seqs: number[] = [];
    for (let n = 0; n < count; n++) {
      const h = natsHeaders();
      h.set("ce-id", uuidv7());
      h.set("ce-type", "shop.products.v1.StockReserved");
      seqs.push((await nc().jetstream().publish(`shop.products.v1.reservation.order-${n}.reserved`, new Uint8Array([1]), { headers: h })).seq);
    }
    return seqs;
  };

  it("stops before the next event once asked to, the one in hand published, saying where", async () => {
    const info = await (await nc().jetstreamManager()).consumers.info("SHOP_PRODUCTS", "late-reader");
    const seqs = await publishReserved(4);
    const stop = new AbortController();
    const published: number[] = [];
    const outcome = await redeliver(nc(), info, { from: seqs[0], to: seqs[3] }, {
      dryRun: false,
      stop: stop.signal,
      each: (e) => {
        published.push(e.seq);
        if (published.length === 2) stop.abort();
      },
      skipped: () => undefined,
    });
    expect(outcome).toEqual({ count: 2, stoppedAt: seqs[2] });
    expect(published).toEqual(seqs.slice(0, 2));
  });

  it("says on Ctrl-C how many it published and the command that publishes the rest (exit 130)", { timeout: 60_000 }, async () => {
    // It had no Ctrl-C handling: killed by the signal, it said nothing of how far it got.
    const seqs = await publishReserved(3_000);
    const before = (await (await nc().jetstreamManager()).streams.info("SHOP_PRODUCTS")).state.messages;
    const url = nc().getServer();
    const run = await runConcord({ NATS_URL: `nats://${url}`, NATS_NKEY_SEED: undefined, DATA_DIR: "/nonexistent" }, ["consumer", "redeliver", "late-reader", "--from", String(seqs[0]), "--to", String(seqs.at(-1))], 30_000, (child) => {
      child.stdout!.once("data", () => child.kill("SIGINT"));
    });
    expect(run.status, run.stderr).toBe(130);
    const lines = run.stdout.trim().split("\n").map((l) => JSON.parse(l) as { redelivered: number });
    const next = lines.at(-1)!.redelivered + 1;
    expect(lines.length).toBeLessThan(seqs.length);
    expect(run.stderr).toContain("concord consumer redeliver: stopping once the event in hand is published");
    expect(run.stderr).toContain(
      `concord consumer redeliver: stopped: published ${lines.length} event(s) of stream SHOP_PRODUCTS sequences ${seqs[0]} to ${seqs.at(-1)} again for late-reader, those before sequence ${next}; \`npx concord consumer redeliver late-reader --from ${next} --to ${seqs.at(-1)}\` publishes the rest`,
    );
    expect((await (await nc().jetstreamManager()).streams.info("SHOP_PRODUCTS")).state.messages).toBe(before + lines.length);
  });
});
