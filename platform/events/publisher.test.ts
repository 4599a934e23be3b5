import type { NatsError } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, useNatsServer } from "../../test/support/nats-server.js";
import { sampleStream, ThingHappened } from "../../test/support/sample-events.js";
import { isUuid } from "../ids/index.js";
import { createLogger } from "../log/index.js";
import { connectEventBus, createEventPublisher, ensureStreams, isTraceparent, subjectFor, type EventBus } from "./index.js";

const logger = createLogger({ service: "publisher-test", level: "silent" });

describe("subjectFor", () => {
  const { event } = sampleStream("subject");

  it("fills each token of the template from the event", () => {
    expect(subjectFor(event, { thingId: "t-1", note: "" })).toBe("test.subject.thing.t-1.happened");
  });

  it("fills templates of several tokens, a token given twice, and a template without tokens", () => {
    const of = (subjectTemplate: string) => ({ ...event, subjectTemplate, subjectTokens: (e: { thingId: string; note: string }) => ({ thing_id: e.thingId, note: e.note }) });
    const thing = { thingId: "t-1", note: "n" };
    expect(subjectFor(of("a.{thing_id}.{note}.b"), thing)).toBe("a.t-1.n.b");
    expect(subjectFor(of("{thing_id}.{note}"), thing)).toBe("t-1.n");
    expect(subjectFor(of("a.{thing_id}.x.{thing_id}"), thing)).toBe("a.t-1.x.t-1");
    expect(subjectFor(of("a.b.c"), thing)).toBe("a.b.c");
    expect(() => subjectFor(of("a.{thing_id}.{other}"), thing)).toThrow(/no value for token \{other\} of "a\.\{thing_id\}\.\{other\}"/);
    expect(() => subjectFor(of("a.{thing_id}.{note}"), { thingId: "t-1", note: "x.y" })).toThrow(/"x\.y" of token \{note\} holds "\."/);
  });

  it.each([".", "a.b", "*", ">", " ", "a b", "tab\there", "", "nul\u0000", "bell\u0007", "del\u007f"])("refuses the token value %j, naming event type, token and value", (value) => {
    expect(() => subjectFor(event, { thingId: value, note: "" })).toThrow(
      new RegExp(`concord\\.test\\.v1\\.ThingHappened.*${JSON.stringify(value).replace(/[.*\\]/g, "\\$&")}.*\\{thing_id\\}`),
    );
  });
});

describe("createEventPublisher", () => {
  const server = useNatsServer();
  let bus: EventBus;
  const sample = sampleStream("publish");

  beforeAll(async () => {
    bus = await connectEventBus({ url: server().url, name: "publisher-test", logger });
    await ensureStreams(bus.jsm, [sample.stream]);
  });
  afterAll(async () => {
    await bus?.close();
  });

  it("publishes binary protobuf with the CloudEvents headers, the id also as Nats-Msg-Id", async () => {
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const published = await publisher.publish(sample.event, { thingId: "t-1", note: "hello" }, { traceparent });

    const stored = await bus.jsm.streams.getMessage(sample.stream.name, { seq: published.streamSequence });
    expect(stored.subject).toBe("test.publish.thing.t-1.happened");
    expect(ThingHappened.decode(stored.data)).toEqual({ thingId: "t-1", note: "hello" });
    const h = stored.header;
    expect(h.get("ce-specversion")).toBe("1.0");
    expect(h.get("ce-id")).toBe(published.eventId);
    expect(isUuid(published.eventId) && published.eventId[14]).toBe("7");
    expect(h.get("Nats-Msg-Id")).toBe(published.eventId);
    expect(h.get("ce-type")).toBe("concord.test.v1.ThingHappened");
    expect(h.get("ce-source")).toBe("things");
    expect(h.get("ce-time")).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    expect(Math.abs(Date.parse(h.get("ce-time")) - Date.now())).toBeLessThan(10_000);
    expect(h.get("content-type")).toBe("application/protobuf");
    expect(h.get("traceparent")).toBe(traceparent);
  });

  it("starts a new trace when the caller gives none or a malformed one", async () => {
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    const first = await publisher.publish(sample.event, { thingId: "t-2", note: "" });
    const second = await publisher.publish(sample.event, { thingId: "t-3", note: "" }, { traceparent: "not-a-trace" });
    const a = (await bus.jsm.streams.getMessage(sample.stream.name, { seq: first.streamSequence })).header.get("traceparent");
    const b = (await bus.jsm.streams.getMessage(sample.stream.name, { seq: second.streamSequence })).header.get("traceparent");
    expect(isTraceparent(a) && isTraceparent(b)).toBe(true);
    expect(a).not.toBe(b);
  });

  it("rejects, saying so, an event over its stream's largest message size (JetStream's 10054)", async () => {
    const limited = sampleStream("publishlimit");
    await ensureStreams(bus.jsm, [{ ...limited.stream, maxMessageBytes: 4_096 }]);
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    const refused = await publisher.publish(limited.event, { thingId: "t-1", note: "n".repeat(5_000) }).catch((err: unknown) => err);
    expect((refused as Error).message).toMatch(/^publishing concord\.test\.v1\.ThingHappened \S+ on test\.publishlimit\.thing\.t-1\.happened failed: message size exceeds maximum allowed$/);
    expect(((refused as Error).cause as NatsError).api_error?.err_code).toBe(10054);
    expect((await bus.jsm.streams.info(limited.stream.name)).state.messages).toBe(0);
  });

  it("refuses a bad subject token value and publishes nothing", async () => {
    const publisher = createEventPublisher({ nc: bus.nc, source: "things" });
    const before = (await bus.jsm.streams.info(sample.stream.name)).state.messages;
    for (const value of [".", "*", ">", " ", ""]) {
      await expect(publisher.publish(sample.event, { thingId: value, note: "" })).rejects.toThrow(/ThingHappened.*\{thing_id\}/);
    }
    expect((await bus.jsm.streams.info(sample.stream.name)).state.messages).toBe(before);
  });

  it("rejects unknown options and a missing source", () => {
    expect(() => createEventPublisher({ nc: bus.nc, source: "things", extra: 1 } as never)).toThrow(/unknown option extra/);
    expect(() => createEventPublisher({ nc: bus.nc, source: "" })).toThrow(/source/);
  });
});

describe("connectEventBus", () => {
  it("fails at once, naming the URL, when no server answers", async () => {
    const url = `nats://127.0.0.1:${await freePort()}`;
    await expect(connectEventBus({ url, name: "nobody", logger })).rejects.toThrow(`connecting to NATS at ${url} failed`);
  });
});
