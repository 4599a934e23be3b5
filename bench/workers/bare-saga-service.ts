/**
 * The baseline of the saga scenario: the order saga's messages with nothing
 * else, two processes standing in for the two services.
 *
 * - BARE_ROLE=orders: a bare grpc-js server answering CreateOrder with a
 *   pre-encoded two-line order (its id written in per call) after publishing
 *   its OrderPlaced; a raw pull consumer of StockReserved that publishes
 *   OrderConfirmed and acks.
 * - BARE_ROLE=products: a raw pull consumer of OrderPlaced that publishes
 *   StockReserved and acks.
 *
 * Same subjects, streams, consumer settings, pull batch, payload sizes,
 * CloudEvents headers and Nats-Msg-Id as the services; no request decoding,
 * validation, database, inbox, outbox or logging. PubAcks are awaited off
 * the path (a failure is counted and printed at exit), and an ack follows
 * the publish in the same tick, as the services do after their commit. The
 * scenario provisions the streams and consumers first.
 *
 * Env: BARE_ROLE, NATS_URL, BARE_LISTEN (orders: host:port).
 */
import { Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall } from "@grpc/grpc-js";
import { connect, type JetStreamClient, type JsMsg } from "nats";
import { CreateOrderResponse, OrderServiceService, OrderState } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { OrderConfirmedEvent, OrderPlacedEvent } from "../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { StockReservedEvent } from "../../gen/ts/shop/products/v1/product_events_jetstream.js";
import { bareSagaConsumers, idGenerator, rawHeaderFactory, sampleOrderPlaced } from "../lib/events.js";

/** As the services pull (startConsumers' default pullBatch). */
const pullBatch = 64;

const role = process.env.BARE_ROLE;
const natsUrl = process.env.NATS_URL;
if ((role !== "orders" && role !== "products") || !natsUrl) {
  console.error("bare-saga-service: BARE_ROLE (orders or products) and NATS_URL are required");
  process.exit(2);
}

const nc = await connect({ servers: natsUrl.split(","), name: `bench-bare-saga-${role}`, noAsyncTraces: true });
const js = nc.jetstream();
const nextId = idGenerator();
const headersFor = rawHeaderFactory(role);
/** Every event's payload: an OrderPlaced of a two-line order, about the size of each of the saga's events. */
const payload = OrderPlacedEvent.codec.encode(sampleOrderPlaced(nextId())).finish();
let failedPublishes = 0;
const publish = (subject: string, type: string): void => {
  const id = nextId();
  js.publish(subject, payload, { msgID: id, headers: headersFor(id, type) }).catch(() => void failedPublishes++);
};
/** The order id a subject names: `<package parts>.<entity>.<id>.<verb>`. */
const idOf = (subject: string): string => subject.split(".")[4];

/** Takes messages as the raw consume baseline does: nats.js `consume()`, one handler call each. */
async function consume(jsClient: JetStreamClient, spec: { stream: string; durable: string }, handle: (msg: JsMsg) => void): Promise<void> {
  const consumer = await jsClient.consumers.get(spec.stream, spec.durable);
  const messages = await consumer.consume({ max_messages: pullBatch });
  for await (const msg of messages) handle(msg);
}

let server: Server | undefined;
if (role === "orders") {
  const placeholder = "00000000-0000-0000-0000-000000000000";
  const at = new Date();
  const sample = sampleOrderPlaced(placeholder);
  const template = Buffer.from(
    CreateOrderResponse.encode(
      CreateOrderResponse.fromPartial({
        order: {
          id: placeholder,
          customerId: sample.customerId,
          lines: sample.lines,
          total: sample.total,
          state: OrderState.ORDER_STATE_PENDING,
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
  server = new Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
  server.register(
    OrderServiceService.createOrder.path,
    (_call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => {
      const orderId = nextId();
      const response = Buffer.from(template);
      response.write(orderId, idAt, "latin1");
      publish(`shop.orders.v1.order.${orderId}.placed`, OrderPlacedEvent.typeName);
      callback(null, response);
    },
    identity,
    identity,
    "unary",
  );
  const listen = process.env.BARE_LISTEN ?? "127.0.0.1:0";
  await new Promise<void>((resolve, reject) => server!.bindAsync(listen, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  void consume(js, bareSagaConsumers.stockReserved, (msg) => {
    publish(`shop.orders.v1.order.${idOf(msg.subject)}.confirmed`, OrderConfirmedEvent.typeName);
    msg.ack();
  });
} else {
  void consume(js, bareSagaConsumers.orderPlaced, (msg) => {
    publish(`shop.products.v1.reservation.${idOf(msg.subject)}.reserved`, StockReservedEvent.typeName);
    msg.ack();
  });
}
console.log(`bare-saga-service: ${role} ready`);

process.once("SIGTERM", () => {
  server?.forceShutdown();
  void nc.close().finally(() => {
    if (failedPublishes > 0) console.log(`bare-saga-service: ${failedPublishes} publishes failed`);
    process.exit(0);
  });
});
