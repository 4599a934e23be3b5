import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { connect as connectHttp2 } from "node:http2";
import { join } from "node:path";
import { promisify } from "node:util";
import { headers as natsHeaders } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrderState } from "../gen/ts/shop/orders/v1/order_service_pb.js";
import { Code } from "../platform/errors/index.js";
import { uuidv7 } from "../platform/ids/index.js";
import { repoRoot } from "../tools/repo-root.js";
import { useNatsConnection, useNatsServer } from "./support/nats-server.js";
import { address, grpcError, rawCall, type RunningOrders, type RunningProducts, startTestOrders, startTestProducts, tempDir } from "./support/shop.js";

const run = promisify(execFile);

/** test/metrics-lint (promlint, as `promtool check metrics` runs it, and histograms' series checked) built into `dir`. */
async function buildMetricsLint(dir: string): Promise<(scrape: string) => Promise<{ status: number; problems: string }>> {
  const binary = join(dir, "metrics-lint");
  const env = { ...process.env, GOWORK: "off", GOFLAGS: "-mod=readonly" };
  try {
    await run("go", ["build", "-o", binary, "."], { cwd: join(repoRoot, "test/metrics-lint"), env, timeout: 240_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`building test/metrics-lint failed (run \`node tools/setup.mjs --for-tests\` first): ${e.stderr?.trim() || e.message}`, { cause: err });
  }
  return (scrape) =>
    new Promise((resolve, reject) => {
      const child = execFile(binary, [], { timeout: 30_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        const status = err ? (err as { code?: unknown }).code : 0;
        if (typeof status !== "number") reject(err);
        else resolve({ status, problems: `${stdout}${stderr}`.trim() });
      });
      child.stdin!.end(scrape);
    });
}

/** The Accept header Prometheus scrapes with: OpenMetrics first, the text format as a fallback. */
const prometheusAccept = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/** One scrape of a service's metrics endpoint, as Prometheus asks for it. */
async function scrape(metricsAddress: string | undefined): Promise<{ contentType: string; text: string }> {
  if (!metricsAddress) throw new Error("the service serves no metrics");
  const res = await fetch(`http://${metricsAddress}/metrics`, { headers: { accept: prometheusAccept } });
  expect(res.status).toBe(200);
  return { contentType: res.headers.get("content-type") ?? "", text: await res.text() };
}

/** The series of a scrape: each sample line's name and labels. */
function seriesOf(text: string): string[] {
  return text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => line.slice(0, line.lastIndexOf(" ")));
}

/**
 * Sends each of `calls` (a path and extra headers) to the gRPC server at
 * `address` on one HTTP/2 connection, an empty request each, as a client
 * of its own could; resolves once every answer has ended.
 */
async function sendCalls(address: string, calls: ReadonlyArray<{ readonly path: string; readonly headers?: Record<string, string> }>): Promise<void> {
  const session = connectHttp2(`http://${address}`);
  try {
    for (let i = 0; i < calls.length; i += 50) {
      await Promise.all(
        calls.slice(i, i + 50).map(async ({ path, headers = {} }) => {
          const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
          stream.on("data", () => {}).on("error", () => {}).end(Buffer.from([0, 0, 0, 0, 0]));
          await once(stream, "close");
        }),
      );
    }
  } finally {
    session.close();
  }
}

/** How many dead letters the product service's OrderPlaced consumer has filed, in a scrape. */
function deadLettered(text: string): number {
  return Number(/^concord_consumer_dead_lettered_total\{consumer="products-order-placed"\} (\d+)$/m.exec(text)?.[1] ?? 0);
}

