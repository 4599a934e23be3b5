import { execFile } from "node:child_process";
import { createSecretKey, generateKeyPairSync, type KeyObject, randomUUID } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { credentials } from "@grpc/grpc-js";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderServiceService, OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { OrderServiceMethods } from "../gen/ts/shop/orders/v1/order_service_rpc.js";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { ProductServiceMethods } from "../gen/ts/shop/products/v1/product_service_rpc.js";
import { readTokenSecret, signToken, type TokenClaims } from "../platform/auth/index.js";
import { Code } from "../platform/errors/index.js";
import { checkHealth, clientTlsCredentials, createClient, methodAccess, waitForServing } from "../platform/grpc/index.js";
import { createMessageChecker } from "../platform/contracts/index.js";
import { descriptorSet } from "../gen/ts/descriptor_set.js";
import { ensureDevCredentials } from "../tools/dev-credentials.js";
import { repoRoot } from "../tools/repo-root.js";
import { freePort, useNatsServer } from "./support/nats-server.js";
import { type ServiceProcess, startServiceProcess } from "./support/service-process.js";
import { address, devSecurity, grpcError, rawCall, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";

const eur = (amountMinor: number) => ({ currencyCode: "EUR", amountMinor });

describe("gRPC security: TLS and bearer tokens checked against the contracts' access rules", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const nats = useNatsServer();
  let products: RunningProducts;
  let orders: RunningOrders;
  let tls: ReturnType<typeof clientTlsCredentials>;
  const clients: { close(): void }[] = [];
  const token = (claims: TokenClaims) => signToken(readTokenSecret(join(dir.path, "auth", "token-hs256.key")), claims, 300);
  /** Clients over TLS; `bearer` is the token sent, none when undefined. */
  const productsAs = (bearer: (() => Promise<string>) | undefined) => {
    const c = createClient(ProductServiceService, { address: products.service.address, methods: ProductServiceMethods, credentials: tls, maxAttempts: 1, ...(bearer && { token: bearer }) });
    clients.push(c);
    return c;
  };
  const ordersAs = (bearer: (() => Promise<string>) | undefined) => {
    const c = createClient(OrderServiceService, { address: orders.service.address, methods: OrderServiceMethods, credentials: tls, maxAttempts: 1, ...(bearer && { token: bearer }) });
    clients.push(c);
    return c;
  };
  const admin = () => token({ subject: "ops", roles: ["admin"] });
  const customer = (id: string) => () => token({ subject: id, roles: ["customer"] });

  beforeAll(async () => {
    products = await startTestProducts(dir.path, nats().url, { security: devSecurity(dir.path, "products") }, { credentials: clientTlsCredentials({ caFile: join(dir.path, "tls", "ca.pem") }), token: admin });
    orders = await startTestOrders(dir.path, products.service.address, nats().url, { security: devSecurity(dir.path, "orders") }, { credentials: clientTlsCredentials({ caFile: join(dir.path, "tls", "ca.pem") }), token: admin });
    tls = clientTlsCredentials({ caFile: join(dir.path, "tls", "ca.pem") });
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    await orders?.stop();
    await products?.stop();
  });

  const newProduct = async (stock = 10) => (await products.client.createProduct({ name: "Teapot", description: "", price: eur(1999), initialStock: stock })).product!;
  const placeFor = async (customerId: string, productId: string) =>
    (await ordersAs(customer(customerId)).createOrder({ customerId, lines: [{ productId, quantity: 1 }], shippingAddress: address })).order!;

  it("tells a plaintext client that the service takes TLS and where npm start puts the CA, in grpcurl -plaintext and grpc-js, where both saw the connection reset", async () => {
    const said =
      "this port takes gRPC over TLS, and this connection is plaintext: connect with TLS, trusting the CA that issued the service's certificate " +
      "(npm start makes it as DATA_DIR/tls/ca.pem, DATA_DIR .data unless set: grpcurl -cacert .data/tls/ca.pem, not -plaintext)";
    const grpcurl = join(repoRoot, ".tools", "bin", "grpcurl");
    // Run without blocking: the service answers from this process.
    const listed = await new Promise<{ failed: boolean; stderr: string }>((resolve) =>
      execFile(grpcurl, ["-max-time", "10", "-plaintext", products.service.address, "list"], { timeout: 20_000 }, (err, _, stderr) => resolve({ failed: err !== null, stderr })),
    );
    expect(listed.failed).toBe(true);
    expect(listed.stderr).toBe(`Failed to list services: rpc error: code = Unavailable desc = ${said}\n`);
    const plain = createClient(ProductServiceService, { address: products.service.address, credentials: credentials.createInsecure(), maxAttempts: 1, token: admin });
    clients.push(plain);
    const err = await grpcError(plain.getProduct({ id: randomUUID() }));
    expect(err.code).toBe(Code.UNAVAILABLE);
    expect(err.message).toBe(said);
  });

  it("refuses a call without a token with UNAUTHENTICATED, saying what to send", async () => {
    const p = await newProduct();
    const err = await grpcError(productsAs(undefined).getProduct({ id: p.id }));
    expect(err.code).toBe(Code.UNAUTHENTICATED);
    expect(err.message).toContain('"authorization: Bearer <token>"');
  });

  it("refuses a call without a token before reading its request: too large, undecodable or over a list's limit, it gets UNAUTHENTICATED", async () => {
    const p = await newProduct();
    const lines = Array.from({ length: 6_000 }, () => ({ productId: p.id, quantity: 1 }));
    const tooMany = await grpcError(ordersAs(undefined).createOrder({ customerId: "c-1", lines, shippingAddress: address }));
    expect(tooMany.code).toBe(Code.UNAUTHENTICATED);
    for (const bytes of [Buffer.alloc(100_000, 0xff), Buffer.alloc(200_000, 0xff)]) {
      const err = await grpcError(rawCall(orders.service.address, "/shop.orders.v1.OrderService/CreateOrder", bytes, 5_000, tls));
      expect(err.code, `${bytes.length} bytes`).toBe(Code.UNAUTHENTICATED);
    }
  });

  it("refuses an expired token, one signed with another key, and one that is not a JWT, with UNAUTHENTICATED", async () => {
    const p = await newProduct();
    const key = readTokenSecret(join(dir.path, "auth", "token-hs256.key"));
    const expired = await new SignJWT({ roles: ["admin"] })
      .setProtectedHeader({ alg: "HS256" }).setSubject("ops").setIssuer("concord").setAudience("concord")
      .setIssuedAt(Math.floor(Date.now() / 1000) - 600).setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(key);
    const otherKey = createSecretKey(Buffer.alloc(32, 7));
    const forged = await signToken(otherKey, { subject: "ops", roles: ["admin"] }, 300);
    for (const [bearer, says] of [[expired, "expired"], [forged, "signature does not match"], ["not-a-jwt", "not a well-formed JWT"],
      // The README's grpcurl lines without -expand-headers send the variable's name itself.
      ["${ADMIN_TOKEN}", 'the bearer token is "${ADMIN_TOKEN}", a variable\'s name, not a JWT: the client sent it unexpanded (grpcurl expands -H values only with -expand-headers)']] as const) {
      const err = await grpcError(productsAs(async () => bearer).adjustStock({ id: p.id, delta: 5, reason: "x" }));
      expect(err.code, bearer).toBe(Code.UNAUTHENTICATED);
      expect(err.message).toContain(says);
    }
    expect((await products.client.getProduct({ id: p.id })).product!.stock).toBe(10);
  });

  it("refuses a token that would live longer than a day (GRPC_AUTH_MAX_TOKEN_TTL's default) with UNAUTHENTICATED, saying what to ask for", async () => {
    const p = await newProduct();
    const key = readTokenSecret(join(dir.path, "auth", "token-hs256.key"));
    const tenYears = await signToken(key, { subject: "ops", roles: ["admin"] }, 3650 * 86_400);
    const err = await grpcError(productsAs(async () => tenYears).adjustStock({ id: p.id, delta: 5, reason: "x" }));
    expect(err.code).toBe(Code.UNAUTHENTICATED);
    expect(err.message).toBe("the bearer token expires in 3650d, later than tokens may live here; get one valid for at most 24h");
    expect((await products.client.getProduct({ id: p.id })).product!.stock).toBe(10);
  });

  it("refuses AdjustStock, CreateProduct and UpdateProduct to a customer with PERMISSION_DENIED and changes nothing; an admin may", async () => {
    const p = await newProduct(10);
    const asCustomer = productsAs(customer("c-1"));
    const adjust = await grpcError(asCustomer.adjustStock({ id: p.id, delta: 100, reason: "free stock" }));
    expect(adjust.code).toBe(Code.PERMISSION_DENIED);
    expect(adjust.message).toBe("c-1 (roles customer) may not call AdjustStock: it takes role admin");
    expect((await grpcError(asCustomer.createProduct({ name: "X", description: "", price: eur(1), initialStock: 1 }))).code).toBe(Code.PERMISSION_DENIED);
    expect((await grpcError(asCustomer.updateProduct({ id: p.id, name: "Free", description: "", price: eur(0), updateMask: ["name"], expectedVersion: 1 } as never))).code).toBe(Code.PERMISSION_DENIED);
    const service = await grpcError(productsAs(() => token({ subject: "orders", roles: ["service"] })).adjustStock({ id: p.id, delta: 1, reason: "x" }));
    expect(service.code).toBe(Code.PERMISSION_DENIED);
    expect((await asCustomer.getProduct({ id: p.id })).product).toMatchObject({ stock: 10, version: 1, name: "Teapot" });
    expect((await productsAs(admin).adjustStock({ id: p.id, delta: 5, reason: "delivery" })).product!.stock).toBe(15);
  });

  it("names the first five roles of a token it refuses and how many more, where all went into the answer and the log line (3,000 roles of 11 characters: 39 KB each call)", async () => {
    const p = await newProduct(10);
    // As many as fit in the 16 KiB of metadata a call may send, base64 and all.
    const roles = Array.from({ length: 600 }, (_, i) => `group-${i}`);
    const err = await grpcError(productsAs(() => token({ subject: "many", roles })).adjustStock({ id: p.id, delta: 1, reason: "x" }));
    expect(err.code).toBe(Code.PERMISSION_DENIED);
    expect(err.message).toBe("many (roles group-0, group-1, group-2, group-3, group-4 and 595 more) may not call AdjustStock: it takes role admin");
    // A token of 4,000 roles (about 68 KB) no longer reaches the check: its call is reset for its metadata.
    const larger = Array.from({ length: 4_000 }, (_, i) => `group-${i}`);
    expect((await grpcError(productsAs(() => token({ subject: "many", roles: larger })).adjustStock({ id: p.id, delta: 1, reason: "x" }))).code).toBe(Code.RESOURCE_EXHAUSTED);
    const six = await grpcError(productsAs(() => token({ subject: "six", roles: roles.slice(0, 6) })).adjustStock({ id: p.id, delta: 1, reason: "x" }));
    expect(six.message).toBe("six (roles group-0, group-1, group-2, group-3, group-4 and 1 more) may not call AdjustStock: it takes role admin");
    expect((await products.client.getProduct({ id: p.id })).product!.stock).toBe(10);
  });

  it("lets a customer read, list and cancel their own orders, and refuses another's with PERMISSION_DENIED, changing nothing", async () => {
    const p = await newProduct(10);
    const mine = await placeFor("alice", p.id);
    const theirs = await placeFor("bob", p.id);
    const alice = ordersAs(customer("alice"));
    expect((await alice.getOrder({ id: mine.id })).order!.customerId).toBe("alice");
    expect((await alice.listOrders({ customerId: "alice", pageSize: 10, pageToken: "" })).orders.map((o) => o.id)).toContain(mine.id);

    const read = await grpcError(alice.getOrder({ id: theirs.id }));
    expect(read.code).toBe(Code.PERMISSION_DENIED);
    expect(read.message).toContain(`order ${theirs.id} belongs to someone else`);
    const cancel = await grpcError(alice.cancelOrder({ id: theirs.id, reason: "mischief" }));
    expect(cancel.code).toBe(Code.PERMISSION_DENIED);
    const update = await grpcError(alice.updateOrder({ id: theirs.id, updateMask: ["shipping_address"], shippingAddress: { ...address, city: "Paris" }, lines: [], expectedVersion: theirs.version } as never));
    expect(update.code).toBe(Code.PERMISSION_DENIED);
    const list = await grpcError(alice.listOrders({ customerId: "bob", pageSize: 10, pageToken: "" }));
    expect(list.code).toBe(Code.PERMISSION_DENIED);
    expect(list.message).toBe('alice may call ListOrders only with customer_id "alice", not "bob"');
    const place = await grpcError(alice.createOrder({ customerId: "bob", lines: [{ productId: p.id, quantity: 1 }], shippingAddress: address }));
    expect(place.code).toBe(Code.PERMISSION_DENIED);

    // Bob's order is as it was; an admin sees it, and every order.
    const asAdmin = ordersAs(admin);
    const after = (await asAdmin.getOrder({ id: theirs.id })).order!;
    expect(after.state).not.toBe(OrderState.ORDER_STATE_CANCELLED);
    expect(after.shippingAddress!.city).toBe(address.city);
    expect((await asAdmin.listOrders({ customerId: "bob", pageSize: 10, pageToken: "" })).orders.map((o) => o.id)).toEqual([theirs.id]);
    expect((await alice.cancelOrder({ id: mine.id, reason: "changed my mind" })).order!.state).toBe(OrderState.ORDER_STATE_CANCELLED);
  });

  it("takes a page token only with the method, caller and customer_id of the page it came from, page_size free to change, and refuses it elsewhere as INVALID_ARGUMENT naming page_token", async () => {
    const p = await newProduct(10);
    const placed = [await placeFor("carol", p.id), await placeFor("carol", p.id), await placeFor("carol", p.id)].map((o) => o.id);
    const carol = ordersAs(customer("carol"));
    const first = await carol.listOrders({ customerId: "carol", pageSize: 1, pageToken: "" });
    expect(first.orders.map((o) => o.id)).toEqual(placed.slice(0, 1));
    const rest = await carol.listOrders({ customerId: "carol", pageSize: 5, pageToken: first.nextPageToken });
    expect(rest.orders.map((o) => o.id)).toEqual(placed.slice(1));
    // Each call made as its turn comes: made at once, those awaited later were rejections no one had heard yet.
    const elsewhere = {
      "an admin, for carol's orders": () => ordersAs(admin).listOrders({ customerId: "carol", pageSize: 1, pageToken: first.nextPageToken }),
      "an admin, for dave's orders": () => ordersAs(admin).listOrders({ customerId: "dave", pageSize: 1, pageToken: first.nextPageToken }),
      "dave, for his own orders": () => ordersAs(customer("dave")).listOrders({ customerId: "dave", pageSize: 1, pageToken: first.nextPageToken }),
      "carol, for products": () => productsAs(customer("carol")).listProducts({ pageSize: 1, pageToken: first.nextPageToken }),
    };
    for (const [who, call] of Object.entries(elsewhere)) {
      const err = await grpcError(call());
      expect([err.code, err.violations], who).toEqual([
        Code.INVALID_ARGUMENT,
        [{ field: "page_token", description: "was returned for another method, caller or query: send it with the request its page came from (only page_size may change)" }],
      ]);
    }
    // ListProducts' tokens are the caller's too.
    await newProduct();
    const products1 = await productsAs(admin).listProducts({ pageSize: 1, pageToken: "" });
    expect((await productsAs(admin).listProducts({ pageSize: 1, pageToken: products1.nextPageToken })).products).toHaveLength(1);
    const asService = await grpcError(productsAs(() => token({ subject: "orders", roles: ["service"] })).listProducts({ pageSize: 1, pageToken: products1.nextPageToken }));
    expect(asService.code).toBe(Code.INVALID_ARGUMENT);
    // A token of the unbound kind the services wrote before is refused, saying what to do.
    const unbound = await grpcError(carol.listOrders({ customerId: "carol", pageSize: 1, pageToken: Buffer.from(`after:${placed[0]}`).toString("base64url") }));
    expect(unbound.violations).toEqual([{ field: "page_token", description: "is of the kind this service returned before its tokens were bound to their query; list again from the first page" }]);
  });

  it("keeps each caller's request ids its own: two customers with one id both place their order, a retry gets the caller's own, and another's request cannot be sent", async () => {
    const p = await newProduct(10);
    const requestId = randomUUID();
    const request = (customerId: string, quantity = 1) => ({ customerId, lines: [{ productId: p.id, quantity }], shippingAddress: address, requestId });
    const alice = ordersAs(customer("alice"));
    const bob = ordersAs(customer("bob"));
    const mine = (await alice.createOrder(request("alice"))).order!;
    // Bob's own order under Alice's id: placed, and nothing tells him the id was used.
    const theirs = (await bob.createOrder(request("bob"))).order!;
    expect(theirs.id).not.toBe(mine.id);
    expect((await alice.createOrder(request("alice"))).order!.id).toBe(mine.id);
    expect((await bob.createOrder(request("bob"))).order!.id).toBe(theirs.id);
    // Alice's very request, sent by Bob, is refused before any handler runs: he cannot have her answer.
    const hers = await grpcError(bob.createOrder(request("alice")));
    expect(hers.code).toBe(Code.PERMISSION_DENIED);
    const reused = await grpcError(alice.createOrder(request("alice", 2)));
    expect(reused.code).toBe(Code.ALREADY_EXISTS);
    expect(reused.violations).toEqual([expect.objectContaining({ field: "request_id" })]);
    // An admin's ids are its own too: the same request for Alice, from an admin, is the admin's first.
    const asAdmin = ordersAs(admin);
    const forHer = (await asAdmin.createOrder(request("alice"))).order!;
    expect(forHer.id).not.toBe(mine.id);
    expect((await asAdmin.createOrder(request("alice"))).order!.id).toBe(forHer.id);
    expect((await asAdmin.listOrders({ customerId: "alice", pageSize: 100, pageToken: "" })).orders.filter((o) => o.lines[0]!.productId === p.id).map((o) => o.id).sort()).toEqual([mine.id, forHer.id].sort());
    expect((await asAdmin.listOrders({ customerId: "bob", pageSize: 100, pageToken: "" })).orders.filter((o) => o.lines[0]!.productId === p.id).map((o) => o.id)).toEqual([theirs.id]);
  });

  it("lets a service token read products (the order service's lookups) but not change them", async () => {
    const p = await newProduct();
    const asService = productsAs(() => token({ subject: "orders", roles: ["service"] }));
    expect((await asService.batchGetProducts({ ids: [p.id] })).products.map((x) => x.id)).toEqual([p.id]);
  });

  it("keeps health open without a token", async () => {
    expect(await checkHealth(products.service.address, "", 2_000, tls)).toBe("SERVING");
  });

  it("refuses plaintext clients and clients that do not trust the CA", async () => {
    const plain = createClient(ProductServiceService, { address: products.service.address, maxAttempts: 1, token: admin, defaultTimeoutMs: 2_000 });
    clients.push(plain);
    expect((await grpcError(plain.listProducts({ pageSize: 1, pageToken: "" }))).code).toBe(Code.UNAVAILABLE);
    const other = ensureDevCredentials(join(dir.path, "other"), ["client"]);
    const stranger = createClient(ProductServiceService, { address: products.service.address, maxAttempts: 1, token: admin, defaultTimeoutMs: 2_000, credentials: clientTlsCredentials({ caFile: other.caFile }) });
    clients.push(stranger);
    expect((await grpcError(stranger.listProducts({ pageSize: 1, pageToken: "" }))).code).toBe(Code.UNAVAILABLE);
  });
});

