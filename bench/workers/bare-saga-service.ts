/**
 * The baseline of the saga scenario: the order saga's messages with nothing
 * else, two processes standing in for the two services.
 *
 * - BARE_ROLE=orders: a bare grpc-js server answering CreateOrder with a
 *   pre-encoded two-line order (its id written in per call) after publishing
 *   its OrderPlaced; a consumer of StockReserved that publishes
 *   OrderConfirmed and acks.
 * - BARE_ROLE=products: a consumer of OrderPlaced that publishes
 *   StockReserved and acks.
 *
 * On the wire as the services are: the same subjects, streams and consumer
 * settings; events of the services' payload sizes with their CloudEvents
 * headers and Nats-Msg-Id, published through the platform's publish window
 * (as the outbox relay does: plain `nc.publish` with a reply subject, one
 * subscription for the PubAcks); messages taken through the platform's pull
 * intake (as startConsumers does: up to 128 pulled ahead, batches of up to
 * 64); one NATS connection each; channelz off, as the platform's server has
 * it. Nothing else: no request decoding, validation, database, inbox,
 * outbox, logging, metrics or health service. An ack goes in the same tick as
 * the publish, as the services send theirs after their commit. The scenario
 * provisions the streams and consumers first.
 *
 * Env: BARE_ROLE, NATS_URL, BARE_LISTEN (orders: host:port).
 */
import { Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall } from "@grpc/grpc-js";
import { connect, type JsMsg } from "nats";
import { OrderConfirmed } from "../../gen/ts/shop/orders/v1/order_events_pb.js";
import { OrderConfirmedEvent, OrderPlacedEvent } from "../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { CreateOrderResponse, OrderServiceService, OrderState } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { StockReservedEvent } from "../../gen/ts/shop/products/v1/product_events_jetstream.js";
import { StockReserved } from "../../gen/ts/shop/products/v1/product_events_pb.js";
import type * as CloudEventsModule from "../../platform/events/cloud-events.js";
import type * as PublishWindowModule from "../../platform/events/publish-window.js";
import type * as PullIntakeModule from "../../platform/events/pull-intake.js";
import { compiledModule, compiledPlatform } from "../lib/compiled.js";
import { bareSagaConsumers, idGenerator, sampleOrderPlaced } from "../lib/events.js";

/** startConsumers' default: batches of up to 64, twice that pulled ahead. */
const pullBatch = 64;

const role = process.env.BARE_ROLE;
const natsUrl = process.env.NATS_URL;
if ((role !== "orders" && role !== "products") || !natsUrl) {
  console.error("bare-saga-service: BARE_ROLE (orders or products) and NATS_URL are required");
  process.exit(2);
}

// The platform's JetStream side as production runs it (compiled).
const [{ createPublishWindow }, { createPullIntake, defaultMaxHeldBytes, maxMessageBytesOf }, { eventHeaderBlock, eventHeaders }, { log }] = await Promise.all([
  compiledModule<typeof PublishWindowModule>("events/publish-window.js"),
  compiledModule<typeof PullIntakeModule>("events/pull-intake.js"),
  compiledModule<typeof CloudEventsModule>("events/cloud-events.js"),
  compiledPlatform(),
]);
const logger = log.createLogger({ service: `bare-saga-${role}`, level: "warn" });

const nc = await connect({ servers: natsUrl.split(","), name: `bench-bare-saga-${role}`, noAsyncTraces: true });
const js = nc.jetstream();
const nextId = idGenerator();
const sample = sampleOrderPlaced(nextId());
const payloads = {
  placed: OrderPlacedEvent.codec.encode(sample).finish(),
  reserved: StockReserved.encode({ orderId: sample.orderId, linesVersion: 1, lines: sample.lines.map((l) => ({ productId: l.productId, quantity: l.quantity })) }).finish(),
  confirmed: OrderConfirmed.encode({ orderId: sample.orderId, customerId: sample.customerId, total: sample.total }).finish(),
};
const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/** The header block as the outbox stores it: CloudEvents headers and Nats-Msg-Id, written by the platform's own `eventHeaderBlock`. */
const headerBlock = (id: string, subject: string, type: string, payload: Uint8Array): Buffer =>
  eventHeaderBlock({
    id,
    subject,
    type,
    payload,
    headers: { [eventHeaders.source]: role, [eventHeaders.time]: new Date().toISOString(), [eventHeaders.traceparent]: traceparent },
  });
