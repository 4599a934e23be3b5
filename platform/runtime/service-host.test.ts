import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { ShopOrdersStream } from "../../gen/ts/shop/orders/v1/order_events_jetstream.js";
import { ProductCreatedEvent, ShopProductsStream } from "../../gen/ts/shop/products/v1/product_events_jetstream.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { ProductServiceConsumers } from "../../gen/ts/shop/products/v1/product_service_jetstream.js";
import { bindConsumers } from "../events/index.js";
import { getProductOnly } from "../../test/support/get-product-only.js";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { Code } from "../errors/index.js";
import { checkHealth, createClient } from "../grpc/index.js";
import { ProductServiceMethods } from "../../gen/ts/shop/products/v1/product_service_rpc.js";
import { useNatsServer } from "../../test/support/nats-server.js";
import { usePostgresServer } from "../../test/support/postgres.js";
import { eventually } from "../../test/support/streams.js";
import { insecureGrpc } from "./grpc-security.js";
import { createServiceHost } from "./service-host.js";

const dir = tempDirForSuite("service-host-");

describe("createServiceHost", () => {
  it("logs a failed after-commit callback once, with its error, and answers its transaction's caller with its result", async () => {
    const { lines, logger } = capturedLogger("hosted");
    const host = await createServiceHost({
      name: "hosted",
      listen: "127.0.0.1:0",
      database: join(dir, "hosted.db"),
      migrations: [{ id: "hosted_0001_notes", sql: "CREATE TABLE notes (text TEXT NOT NULL)" }],
      // Never reached: the host is not started.
      natsUrl: "nats://127.0.0.1:1",
      streams: [],
      descriptorSet,
      security: insecureGrpc,
      logger,
    });
    try {
      const result = await host.db.transaction(async (tx) => {
        await tx.run("INSERT INTO notes (text) VALUES ('kept')");
        tx.afterCommit(() => {
          throw new Error("the callback failed");
        });
        return "answered";
      });
      expect(result).toBe("answered");
      expect(await host.db.query("SELECT text FROM notes")).toEqual([{ text: "kept" }]);
      const logged = lines.filter((l) => l.level === "error");
      expect(logged).toHaveLength(1);
      expect(logged[0]).toMatchObject({ msg: expect.stringContaining("after a transaction committed failed"), err: { message: "the callback failed" } });
    } finally {
      await host.server.shutdown();
      await host.events.stop();
      await host.db.close();
    }
  });

  it("refuses to start, stopping what it opened, a service that bound no consumer on a stream of another service its contract subscribes to, and warns of one that added no gRPC service", async () => {
    const hostOf = (file: string) =>
      createServiceHost({
        name: "products",
        listen: "127.0.0.1:0",
        database: join(dir, file),
        migrations: [],
        // Never reached: the start is refused before it connects.
        natsUrl: "nats://127.0.0.1:1",
        streams: [ShopProductsStream, ShopOrdersStream],
        streamSources: { SHOP_PRODUCTS: "products", SHOP_ORDERS: "orders" },
        descriptorSet,
        security: insecureGrpc,
        logger: captured.logger,
      });
    const captured = capturedLogger("products");
    const noService = await hostOf("no-service.db");
    // Neither: refused for its consumers, and told of its gRPC service first (a service of events alone has none to add).
    await expect(noService.start({ consumers: [] })).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION, message: expect.stringMatching(/^products is given stream SHOP_ORDERS of another service/) });
    expect(captured.lines.filter((l) => l.level === "warn").map((l) => l.msg)).toEqual([
      'products adds no gRPC service to its host: it serves health alone. Where its contract\'s service has methods, add their implementation with host.server.addService(<Service>Service, impl) before host.start (README "Adding a service", step 3)',
    ]);
    // Stopped: the database is closed.
    await expect(noService.db.query("SELECT 1")).rejects.toThrow();
    const noConsumers = await hostOf("no-consumers.db");
    noConsumers.server.addService(ProductServiceService, getProductOnly(async () => ({ product: undefined })));
    expect(noConsumers.server.services).toEqual(["shop.products.v1.ProductService"]);
    await expect(noConsumers.start({ consumers: [] })).rejects.toMatchObject({
      code: Code.FAILED_PRECONDITION,
      message:
        "products is given stream SHOP_ORDERS of another service and binds no consumer on it: " +
        "bind the handlers of its contract's subscriptions with host.start({ consumers: bindConsumers(<Service>Consumers, handlers) }), " +
        'or, subscribing to nothing there, give createServiceHost streams: streamsOfService(name, natsAuthorization, allStreams) (README "Adding a service", step 3)',
    });
    await expect(noConsumers.db.query("SELECT 1")).rejects.toThrow();
  });

  it("serves a service given no stream (gRPC alone) without NATS: SERVING at once, refusing consumers and events", async () => {
    const captured = capturedLogger("billing");
    const hostOf = (file: string) =>
      createServiceHost({
        name: "billing",
        listen: "127.0.0.1:0",
        database: join(dir, file),
        migrations: [],
        // Nothing listens there: a service that tried to reach it would wait, NOT_SERVING.
        natsUrl: "nats://127.0.0.1:1",
        streams: [],
        descriptorSet,
        security: insecureGrpc,
        logger: captured.logger,
      });
    const host = await hostOf("grpc-alone.db");
    host.server.addService(ProductServiceService, getProductOnly(async () => ({ product: undefined })));
    const running = await host.start({ consumers: [] });
    try {
      await running.ready;
      expect(await checkHealth(running.address)).toBe("SERVING");
      expect(captured.lines.filter((l) => l.level === "info").map((l) => l.msg)).toContain(
        "serves gRPC alone: its contract declares no stream and no subscription, so it does not connect to NATS; reporting SERVING",
      );
      expect(() => running.events.bus).toThrow();
      const emitted = host.db.transaction(async (tx) => host.events.outbox.add(tx, ProductCreatedEvent, {} as never));
      await expect(emitted).rejects.toMatchObject({
        code: Code.FAILED_PRECONDITION,
        message:
          "billing emits shop.products.v1.ProductCreated, an event of stream SHOP_PRODUCTS, and is given no stream: declare its stream in its contract ((concord.v1.stream)), run `npm run gen` " +
          'and give createServiceHost streams: streamsOfService(name, natsAuthorization, allStreams) (README "Adding a service", steps 1 and 3)',
      });
      expect(await host.events.outbox.pending()).toBe(0);
    } finally {
      await running.stop();
    }
    const consuming = await hostOf("grpc-alone-consumers.db");
    consuming.server.addService(ProductServiceService, getProductOnly(async () => ({ product: undefined })));
    await expect(consuming.start({ consumers: bindConsumers(ProductServiceConsumers, Object.fromEntries(Object.keys(ProductServiceConsumers).map((key) => [key, async () => {}])) as never) })).rejects.toMatchObject({
      code: Code.FAILED_PRECONDITION,
      message: expect.stringMatching(/^billing binds consumers products-order-\S+, .* and is given no stream: give createServiceHost streams: streamsOfService\(name, natsAuthorization, allStreams\)/),
    });
    await expect(consuming.db.query("SELECT 1")).rejects.toThrow();
  });
});

