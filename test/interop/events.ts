/**
 * JetStream as the interop tests need it, driven by gen/events.json (the
 * language-neutral manifest the Go and Python SDKs come with): streams, event
 * subjects, and a stand-in for the order service's event publishing until
 * the services publish events themselves.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { headers as natsHeaders, RetentionPolicy, StorageType, type NatsConnection } from "nats";
import { OrderConfirmed, OrderPlaced } from "../../gen/ts/shop/orders/v1/order_events_pb.js";
import type { Order } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import type { EventsManifest } from "../../tools/contracts/sdk-manifest.js";
import { repoRoot } from "./programs.js";

/** gen/events.json. */
export function eventsManifest(): EventsManifest {
  return JSON.parse(readFileSync(join(repoRoot, "gen/events.json"), "utf8")) as EventsManifest;
}

/** Creates every stream of the manifest that the server does not have yet. */
export async function provisionStreams(nc: NatsConnection, manifest: EventsManifest): Promise<void> {
  const jsm = await nc.jetstreamManager();
  for (const stream of manifest.streams) {
    await jsm.streams.add({
      name: stream.name,
      subjects: [...stream.subjects],
      storage: stream.storage === "memory" ? StorageType.Memory : StorageType.File,
      num_replicas: stream.replicas,
      retention: RetentionPolicy.Limits,
      max_age: stream.maxAgeMs * 1_000_000,
      duplicate_window: stream.duplicateWindowMs * 1_000_000,
    });
  }
}

/** The subject of an event of `type` from the manifest's template. */
export function subjectOf(manifest: EventsManifest, type: string, tokens: Readonly<Record<string, string>>): string {
  const event = manifest.events.find((e) => e.type === type);
  if (!event) throw new Error(`gen/events.json has no event ${type}`);
  return event.subjectTemplate.replace(/\{([^{}]+)\}/g, (_, name: string) => {
    const value = tokens[name];
    if (!value || /[.*>\s]/.test(value)) throw new Error(`bad value ${JSON.stringify(value)} for {${name}} of ${type}`);
    return value;
  });
}

/**
 * STAND-IN until the events runtime lands: publishes OrderPlaced and
 * OrderConfirmed for `order` exactly as DESIGN.md says the order service
 * does (CloudEvents headers in binary mode, the event id as Nats-Msg-Id,
 * the binary Protobuf payload), so the Go and Python consumers can be
 * tested now. Once the services run with NATS they publish these events
 * themselves and this is not called.
 */
export async function publishOrderEventsAsOrderService(nc: NatsConnection, manifest: EventsManifest, order: Order): Promise<void> {
  const js = nc.jetstream();
  const send = async (type: string, payload: Uint8Array): Promise<void> => {
    const id = randomUUID();
    const h = natsHeaders();
    h.set("ce-specversion", "1.0");
    h.set("ce-id", id);
    h.set("ce-type", type);
    h.set("ce-source", "orders");
    h.set("ce-time", new Date().toISOString());
    h.set("content-type", "application/protobuf");
    h.set("traceparent", `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`);
    await js.publish(subjectOf(manifest, type, { order_id: order.id }), payload, { msgID: id, headers: h });
  };
  await send(
    "shop.orders.v1.OrderPlaced",
    OrderPlaced.encode({ orderId: order.id, customerId: order.customerId, lines: order.lines, total: order.total, linesVersion: 1 }).finish(),
  );
  await send("shop.orders.v1.OrderConfirmed", OrderConfirmed.encode({ orderId: order.id, customerId: order.customerId, total: order.total }).finish());
}
