/**
 * A worked example against a running system (`npm start`): creates a
 * product, places an order for it, and follows the order until the saga
 * settles it. Finds the services where `npm start` puts them, from the same
 * environment variables, else where the `npm start` running on DATA_DIR
 * recorded them; `--products` and `--orders` override them. Calls
 * go over TLS with tokens made with the local key (tools/client-security.ts):
 * an admin's to create the product, customer-1's to place and read the order.
 */
import { randomUUID } from "node:crypto";
import { status as grpcStatus } from "@grpc/grpc-js";
import { OrderServiceService, OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { OrderServiceMethods } from "../gen/ts/shop/orders/v1/order_service_rpc.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { ProductServiceMethods } from "../gen/ts/shop/products/v1/product_service_rpc.js";
import { checkHealth, createClient } from "../platform/grpc/index.js";
import { ConfigError } from "../platform/config/index.js";
import { codeName, StatusError } from "../platform/errors/index.js";
import { dataDir, noAnswer, toolClientSecurity, whyUnreachable } from "./client-security.js";
import { endProcess, exitQuietlyOnClosedOutput } from "./event-watch.js";
import { toolArgs, usageProblemLine } from "./parse-args-problem.js";
import { readStartedServices } from "./started-services.js";

const usage = `Usage: npx tsx tools/try-order.ts [--products HOST:PORT] [--orders HOST:PORT] [--wait SECONDS]

Asks both services' health first, each for its own service by name, then
creates a product, places an order for it and follows the order until the
saga settles it, over TLS trusting GRPC_TLS_CA (default DATA_DIR/tls/ca.pem;
presenting DATA_DIR/tls/client.pem when it is there, for GRPC_TLS_CLIENT_AUTH=require),
with tokens signed by GRPC_AUTH_KEY_FILE (default DATA_DIR/auth/token-hs256.key)
that live an hour, or GRPC_AUTH_MAX_TOKEN_TTL when shorter (an admin creates
the product, customer-1 places the order; GRPC_INSECURE=1 and GRPC_AUTH=none
as for the services). The services are found where \`npm start\` puts them:
  --products HOST:PORT   product service (default: $PRODUCTS_LISTEN, else the first instance
                         of the \`npm start\` running on DATA_DIR, else 127.0.0.1:50051)
  --orders HOST:PORT     order service (default: $ORDERS_LISTEN, else the first instance
                         of the \`npm start\` running on DATA_DIR, else 127.0.0.1:50052)
  --wait SECONDS         how long the saga may take to settle the order, 0 to 3600 in digits
                         (default 10; 2.5 for two and a half); an order
                         still PENDING then is said to be so, exit 1 (\`npx concord status\` shows
                         where its events wait)
A service that takes the connection and does not answer within 5 s is not serving.`;

/** The full name of the gRPC service a generated definition serves, as grpc.health.v1 names it. */
const grpcServiceName = (definition: Record<string, { path: string }>): string => Object.values(definition)[0]!.path.split("/")[1]!;

/** How long each service's health may take to answer. */
const healthTimeoutMs = 5_000;
/** How often the order is read while it is PENDING: each read is a line in the order service's log. */
const followEveryMs = 100;

/** The command that prints the usage, named by a refusal of bad usage. */
const helpCommand = "npx tsx tools/try-order.ts --help";

const options = { products: { type: "string" }, orders: { type: "string" }, wait: { type: "string" }, help: { type: "boolean" } } as const;

async function main(args: string[]): Promise<void> {
  const parsed = toolArgs("try-order", { args, options }, helpCommand);
  if (!parsed) return;
  const { values } = parsed;
  if (values.help) {
    console.log(usage);
    return;
  }
  // A start run with other ports in another shell recorded where it put its services, as `concord status` finds them.
  const started = values.products === undefined || values.orders === undefined ? readStartedServices(dataDir()) : undefined;
  const productsAddress = values.products ?? (process.env.PRODUCTS_LISTEN || started?.products[0]!.grpc || "127.0.0.1:50051");
  const ordersAddress = values.orders ?? (process.env.ORDERS_LISTEN || started?.orders[0]!.grpc || "127.0.0.1:50052");
  if (productsAddress === "" || ordersAddress === "") {
    console.error(usageProblemLine("try-order", "--products and --orders need HOST:PORT", helpCommand));
    process.exitCode = 2;
    return;
  }
  const waitSeconds = values.wait === undefined ? 10 : Number(values.wait);
  // Digits only, a fraction allowed: Number() also read 1e3 as 1000 s, 0x10 as 16 s and " 5 " as 5 s.
  if (values.wait !== undefined && (!/^\d+(\.\d+)?$/.test(values.wait) || waitSeconds > 3600)) {
    console.error(usageProblemLine("try-order", `--wait takes seconds from 0 to 3600, written in digits (10, or 2.5), not ${JSON.stringify(values.wait)}`, helpCommand));
    process.exitCode = 2;
    return;
  }
  // Both services are asked first: nothing is created when the order could not be placed.
  const otherService = Symbol("another service");
  const { credentials } = toolClientSecurity({ subject: "try-order", roles: [] });
  const notServing = await Promise.all(
    [
      { service: "product service", address: productsAddress, flag: "--products", served: grpcServiceName(ProductServiceService) },
      { service: "order service", address: ordersAddress, flag: "--orders", served: grpcServiceName(OrderServiceService) },
    ].map(async ({ service, address, flag, served }) => {
      // Asked for the service by name: the other service's address answers for itself alone (NOT_FOUND), where its
      // overall health passed, and a product was created before the order's call failed UNIMPLEMENTED.
      const status = await checkHealth(address, served, healthTimeoutMs, credentials).catch((err: Error & { code?: number }) =>
        err.code === grpcStatus.NOT_FOUND ? otherService : `unreachable: ${err.code === grpcStatus.DEADLINE_EXCEEDED ? `no answer within ${healthTimeoutMs / 1000} s` : whyUnreachable(err)}`,
      );
      if (status === otherService) return `the ${service} at ${address} is not there: the server there serves another service, not ${served}; does ${flag} name another service's address?`;
      return status === "SERVING" ? undefined : `the ${service} at ${address} is not serving (${status}); is \`npm start\` running, or does ${flag} name another address?`;
    }),
  );
  if (notServing.some(Boolean)) {
    for (const problem of notServing) if (problem) console.error(`try-order: ${problem}`);
    console.error("try-order: nothing was created");
    process.exitCode = 1;
    return;
  }
  const customerId = "customer-1";
  const products = createClient(ProductServiceService, { address: productsAddress, methods: ProductServiceMethods, ...toolClientSecurity({ subject: "admin", roles: ["admin"] }) });
  const orders = createClient(OrderServiceService, { address: ordersAddress, methods: OrderServiceMethods, ...toolClientSecurity({ subject: customerId, roles: ["customer"] }) });
  const productService = { name: "product service", address: productsAddress };
  const orderService = { name: "order service", address: ordersAddress };
  try {
    const { product } = await step("creating the product", productService, () =>
      products.createProduct({ name: "Teapot", description: "Blue porcelain", price: { currencyCode: "EUR", amountMinor: 1999 }, initialStock: 3, requestId: randomUUID() }),
    );
    console.log(`created product ${product!.id}: ${product!.name}, stock ${product!.stock}`);
    const { order } = await step(`placing an order for product ${product!.id}`, orderService, () =>
      orders.createOrder({
        customerId,
        lines: [{ productId: product!.id, quantity: 2 }],
        shippingAddress: { recipient: "Ada Lovelace", line1: "12 St James's Square", line2: "", city: "London", postalCode: "SW1Y 4JH", countryCode: "GB" },
        // Safe to retry: a repeat with this id returns this order instead of placing another.
        requestId: randomUUID(),
      }),
    );
    console.log(`placed order ${order!.id}: ${OrderState[order!.state]}, total ${order!.total!.amountMinor} ${order!.total!.currencyCode}`);
    // Followed until settled or out of time: an order left PENDING is said to be so, not passed over in silence.
    const until = Date.now() + waitSeconds * 1000;
    let settled = false;
    for (;;) {
      const { order: now } = await step(`reading order ${order!.id}`, orderService, () => orders.getOrder({ id: order!.id }));
      if (now!.state !== OrderState.ORDER_STATE_PENDING) {
        console.log(`order ${now!.id} is ${OrderState[now!.state]}${now!.rejectionReason ? `: ${now!.rejectionReason}` : ""}`);
        settled = true;
        break;
      }
      if (Date.now() >= until) break;
      await new Promise((r) => setTimeout(r, Math.min(followEveryMs, Math.max(0, until - Date.now()))));
    }
    const { product: after } = await step(`reading product ${product!.id}`, productService, () => products.getProduct({ id: product!.id }));
    console.log(`product ${after!.id} now has stock ${after!.stock}`);
    if (!settled) {
      console.error(
        `try-order: order ${order!.id} is still ORDER_STATE_PENDING after ${waitSeconds} s: the saga has not settled it; ` +
          "`npx concord status` shows where its events wait (the outboxes, the consumers' lag and dead letters)",
      );
      process.exitCode = 1;
    }
  } finally {
    products.close();
    orders.close();
  }
}

/**
 * `call`'s answer; its failure as one line saying which step failed, at which
 * service, and why: a service that gave no answer (stopped since its health
 * was asked, say) is said to be unreachable, without grpc-js's wording, and
 * what to do; a status it answered with is given with its own message.
 */
async function step<T>(what: string, service: { readonly name: string; readonly address: string }, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (!(err instanceof Error)) throw err;
    const at = `the ${service.name} at ${service.address}`;
    const code = err instanceof StatusError ? err.code : undefined;
    const why =
      noAnswer(err) ? `${at} cannot be reached (${whyUnreachable(err)}); has it stopped? \`npx concord status\` shows what runs`
      : /^Deadline exceeded after/.test(err.message) ? `${at} gave no answer in time; \`npx concord status\` shows whether it serves`
      : code !== undefined ? `${at} answered ${codeName(code)}: ${err.message}`
      : err.message;
    throw new Error(`${what} failed: ${why}`, { cause: err });
  }
}

// `npx tsx tools/try-order.ts | head -2`: the reader gone is no failure, nor worth a stack trace.
exitQuietlyOnClosedOutput();
// Ended once its output is written rather than when the event loop empties: a service that took the connection and
// never answered leaves grpc-js's handshake with it open, for as long as that lasts.
main(process.argv.slice(2)).then(
  () => endProcess(Number(process.exitCode ?? 0)),
  (err) => {
    console.error(`try-order: ${err instanceof Error ? err.message : err}`);
    // A setting the services would refuse (GRPC_INSECURE=true) is bad usage, as a bad --wait is.
    endProcess(err instanceof ConfigError ? 2 : 1);
  },
);
