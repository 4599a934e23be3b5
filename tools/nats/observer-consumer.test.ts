import { readFileSync } from "node:fs";
import { join } from "node:path";
import { connect, DeliverPolicy, nkeyAuthenticator, type NatsConnection } from "nats";
import { afterAll, describe, expect, it } from "vitest";
import { natsAuthorization } from "../../gen/ts/concord_nats.js";
import { useNatsServer } from "../../test/support/nats-server.js";
import { createTempDir } from "../../test/support/temp-dir.js";
import { openObserverReader } from "./observer-consumer.js";

describe("openObserverReader", () => {
  const dir = createTempDir("concord-observer-reader-");
  afterAll(() => dir.remove());
  const nats = useNatsServer({ credentialsDir: join(dir.path, "credentials") });
  const connections: NatsConnection[] = [];
  afterAll(async () => {
    await Promise.all(connections.map((nc) => nc.close()));
  });
  const connectAs = async (user: "observer" | "operator") => {
    const seed = new TextEncoder().encode(readFileSync(nats().seedFile(user), "utf8").trim());
    const nc = await connect({ servers: nats().url, authenticator: nkeyAuthenticator(seed), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    connections.push(nc);
    return nc;
  };
  /** Publishes `count` dead letters on one subject as the operator may (any stream's subjects are the owner's); resolves with their sequences. */
  const publish = async (nc: NatsConnection, subject: string, count: number) => {
    const seqs: number[] = [];
    for (let i = 0; i < count; i++) seqs.push((await nc.jetstream().publish(subject, new TextEncoder().encode(`${i}`))).seq);
    return seqs;
  };
  const fromStart = { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 1 } as const;
  const readAll = async (reader: Awaited<ReturnType<typeof openObserverReader>>, want: number) => {
    const seqs: number[] = [];
    for (let tries = 0; seqs.length < want && tries < 20; tries++) for (const m of await reader.fetch({ max_messages: 100, expires: 1_000 })) seqs.push(m.seq);
    return seqs;
  };

  it("gives two readers from one start a name each, both reading every message in order, and gives the names back on close", async () => {
    const operator = await connectAs("operator");
    const subject = "shop.orders.v1.order.reader-1.placed";
    const seqs = await publish(operator, subject, 5);
    const observer = await connectAs("observer");
    const jsm = await observer.jetstreamManager();
    const before = (await jsm.streams.info("SHOP_ORDERS")).state.consumer_count;
    const [a, b] = [await openObserverReader(observer, { stream: "SHOP_ORDERS", start: fromStart, filterSubject: subject }), await openObserverReader(observer, { stream: "SHOP_ORDERS", start: fromStart, filterSubject: subject })];
    expect([a.name, b.name]).toEqual(natsAuthorization.observer.consumerNames.slice(0, 2));
    expect(await readAll(a, 5)).toEqual(seqs);
    expect(await readAll(b, 5)).toEqual(seqs);
    await a.close();
    await b.close();
    expect((await jsm.streams.info("SHOP_ORDERS")).state.consumer_count).toBe(before);
  });

  it("goes on from the next message, none lost or repeated, when its consumer is deleted under it or the server restarts", { timeout: 60_000 }, async () => {
    const operator = await connectAs("operator");
    const subject = "shop.orders.v1.order.reader-2.placed";
    const observer = await connectAs("observer");
    const reader = await openObserverReader(observer, { stream: "SHOP_ORDERS", start: { deliver_policy: DeliverPolicy.New }, filterSubject: subject });
    const first = await publish(operator, subject, 3);
    expect(await readAll(reader, 3)).toEqual(first);
    // Deleted, as the server does once nobody pulled for a minute.
    await (await observer.jetstreamManager()).consumers.delete("SHOP_ORDERS", reader.name);
    const second = await publish(operator, subject, 3);
    expect(await readAll(reader, 3)).toEqual(second);
    const operatorJsm = await operator.jetstreamManager();
    await nats().restart();
    await expect.poll(() => operatorJsm.streams.info("SHOP_ORDERS").then(() => true, () => false), { timeout: 20_000 }).toBe(true);
    const third = await publish(operator, subject, 3);
    expect(await readAll(reader, 3)).toEqual(third);
    await reader.close();
  });
});
