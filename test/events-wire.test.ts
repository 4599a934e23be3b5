import { describe, expect, it } from "vitest";
import { allEvents, allStreams } from "../gen/ts/concord_streams.js";
import { OrderPlacedEvent } from "../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { createEventPublisher, type EventDescriptor } from "../platform/events/index.js";
import { uuidv7 } from "../platform/ids/index.js";
import { useNatsConnection, useNatsServer } from "./support/nats-server.js";

describe("events on the wire", () => {
  const nc = useNatsConnection(useNatsServer(), { streams: allStreams });

  it.each(allEvents.map((e) => [e.typeName, e] as const))("round-trips %s with its CloudEvents headers", async (_name, descriptor) => {
    const event = descriptor as EventDescriptor<any>;
    const sample = event.codec.fromPartial!({ orderId: uuidv7(), productId: uuidv7(), customerId: "c-1", reason: "because", linesVersion: 3 });
    const publisher = createEventPublisher({ nc: nc(), source: "wire-test" });
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const published = await publisher.publish(event, sample, { traceparent });
    const stored = await (await nc().jetstreamManager()).streams.getMessage(event.stream, { seq: published.streamSequence });
    expect(stored.subject).toBe(published.subject);
    expect(stored.subject).not.toContain("{");
    const h = stored.header;
    expect({
      specversion: h.get("ce-specversion"),
      type: h.get("ce-type"),
      source: h.get("ce-source"),
      contentType: h.get("content-type"),
      traceparent: h.get("traceparent"),
      msgId: h.get("Nats-Msg-Id"),
    }).toEqual({ specversion: "1.0", type: event.typeName, source: "wire-test", contentType: "application/protobuf", traceparent, msgId: published.eventId });
    expect(h.get("ce-id")).toBe(published.eventId);
    expect(Number.isNaN(Date.parse(h.get("ce-time")))).toBe(false);
    expect(event.codec.decode(stored.data)).toEqual(sample);
  });

  it.each(["a.b", "a*", ">", "a b", "tab\there", ""])("refuses the subject token %j and publishes nothing", async (token) => {
    const jsm = await nc().jetstreamManager();
    const before = (await jsm.streams.info("SHOP_ORDERS")).state.messages;
    const publisher = createEventPublisher({ nc: nc(), source: "wire-test" });
    const message = OrderPlacedEvent.codec.fromPartial({ orderId: token });
    await expect(publisher.publish(OrderPlacedEvent, message)).rejects.toThrow(/order_id/);
    expect((await jsm.streams.info("SHOP_ORDERS")).state.messages).toBe(before);
  });
});