describe("gRPC mutual TLS", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const nats = useNatsServer();
  let products: RunningProducts;
  beforeAll(async () => {
    const made = ensureDevCredentials(dir.path, ["products", "orders", "client"]);
    const token = () => signToken(readTokenSecret(made.tokenKeyFile), { subject: "ops", roles: ["admin"] }, 300);
    products = await startTestProducts(dir.path, nats().url, { security: devSecurity(dir.path, "products", true) }, { credentials: clientTlsCredentials({ caFile: made.caFile, ...made.certs.client }), token });
  }, 60_000);
  afterAll(async () => {
    await products?.stop();
  });

  it("serves a client with a certificate from the CA and refuses one without a certificate", async () => {
    expect((await products.client.listProducts({ pageSize: 1, pageToken: "" })).products).toEqual([]);
    const caFile = join(dir.path, "tls", "ca.pem");
    const token = () => signToken(readTokenSecret(join(dir.path, "auth", "token-hs256.key")), { subject: "ops", roles: ["admin"] }, 300);
    const anonymous = createClient(ProductServiceService, { address: products.service.address, maxAttempts: 1, defaultTimeoutMs: 2_000, token, credentials: clientTlsCredentials({ caFile }) });
    try {
      expect((await grpcError(anonymous.listProducts({ pageSize: 1, pageToken: "" }))).code).toBe(Code.UNAVAILABLE);
    } finally {
      anonymous.close();
    }
  });

  it("tells a plaintext client to show the development client certificate as well", async () => {
    const plain = createClient(ProductServiceService, { address: products.service.address, credentials: credentials.createInsecure(), maxAttempts: 1 });
    try {
      const err = await grpcError(plain.getProduct({ id: randomUUID() }));
      expect(err.code).toBe(Code.UNAVAILABLE);
      expect(err.message).toContain("(npm start makes it as DATA_DIR/tls/ca.pem, DATA_DIR .data unless set: grpcurl -cacert .data/tls/ca.pem -cert .data/tls/client.pem -key .data/tls/client-key.pem, not -plaintext)");
    } finally {
      plain.close();
    }
  });
});