describe("metrics, as Prometheus reads them", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const nats = useNatsServer({ storeDir: join(dir.path, "nats") });
  const nc = useNatsConnection(nats);
  let products: RunningProducts;
  let orders: RunningOrders;
  let lint: Awaited<ReturnType<typeof buildMetricsLint>>;
  beforeAll(async () => {
    lint = await buildMetricsLint(dir.path);
    products = await startTestProducts(dir.path, nats().url, { metricsListen: "127.0.0.1:0" });
    orders = await startTestOrders(dir.path, products.service.address, nats().url, { metricsListen: "127.0.0.1:0" });
  }, 300_000);
  afterAll(async () => {
    await orders?.stop();
    await products?.stop();
  });

  it("finds what it is there to find: a gauge named as a counter, a counter that is not, a duplicate series, text that does not parse, a histogram's series out of shape", async () => {
    const scrapeWith = (lines: string[]) => lint(lines.join("\n") + "\n");
    expect(await scrapeWith(["# HELP a_total A gauge.", "# TYPE a_total gauge", "a_total 1"])).toEqual({ status: 1, problems: 'a_total: non-counter metrics should not have "_total" suffix' });
    expect(await scrapeWith(["# HELP b Calls.", "# TYPE b counter", "b 1"])).toEqual({ status: 1, problems: 'b: counter metrics should have "_total" suffix' });
    expect((await scrapeWith(["# HELP c_total Calls.", "# TYPE c_total counter", 'c_total{x="1"} 1', 'c_total{x="1"} 2'])).problems).toMatch(/^c_total: metric not unique/);
    expect((await scrapeWith(["# HELP d Things.", "# TYPE d gauge", "d{x=1} 1"])).status).toBe(2);
    // Histograms as histogram_quantile reads them, which promlint leaves: buckets cumulative, +Inf holding _count, a _sum.
    const histogram = (lines: string[]) => scrapeWith(["# HELP e_seconds Time.", "# TYPE e_seconds histogram", ...lines]);
    expect(await histogram(['e_seconds_bucket{m="a",le="1"} 3', 'e_seconds_bucket{m="a",le="2"} 2', 'e_seconds_bucket{m="a",le="+Inf"} 3', 'e_seconds_sum{m="a"} 1', 'e_seconds_count{m="a"} 3'])).toEqual({
      status: 1,
      problems: 'e_seconds: series {m="a"}: bucket le=2 does not follow le=1 cumulatively',
    });
    expect(await histogram(['e_seconds_bucket{le="1"} 3', 'e_seconds_bucket{le="+Inf"} 4', "e_seconds_sum 1", "e_seconds_count 5"])).toEqual({ status: 1, problems: "e_seconds: series {}: the +Inf bucket is not _count" });
    expect(await histogram(['e_seconds_bucket{le="1"} 3', "e_seconds_sum 1", "e_seconds_count 3"])).toEqual({ status: 1, problems: "e_seconds: series {} has no +Inf bucket" });
    expect(await histogram(['e_seconds_bucket{le="1"} 3', 'e_seconds_bucket{le="+Inf"} 3', "e_seconds_count 3"])).toEqual({ status: 1, problems: "e_seconds: series {} lacks its _count or _sum" });
  });

  it("serves both services' metrics under load, errors and a dead letter with no parse error or lint problem", { timeout: 60_000 }, async () => {
    const { product } = await products.client.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 1000 }, initialStock: 100 });
    const placed = await Promise.all(
      Array.from({ length: 10 }, () => orders.client.createOrder({ customerId: "c-lint", lines: [{ productId: product!.id, quantity: 1 }], shippingAddress: address })),
    );
    for (const { order } of placed) await expect.poll(async () => (await orders.client.getOrder({ id: order!.id })).order!.state).toBe(OrderState.ORDER_STATE_CONFIRMED);
    // Errors: a bad request, an unknown order, a method neither serves.
    expect((await grpcError(products.client.createProduct({ name: "", description: "", price: { currencyCode: "EUR", amountMinor: 100 }, initialStock: 1 }))).code).toBe(Code.INVALID_ARGUMENT);
    expect((await grpcError(orders.client.getOrder({ id: uuidv7() }))).code).toBeGreaterThan(0);
    await expect(rawCall(products.service.address, "/shop.products.v1.ProductService/NoSuchMethod", Buffer.alloc(0))).rejects.toThrow();
    // A dead letter: an OrderPlaced the product service cannot decode.
    const h = natsHeaders();
    h.set("ce-specversion", "1.0");
    h.set("ce-id", uuidv7());
    h.set("ce-type", "shop.orders.v1.OrderPlaced");
    h.set("ce-source", "test");
    h.set("content-type", "application/protobuf");
    await nc().jetstream().publish(`shop.orders.v1.order.${uuidv7()}.placed`, new Uint8Array([0xff, 0xff, 0xff]), { headers: h });
    await expect.poll(async () => /^concord_consumer_dead_lettered_total\{[^}]*\} [1-9]/m.test((await scrape(products.service.metricsAddress)).text)).toBe(true);

    const scraped = { products: await scrape(products.service.metricsAddress), orders: await scrape(orders.service.metricsAddress) };
    // What the load left: the errors, the refused call, the dead letter and the orders' saga are in what was linted.
    expect(scraped.products.text).toMatch(/^grpc_server_handled_total\{grpc_service="shop.products.v1.ProductService",grpc_method="CreateProduct",grpc_code="INVALID_ARGUMENT"\} 1$/m);
    expect(scraped.products.text).toMatch(/^concord_grpc_refused_total\{grpc_service="unknown",grpc_method="unknown",grpc_code="UNIMPLEMENTED",reason="unknown_method"\} 1$/m);
    expect(scraped.orders.text).toMatch(/^grpc_server_handled_total\{grpc_service="shop.orders.v1.OrderService",grpc_method="CreateOrder",grpc_code="OK"\} 10$/m);
    expect(scraped.orders.text).toMatch(/^concord_consumer_handled_total\{consumer="orders-stock-reserved"\} 10$/m);
    expect(scraped.products.text).toMatch(/^concord_consumer_handling_seconds_bucket\{consumer="products-order-placed",le="\+Inf"\} 1[01]$/m);
    for (const [service, { contentType, text }] of Object.entries(scraped)) {
      // The endpoints offer no OpenMetrics: asked for it first, they answer in the text format, which Prometheus takes.
      expect(contentType, service).toBe("text/plain; version=0.0.4; charset=utf-8");
      expect(await lint(text), service).toEqual({ status: 0, problems: "" });
    }
  });

  it("keeps the names callers make up out of its labels: made-up methods, services, timeouts and event subjects add no series", { timeout: 60_000 }, async () => {
    const hostile = async (made: readonly string[]): Promise<void> => {
      const calls = (service: string): Array<{ path: string; headers?: Record<string, string> }> =>
        made.flatMap((name): Array<{ path: string; headers?: Record<string, string> }> => [
          { path: `/${service}/${name}` },
          { path: `/${name}.v1.Service/${name}` },
          { path: `/${name}` },
          { path: `/${service}/${name}`, headers: { "grpc-encoding": "gzip" } },
          { path: `/${service}/${name}`, headers: { "grpc-timeout": "99999999H" } },
          { path: `/${name}/${name}`, headers: { "grpc-timeout": name } },
        ]);
      await sendCalls(products.service.address, calls("shop.products.v1.ProductService"));
      await sendCalls(orders.service.address, calls("shop.orders.v1.OrderService"));
      // Events on made-up subjects, of made-up types and sources: dead letters of the consumer whose filter takes the subject.
      const dead = deadLettered((await scrape(products.service.metricsAddress)).text);
      for (const name of made) {
        const h = natsHeaders();
        h.set("ce-specversion", "1.0");
        h.set("ce-id", uuidv7());
        h.set("ce-type", `shop.orders.v1.${name}`);
        h.set("ce-source", name);
        h.set("content-type", "application/protobuf");
        await nc().jetstream().publish(`shop.orders.v1.order.${name}.placed`, new Uint8Array([0xff, 0xff, 0xff]), { headers: h });
      }
      await expect.poll(async () => deadLettered((await scrape(products.service.metricsAddress)).text)).toBe(dead + made.length);
    };
    const madeUp = (count: number) => Array.from({ length: count }, () => `x${randomBytes(6).toString("hex")}`);
    // A few first, for the series any such call adds once (refusals by reason, the consumer's outcomes); then many.
    await hostile(madeUp(2));
    const before = { products: seriesOf((await scrape(products.service.metricsAddress)).text), orders: seriesOf((await scrape(orders.service.metricsAddress)).text) };
    const made = madeUp(100);
    await hostile(made);
    for (const [service, address] of [["products", products.service.metricsAddress], ["orders", orders.service.metricsAddress]] as const) {
      const { text } = await scrape(address);
      expect(made.filter((name) => text.includes(name)), service).toEqual([]);
      // Node's own may show a kind of garbage collection or a type of handle they had not had yet; none of the service's.
      expect(seriesOf(text).filter((s) => !before[service].includes(s) && !s.startsWith("nodejs_")), service).toEqual([]);
      expect(await lint(text), service).toEqual({ status: 0, problems: "" });
    }
    expect((await scrape(products.service.metricsAddress)).text).toMatch(/^concord_grpc_refused_total\{grpc_service="unknown",grpc_method="unknown",grpc_code="UNIMPLEMENTED",reason="unknown_method"\} [1-9]\d{2,}$/m);
  });
});
