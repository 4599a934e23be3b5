import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { connect } from "nats";
import { afterEach, describe, expect, it } from "vitest";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { checkHealth, createClient, waitForServing } from "../platform/grpc/index.js";
import { freePort, startNatsServer, type NatsServerHandle } from "./support/nats-server.js";
import { resolvingLater, startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { grpcError } from "./support/shop.js";
import { readStream } from "./support/streams.js";
import { tempDirForSuite } from "./support/temp-dir.js";

const dir = tempDirForSuite("concord-nats-late-");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const teapot = { name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1999 }, initialStock: 3 };
const waitingLines = (svc: ServiceProcess) => svc.logs().filter((l) => l.component === "event-runtime" && l.level === "warn");

describe("a service started while NATS is not there", () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /** The product service as its own process, pointed at a NATS port nothing listens on yet, on `natsHost`, with `env` besides. */
  const startProductsBeforeNats = async (key: string, natsHost = "127.0.0.1", env: Record<string, string> = {}) => {
    const natsPort = await freePort();
    const address = `127.0.0.1:${await freePort()}`;
    const svc = startServiceProcess("products", {
      NATS_URL: `nats://${natsHost}:${natsPort}`,
      PRODUCTS_LISTEN: address,
      PRODUCTS_DATABASE_URL: join(dir, `${key}.db`),
      LOG_LEVEL: "info",
      ...env,
    });
    cleanups.push(() => svc.kill());
    await expect.poll(() => checkHealth(address).catch(() => "no answer"), { timeout: 20_000, interval: 100 }).toBe("NOT_SERVING");
    return { svc, address, natsPort };
  };

  it("reports NOT_SERVING, answers calls with UNAVAILABLE, logs why once while retrying, and serves once NATS is there", async () => {
    const { svc, address, natsPort } = await startProductsBeforeNats("late");
    const client = createClient(ProductServiceService, { address, maxAttempts: 1 });
    cleanups.push(async () => client.close());
    const refused = await grpcError(client.createProduct(teapot));
    expect(refused.code).toBe(status.UNAVAILABLE);
    expect(refused.message).toMatch(/products is starting and waits for NATS/);

    // The reason is logged at the first failed attempt, with the address; several more go by (every 0.2 to 1 s), and
    // it is not logged again.
    await expect.poll(() => waitingLines(svc).length, { timeout: 20_000 }).toBeGreaterThan(0);
    await sleep(2_500);
    expect(svc.process.exitCode).toBeNull();
    const waiting = waitingLines(svc);
    expect(waiting).toHaveLength(1);
    expect(waiting[0]).toMatchObject({ natsUrl: `nats://127.0.0.1:${natsPort}`, msg: expect.stringMatching(/NATS cannot be reached/) });
    expect(String(waiting[0].reason)).toMatch(/CONNECTION_REFUSED/);
    expect(await checkHealth(address)).toBe("NOT_SERVING");

    const nats: NatsServerHandle = await startNatsServer({ port: natsPort, storeDir: join(dir, "late-nats") });
    cleanups.push(() => nats.stop());
    await waitForServing(address, 20_000);
    const { product } = await client.createProduct(teapot);
    expect(product?.stock).toBe(3);
    // The streams were provisioned and the relay runs: the product's event reaches its stream.
    const nc = await connect({ servers: nats.url });
    cleanups.push(() => nc.close());
    const jsm = await nc.jetstreamManager();
    await expect
      .poll(async () => (await readStream(jsm, "SHOP_PRODUCTS")).map((e) => e.subject), { timeout: 10_000 })
      .toContain(`shop.products.v1.product.${product!.id}.created`);
    await expect.poll(() => svc.logs().some((l) => l.msg === "reached NATS; events flow")).toBe(true);

    expect(await svc.stop()).toBe(0);
  }, 60_000);

  it("waits for a host name that does not resolve (yet), saying so once with the name as given and the variable to correct, and stops with exit code 0 on SIGTERM", async () => {
    // RFC 6761: .invalid never resolves. In docker compose or Kubernetes NATS's name appears once its container or pod exists.
    const { svc, natsPort } = await startProductsBeforeNats("unresolved", "nats.invalid");
    // Said at the first failed lookup; several more attempts go by, and it is not said again.
    await expect.poll(() => waitingLines(svc).length, { timeout: 20_000 }).toBeGreaterThan(0);
    await sleep(2_500);
    expect(svc.process.exitCode).toBeNull();
    expect(waitingLines(svc)).toEqual([
      expect.objectContaining({
        natsUrl: `nats://nats.invalid:${natsPort}`,
        host: "nats.invalid",
        // EAI_AGAIN where no name server answers at all (a machine without a network).
        reason: expect.stringMatching(new RegExp(`^connecting to NATS at nats://nats\\.invalid:${natsPort} failed: getaddrinfo (ENOTFOUND|EAI_AGAIN) nats\\.invalid$`)),
        msg: "NATS's host nats.invalid does not resolve: waiting for it, not serving meanwhile, as for a server not up yet (a name that a container or pod brings resolves once it exists); if nats.invalid is not the host meant, correct it in NATS_URL",
      }),
    ]);
    const asked = performance.now();
    expect(await svc.stop()).toBe(0);
    expect(performance.now() - asked).toBeLessThan(5_000);
    expect(svc.logs().map((l) => l.msg)).toContain("stopped");
  }, 60_000);

  it("serves once the host name resolves and NATS is there", async () => {
    const resolvable = join(dir, "nats-late-resolves");
    const { svc, address, natsPort } = await startProductsBeforeNats("resolves-later", "nats-late.invalid", resolvingLater("nats-late.invalid", resolvable));
    await expect.poll(() => waitingLines(svc).map((l) => l.host)).toEqual(["nats-late.invalid"]);
    const nats: NatsServerHandle = await startNatsServer({ port: natsPort, storeDir: join(dir, "resolves-later-nats") });
    cleanups.push(() => nats.stop());
    await sleep(1_500);
    expect(await checkHealth(address)).toBe("NOT_SERVING");
    writeFileSync(resolvable, "");
    await waitForServing(address, 20_000);
    await expect.poll(() => svc.logs().find((l) => l.msg === "reached NATS; events flow")).toMatchObject({ natsUrl: `nats://nats-late.invalid:${natsPort}` });
    expect(await svc.stop()).toBe(0);
  }, 60_000);

  it("stops with exit code 0 on SIGTERM while it still waits for NATS", async () => {
    const { svc } = await startProductsBeforeNats("stop-while-waiting");
    const asked = performance.now();
    expect(await svc.stop()).toBe(0);
    // Promptly: not after a connection timeout (20 s) or a drain of a connection that never was.
    expect(performance.now() - asked).toBeLessThan(10_000);
    expect(svc.logs().map((l) => l.msg)).toContain("stopped");
  }, 60_000);
});