describe("tokens of an outside issuer (GRPC_AUTH_PUBLIC_KEYS), the product service as production runs it", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const nats = useNatsServer();
  let products: ServiceProcess;
  let address: string;
  const issuer = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const pemOf = (key: KeyObject) => key.export({ type: "spki", format: "pem" }) as string;
  /** A token as an identity provider signs it, with its own ES256 key, living `ttl` (and issued `iat` before now, when given). */
  const issued =
    (roles: string[], key = issuer.privateKey, ttl = "5m", iat?: string) =>
    () => {
      const jwt = new SignJWT({ roles }).setProtectedHeader({ alg: "ES256", typ: "JWT", kid: "idp-1" }).setSubject("ops").setIssuer("concord").setAudience("concord").setExpirationTime(ttl);
      return (iat === undefined ? jwt : jwt.setIssuedAt(`-${iat}`)).sign(key);
    };
  const env = (publicKeys: string) => ({
    PRODUCTS_LISTEN: address,
    PRODUCTS_DATABASE_URL: join(dir.path, "products.db"),
    NATS_URL: nats().url,
    GRPC_AUTH: "jwt",
    GRPC_AUTH_KEY_FILE: ensureDevCredentials(dir.path, ["products"]).tokenKeyFile,
    GRPC_AUTH_PUBLIC_KEYS: publicKeys,
    GRPC_AUTH_MAX_TOKEN_TTL: "1h",
    LOG_LEVEL: "warn",
  });

  beforeAll(async () => {
    address = `127.0.0.1:${await freePort()}`;
    // The issuer's current key and the next one, as while rotating.
    const keysFile = join(dir.path, "issuer.pem");
    writeFileSync(keysFile, pemOf(issuer.publicKey) + pemOf(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey));
    products = startServiceProcess("products", env(keysFile));
    await waitForServing(address, 60_000);
  }, 90_000);
  afterAll(async () => {
    await products?.stop();
  });

  it("lets the issuer's tokens in by their roles, and refuses another key's with UNAUTHENTICATED", async () => {
    const as = (token: () => Promise<string>) => createClient(ProductServiceService, { address, methods: ProductServiceMethods, maxAttempts: 1, token });
    const admin = as(issued(["admin"]));
    const customer = as(issued(["customer"]));
    const stranger = as(issued(["admin"], generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey));
    try {
      const { product } = await admin.createProduct({ name: "Teapot", description: "", price: eur(1999), initialStock: 3 });
      expect((await grpcError(customer.adjustStock({ id: product!.id, delta: 5, reason: "x" }))).code).toBe(Code.PERMISSION_DENIED);
      const refused = await grpcError(stranger.adjustStock({ id: product!.id, delta: 5, reason: "x" }));
      expect(refused.code).toBe(Code.UNAUTHENTICATED);
      expect(refused.message).toContain("signature does not match");
      expect((await admin.getProduct({ id: product!.id })).product!.stock).toBe(3);
    } finally {
      for (const c of [admin, customer, stranger]) c.close();
    }
  });

  it("takes a token signed with the services' own key for the service role only", async () => {
    const key = readTokenSecret(ensureDevCredentials(dir.path, ["products"]).tokenKeyFile);
    const own = (roles: string[]) => createClient(ProductServiceService, { address, methods: ProductServiceMethods, maxAttempts: 1, token: () => signToken(key, { subject: "orders", roles }, 60) });
    const [service, admin] = [own(["service"]), own(["admin"])];
    try {
      expect((await service.listProducts({ pageSize: 1, pageToken: "" })).products).toBeDefined();
      const refused = await grpcError(admin.createProduct({ name: "Forged", description: "", price: eur(1), initialStock: 1 }));
      expect(refused.code).toBe(Code.UNAUTHENTICATED);
      expect(refused.message).toContain('may carry only the role "service"');
    } finally {
      for (const c of [service, admin]) c.close();
    }
  });

  it("keeps request ids by subject alone, as every token it takes names the one issuer: a token without it, or naming another, is UNAUTHENTICATED whoever signed it, and a token of the services' key with an issuer's subject reaches no request id", async () => {
    const key = readTokenSecret(ensureDevCredentials(dir.path, ["products"]).tokenKeyFile);
    const signed = (iss: string | undefined, roles: string[], signer: "issuer" | "services") => () => {
      const jwt = new SignJWT({ roles }).setSubject("ops").setAudience("concord").setExpirationTime("5m");
      if (iss !== undefined) jwt.setIssuer(iss);
      return signer === "issuer" ? jwt.setProtectedHeader({ alg: "ES256", typ: "JWT" }).sign(issuer.privateKey) : jwt.setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(key);
    };
    const as = (token: () => Promise<string>) => createClient(ProductServiceService, { address, methods: ProductServiceMethods, maxAttempts: 1, token });
    const admin = as(issued(["admin"]));
    const services = as(signed("concord", ["service"], "services"));
    const strangers = [as(signed(undefined, ["admin"], "issuer")), as(signed("https://idp.example", ["admin"], "issuer")), as(signed(undefined, ["service"], "services")), as(signed("other", ["service"], "services"))];
    try {
      const request = { name: "Teapot", description: "", price: eur(1999), initialStock: 3, requestId: randomUUID() };
      const { product } = await admin.createProduct(request);
      for (const [i, c] of strangers.entries()) {
        const refused = await grpcError(c.createProduct(request));
        expect(refused.code, `token ${i}`).toBe(Code.UNAUTHENTICATED);
        expect(refused.message, `token ${i}`).toMatch(/the bearer token's iss claim is not valid/);
      }
      // The only other signer: its tokens carry the role "service" alone, which no method taking a request_id admits.
      const denied = await grpcError(services.createProduct(request));
      expect(denied.code).toBe(Code.PERMISSION_DENIED);
      expect((await grpcError(services.adjustStock({ id: product!.id, delta: 1, reason: "x", requestId: request.requestId }))).code).toBe(Code.PERMISSION_DENIED);
      expect((await admin.createProduct(request)).product!.id).toBe(product!.id);
      expect((await admin.getProduct({ id: product!.id })).product!.stock).toBe(3);
    } finally {
      for (const c of [admin, services, ...strangers]) c.close();
    }
  });

  it("admits the role \"service\", the only one the services' key signs beside an issuer, to no method that takes a request_id", () => {
    const { registry } = createMessageChecker(descriptorSet);
    const takingIds = [...registry]
      .flatMap((d) => (d.kind === "service" ? d.methods : []))
      .filter((m) => m.input.fields.some((f) => f.name === "request_id"));
    expect(takingIds.map((m) => m.name).sort()).toEqual(["AdjustStock", "CreateOrder", "CreateProduct"]);
    for (const m of takingIds) {
      const access = methodAccess(registry, m)!;
      expect([...access.roles, ...access.ownerRoles], m.name).not.toContain("service");
    }
  });

  it("refuses the issuer's tokens that would live longer than GRPC_AUTH_MAX_TOKEN_TTL with UNAUTHENTICATED, with iat or without", async () => {
    const as = (token: () => Promise<string>) => createClient(ProductServiceService, { address, methods: ProductServiceMethods, maxAttempts: 1, token });
    const [longLived, issuedLongAgo, inTime] = [as(issued(["admin"], issuer.privateKey, "2h")), as(issued(["admin"], issuer.privateKey, "10m", "3d")), as(issued(["admin"], issuer.privateKey, "1h"))];
    try {
      const tooLong = await grpcError(longLived.listProducts({ pageSize: 1, pageToken: "" }));
      expect(tooLong.code).toBe(Code.UNAUTHENTICATED);
      expect(tooLong.message).toBe("the bearer token expires in 2h, later than tokens may live here; get one valid for at most 1h");
      const tooOld = await grpcError(issuedLongAgo.listProducts({ pageSize: 1, pageToken: "" }));
      expect(tooOld.code).toBe(Code.UNAUTHENTICATED);
      expect(tooOld.message).toBe("the bearer token was issued to live 3d 10m, longer than tokens may live here; get one valid for at most 1h");
      expect((await inTime.listProducts({ pageSize: 1, pageToken: "" })).products).toBeDefined();
    } finally {
      for (const c of [longLived, issuedLongAgo, inTime]) c.close();
    }
  });

  it("will not start with a GRPC_AUTH_MAX_TOKEN_TTL under a minute: exit code 2, naming it", async () => {
    const broken = startServiceProcess("products", { ...env(""), GRPC_AUTH_MAX_TOKEN_TTL: "30s", PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`, PRODUCTS_DATABASE_URL: join(dir.path, "short.db") });
    expect(await broken.exited).toBe(2);
    expect(broken.lines().join("\n")).toContain('GRPC_AUTH_MAX_TOKEN_TTL="30s" is invalid: expected at least 1m');
  });

  it("refuses to start with a public keys file that holds no key, or a TLS file it cannot read or that holds no certificate or key of its own, a TLS or token key others may read or a CA file others may write: exit code 2, one line naming the file and its variable, nothing made", async () => {
    // A file to put right, as a bad setting is: they failed the start with a stack and exit code 1, which `npm start`
    // called "exited unexpectedly" as it does a crash; a CA file of no certificate was taken, and then trusted no one.
    const bad = join(dir.path, "empty.pem");
    writeFileSync(bad, "no key here\n", { mode: 0o600 });
    const missing = join(dir.path, "tls-missing", "products.pem");
    const dev = ensureDevCredentials(dir.path, ["products", "orders"]);
    const tls = { GRPC_INSECURE: "0", GRPC_TLS_CERT: dev.certs.products.certFile, GRPC_TLS_KEY: dev.certs.products.keyFile, GRPC_TLS_CA: dev.caFile };
    const openKey = join(dir.path, "open-key.pem");
    const openCa = join(dir.path, "open-ca.pem");
    copyFileSync(dev.certs.products.keyFile, openKey);
    copyFileSync(dev.caFile, openCa);
    chmodSync(openKey, 0o644);
    chmodSync(openCa, 0o666);
    const openTokenKey = join(dir.path, "open-token.key");
    copyFileSync(env("").GRPC_AUTH_KEY_FILE, openTokenKey);
    chmodSync(openTokenKey, 0o644);
    const database = join(dir.path, "broken.db");
    for (const [extra, why, named] of [
      [{ GRPC_AUTH_PUBLIC_KEYS: bad }, `${bad} holds no PEM public key`, "GRPC_AUTH_PUBLIC_KEYS name the files"],
      [{ GRPC_INSECURE: "0", GRPC_TLS_CERT: missing, GRPC_TLS_KEY: missing, GRPC_TLS_CA: missing }, `cannot read the TLS CA certificate ${missing}: ENOENT`, "(GRPC_TLS_CA names it;"],
      [{ ...tls, GRPC_TLS_CERT: bad }, `the TLS certificate ${bad} holds no PEM certificate`, "(GRPC_TLS_CERT names it;"],
      [{ ...tls, GRPC_TLS_KEY: bad }, `the TLS key ${bad} holds no PEM private key that can be read (`, "(GRPC_TLS_KEY names it;"],
      [{ ...tls, GRPC_TLS_KEY: dev.certs.orders.keyFile }, `the TLS key ${dev.certs.orders.keyFile} is not the key of the certificate ${dev.certs.products.certFile}`, "(GRPC_TLS_KEY names it;"],
      [{ ...tls, GRPC_TLS_CA: bad }, `the TLS CA certificate ${bad} holds no PEM certificate`, "(GRPC_TLS_CA names it;"],
      [{ ...tls, GRPC_TLS_CA: dir.path }, `cannot read the TLS CA certificate ${dir.path}: it is a directory, not a regular file`, "(GRPC_TLS_CA names it;"],
      // Started by hand, a service took a key others could read and a CA file others could write, where it refuses a token key others may read.
      [{ ...tls, GRPC_TLS_KEY: openKey }, `the TLS key ${openKey} is readable by others (mode 644), who could pose as the holder of its certificate with it; chmod 600 it`, "(GRPC_TLS_KEY names it;"],
      [{ ...tls, GRPC_TLS_CA: openCa }, `the TLS CA certificate ${openCa} may be written by others (mode 666), who could add a CA of theirs, whose certificates would then be trusted; chmod go-w it`, "(GRPC_TLS_CA names it;"],
      [{ GRPC_AUTH_KEY_FILE: openTokenKey }, `the token key ${openTokenKey} is readable by others (mode 644), who could sign tokens of every role with it; chmod 600 it`, "GRPC_AUTH_PUBLIC_KEYS name the files"],
    ] as const) {
      const broken = startServiceProcess("products", { ...env(""), ...extra, PRODUCTS_LISTEN: `127.0.0.1:${await freePort()}`, PRODUCTS_DATABASE_URL: database });
      expect(await broken.exited, why).toBe(2);
      const fatal = broken.lines().filter((l) => l.includes('"level":"fatal"'));
      expect(fatal, why).toHaveLength(1);
      expect(fatal[0]).toContain(`"msg":"start-up refused: ${why}`);
      expect(fatal[0]).toContain(named);
      // It pointed at DATA_DIR/tls, which a service started alone does not read.
      expect(fatal[0]).toContain("a service started alone reads no DATA_DIR, and takes them from these variables, .data/tls and .data/auth unless set)");
      expect(fatal[0]).not.toContain('"stack"');
      expect(existsSync(database), why).toBe(false);
    }
  });
});
