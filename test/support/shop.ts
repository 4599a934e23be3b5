import { join } from "node:path";
import { type ChannelCredentials, Client, credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { OrderServiceService } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { OrderServiceMethods } from "../../gen/ts/shop/orders/v1/order_service_rpc.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { ProductServiceMethods } from "../../gen/ts/shop/products/v1/product_service_rpc.js";
import { StatusError } from "../../platform/errors/index.js";
import { type ClientOptions, createClient, fromGrpcError, type PromiseClient } from "../../platform/grpc/index.js";
import { createLogger } from "../../platform/log/index.js";
import { type GrpcSecurity, insecureGrpc } from "../../platform/runtime/index.js";
import { toolClientSecurity } from "../../tools/client-security.js";
import { ensureDevCredentials } from "../../tools/dev-credentials.js";
import { type RunningOrders as OrdersProcess, startOrders } from "../../services/orders/app.js";
import { type RunningProducts as ProductsProcess, startProducts } from "../../services/products/app.js";
import { type NatsServerHandle, startNatsServer } from "./nats-server.js";

export const quietLogger = (service: string) => createLogger({ service, level: process.env.TEST_LOG_LEVEL ?? "silent" });

import { createTempDir } from "./temp-dir.js";

export { createTempDir as tempDir };

export interface RunningProducts {
  readonly service: ProductsProcess;
  readonly client: PromiseClient<typeof ProductServiceService>;
  readonly databasePath: string;
  stop(): Promise<void>;
}

/** The real product service on a free port with its SQLite file in `dir`, once it reports SERVING. */
/** How the test's own client reaches a service: TLS credentials and a token source, as createClient takes them. */
export type TestClientSecurity = Pick<ClientOptions, "credentials" | "token">;

export async function startTestProducts(dir: string, natsUrl: string, extra: Partial<Parameters<typeof startProducts>[0]> = {}, clientSecurity: TestClientSecurity = {}): Promise<RunningProducts> {
  const databasePath = extra.database ?? join(dir, "products.db");
  const service = await startProducts({ listen: "127.0.0.1:0", database: databasePath, natsUrl, ...extra, security: extra.security ?? insecureGrpc, logger: extra.logger ?? quietLogger("products") });
  await service.ready.catch(async (err) => {
    await service.stop();
    throw err;
  });
  const client = createClient(ProductServiceService, { address: service.address, methods: ProductServiceMethods, ...clientSecurity });
  return {
    service,
    client,
    databasePath,
    async stop() {
      client.close();
      await service.stop();
    },
  };
}

export interface RunningOrders {
  readonly service: OrdersProcess;
  readonly client: PromiseClient<typeof OrderServiceService>;
  readonly databasePath: string;
  stop(): Promise<void>;
}

/** The real order service on a free port, talking to the product service at `productsAddress`, once it reports SERVING. */
export async function startTestOrders(dir: string, productsAddress: string, natsUrl: string, extra: Partial<Parameters<typeof startOrders>[0]> = {}, clientSecurity: TestClientSecurity = {}): Promise<RunningOrders> {
  const databasePath = extra.database ?? join(dir, "orders.db");
  const service = await startOrders({ listen: "127.0.0.1:0", database: databasePath, productsAddress, natsUrl, ...extra, security: extra.security ?? insecureGrpc, logger: extra.logger ?? quietLogger("orders") });
  await service.ready.catch(async (err) => {
    await service.stop();
    throw err;
  });
  const client = createClient(OrderServiceService, { address: service.address, methods: OrderServiceMethods, ...clientSecurity });
  return {
    service,
    client,
    databasePath,
    async stop() {
      client.close();
      await service.stop();
    },
  };
}

/** The StatusError a call rejected with, for asserting on its code, message and field violations. */
export async function grpcError(promise: Promise<unknown>): Promise<StatusError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof StatusError) return err;
    throw new Error(`expected the call to fail with a StatusError, but it failed with ${String(err)}`, { cause: err });
  }
  throw new Error("expected the call to fail, but it succeeded");
}

/**
 * One unary call with the request as raw bytes, as a client in another
 * language (or an attacker) could send them; resolves with the response bytes.
 */
export function rawCall(address: string, path: string, request: Buffer, timeoutMs = 5_000, channelCredentials: ChannelCredentials = credentials.createInsecure()): Promise<Buffer> {
  const client = new Client(address, channelCredentials);
  const identity = (b: Buffer) => b;
  return new Promise<Buffer>((resolve, reject) => {
    client.makeUnaryRequest(path, identity, identity, request, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      client.close();
      if (err) reject(fromGrpcError(err));
      else resolve(res!);
    });
  });
}

/** A valid shipping address for orders in tests. */
export const address = { recipient: "Ada Lovelace", line1: "12 St James's Square", line2: "", city: "London", postalCode: "SW1Y 4JH", countryCode: "GB" };

/**
 * The security `npm start` gives the services, with its material made in
 * `dataDir` as `npm start` makes it: TLS with the development CA (client
 * certificates required when `mutualTls`) and bearer tokens.
 */
export function devSecurity(dataDir: string, service: "products" | "orders", mutualTls = false): GrpcSecurity {
  const made = ensureDevCredentials(dataDir, ["products", "orders", "client"]);
  return { tls: { ...made.certs[service], caFile: made.caFile, requireClientCert: mutualTls }, auth: { keyFile: made.tokenKeyFile } };
}

/** A whole shop for one test file: nats-server, product service, order service, in a temp dir. */
export interface Shop {
  /** Also its DATA_DIR: with `secure`, the TLS and token material is under tls/ and auth/, as `npm start` makes it. */
  readonly dir: string;
  readonly nats: NatsServerHandle;
  readonly products: RunningProducts;
  readonly orders: RunningOrders;
  stop(): Promise<void>;
}

export interface ShopOptions {
  /** TLS and tokens for gRPC, as `npm start` runs them; the shop's own clients call as an admin. Default false: plaintext without tokens. */
  readonly secure?: boolean;
  /**
   * nats-server runs the generated authorization, as under `npm start`: each
   * service connects with its own user's seed (`nats.seedFile(user)`). Default false.
   */
  readonly secured?: boolean;
}

export async function startShop(options: ShopOptions = {}): Promise<Shop> {
  const dir = createTempDir();
  const nats = await startNatsServer({ storeDir: join(dir.path, "nats"), ...(options.secured && { credentialsDir: join(dir.path, "nats-credentials") }) });
  const seed = (user: string) => (options.secured ? { natsSeedFile: nats.seedFile(user) } : {});
  const secure = options.secure === true;
  const security = secure ? { products: devSecurity(dir.path, "products"), orders: devSecurity(dir.path, "orders") } : undefined;
  const client = secure ? toolClientSecurity({ subject: "admin", roles: ["admin"] }, { DATA_DIR: dir.path }) : {};
  const products = await startTestProducts(dir.path, nats.url, { ...seed("products"), ...(security && { security: security.products }) }, client);
  const orders = await startTestOrders(dir.path, products.service.address, nats.url, { ...seed("orders"), ...(security && { security: security.orders }) }, client);
  return {
    dir: dir.path,
    nats,
    products,
    orders,
    async stop() {
      await orders.stop();
      await products.stop();
      await nats.stop();
      dir.remove();
    },
  };
}