describe("createServiceHost with two instances on one PostgreSQL database", () => {
  const postgres = usePostgresServer();
  const nats = useNatsServer();

  it("does not say an instance took the outbox relay over from another stopping with it, while its own calls drain", async () => {
    const database = await postgres().createDatabase("two_hosts");
    // Instance b's GetProduct waits until the test lets it go: its stop waits for the call, as a drain does.
    let letGo: () => void = () => {};
    const held = new Promise<void>((resolve) => (letGo = resolve));
    const instance = async (id: string) => {
      const captured = capturedLogger("products");
      const host = await createServiceHost({
        name: "products",
        listen: "127.0.0.1:0",
        database,
        migrations: [],
        natsUrl: nats().url,
        streams: [ShopProductsStream],
        streamSources: { SHOP_PRODUCTS: "products" },
        descriptorSet,
        security: insecureGrpc,
        logger: captured.logger,
      });
      host.server.addService(
        ProductServiceService,
        getProductOnly(async () => {
          await held;
          return { product: undefined };
        }),
      );
      const running = await host.start({ consumers: [] });
      await running.ready;
      return { id, running, lines: captured.lines };
    };
    const first = await instance("a");
    const second = await instance("b");
    const waits = (x: typeof first) => x.lines.some((l) => l.msg === "another process relays this outbox; this one takes over if it goes");
    // Which of the two takes the relay's lock first is the database's to decide: the other waits for it.
    await eventually("one relays and the other waits", async () => (first.running.events.relay.relaying() && waits(second)) || (second.running.events.relay.relaying() && waits(first)));
    const [a, b] = first.running.events.relay.relaying() ? [first, second] : [second, first];
    let bStopped: Promise<void> | undefined;
    try {
      const client = createClient(ProductServiceService, { address: b.running.address, methods: ProductServiceMethods, defaultTimeoutMs: 20_000, maxAttempts: 1 });
      const call = client.getProduct({ id: "01a25291-d99a-7000-a5ac-c203a7fac0c9" }).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 200));
      // Ctrl-C of both: b drains its call while a stops, giving the relay up; b may take the lock, but relays only until its own stop.
      bStopped = b.running.stop();
      await a.running.stop();
      await eventually("b holds the relay's lock", async () => b.running.events.relay.relaying());
      letGo();
      await call;
      client.close();
      await bStopped;
      expect(b.lines.map((l) => l.msg)).not.toContain("took over relaying this outbox");
    } finally {
      letGo();
      await Promise.all([a.running.stop(), bStopped ?? b.running.stop()]);
    }
  }, 60_000);
});