let failedPublishes = 0;
const window = createPublishWindow<null>({ nc, publishTimeoutMs: 5_000, onOutcome: (_, outcome) => void (outcome.ok || failedPublishes++) });
const publish = (subject: string, type: string, payload: Uint8Array): void => window.send({ subject, payload, headers: headerBlock(nextId(), subject, type, payload) }, null);
/** The order id a subject names: `<package parts>.<entity>.<id>.<verb>`. */
const idOf = (subject: string): string => subject.split(".")[4];

/** Takes the messages of one of the baseline's consumers as startConsumers does, handing each to `handle`, then acks it. */
function consume(spec: { readonly stream: string; readonly durable: string; readonly ackWaitMs: number }, handle: (msg: JsMsg) => void) {
  const intake = createPullIntake({ nc, js, stream: spec.stream, durable: spec.durable, limit: 2 * pullBatch, maxBytes: defaultMaxHeldBytes, maxMessageBytes: maxMessageBytesOf(nc), ackWaitMs: spec.ackWaitMs, reopenDelayMs: 1_000, logger });
  void (async () => {
    for (let batch = await intake.take(pullBatch); batch; batch = await intake.take(pullBatch)) {
      for (const msg of batch) {
        handle(msg);
        intake.settle(msg, { kind: "ack" });
      }
    }
  })();
  return intake;
}

let server: Server | undefined;
let intake: ReturnType<typeof consume>;
if (role === "orders") {
  const placeholder = "00000000-0000-0000-0000-000000000000";
  const at = new Date();
  const template = Buffer.from(
    CreateOrderResponse.encode(
      CreateOrderResponse.fromPartial({
        order: {
          id: placeholder,
          customerId: sample.customerId,
          state: OrderState.ORDER_STATE_PENDING,
          lines: sample.lines,
          total: sample.total,
          shippingAddress: { recipient: "Ada Lovelace", line1: "12 St James's Square", line2: "", city: "London", postalCode: "SW1Y 4JH", countryCode: "GB" },
          version: 1,
          createTime: at,
          updateTime: at,
        },
      }),
    ).finish(),
  );
  const idAt = template.indexOf(placeholder);
  const identity = (b: Buffer) => b;
  server = new Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024, "grpc.enable_channelz": 0 });
  server.register(
    OrderServiceService.createOrder.path,
    (_call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => {
      const orderId = nextId();
      const response = Buffer.from(template);
      response.write(orderId, idAt, "latin1");
      publish(`shop.orders.v1.order.${orderId}.placed`, OrderPlacedEvent.typeName, payloads.placed);
      callback(null, response);
    },
    identity,
    identity,
    "unary",
  );
  const listen = process.env.BARE_LISTEN ?? "127.0.0.1:0";
  await new Promise<void>((resolve, reject) => server!.bindAsync(listen, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  intake = consume(bareSagaConsumers.stockReserved, (msg) => publish(`shop.orders.v1.order.${idOf(msg.subject)}.confirmed`, OrderConfirmedEvent.typeName, payloads.confirmed));
} else {
  intake = consume(bareSagaConsumers.orderPlaced, (msg) => publish(`shop.products.v1.reservation.${idOf(msg.subject)}.reserved`, StockReservedEvent.typeName, payloads.reserved));
}
console.log(`bare-saga-service: ${role} ready`);

process.once("SIGTERM", () => {
  server?.forceShutdown();
  void intake
    .close()
    .then(() => {
      // Publishes still waiting for their PubAck count as failed.
      window.abandon("stopping");
      window.close();
      return nc.close();
    })
    .catch((err: unknown) => {
      console.error(`bare-saga-service: stopping failed: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    })
    .finally(() => {
      console.log(`bare-saga-service: ${failedPublishes} publishes failed`);
      process.exit();
    });
});
