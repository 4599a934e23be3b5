import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { ProductServiceService } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { createClient } from "../platform/grpc/index.js";
import { tempDir } from "./support/shop.js";

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

/** Runs `npm start`'s script and collects what it prints. */
async function startSystem(dataDir: string) {
  const [nats, products, orders] = [await freePort(), await freePort(), await freePort()];
  const env = { ...process.env, DATA_DIR: dataDir, NATS_PORT: String(nats), PRODUCTS_LISTEN: `127.0.0.1:${products}`, ORDERS_LISTEN: `127.0.0.1:${orders}`, LOG_LEVEL: "warn", NATS_URL: "" };
  const child = spawn(process.execPath, ["--import", "tsx", "tools/start.ts"], { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  await expect.poll(() => output, { timeout: 40_000, interval: 100 }).toContain("Concord is up");
  return { child, exited, output: () => output, productsAddress: `127.0.0.1:${products}` };
}

describe("npm start", () => {
  const dir = tempDir();
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill("SIGKILL");
    dir.remove();
  });

  it("brings the system up, serves calls, and stops everything cleanly on Ctrl-C", async () => {
    const system = await startSystem(dir.path);
    child = system.child;
    expect(system.output()).toMatch(/products: gRPC on 127\.0\.0\.1:\d+/);
    expect(system.output()).toMatch(/orders: {3}gRPC on 127\.0\.0\.1:\d+/);
    const client = createClient(ProductServiceService, { address: system.productsAddress });
    const { product } = await client.createProduct({ name: "Teapot", description: "", price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 1 });
    expect(product?.name).toBe("Teapot");
    client.close();
    system.child.kill("SIGINT");
    expect(await system.exited).toBe(0);
    expect(system.output()).toContain("everything stopped");
  });

  it("says which process died and stops the rest", async () => {
    const system = await startSystem(dir.path);
    child = system.child;
    const pid = Number(/products: .*pid (\d+)/.exec(system.output())![1]);
    process.kill(pid, "SIGKILL");
    expect(await system.exited).toBe(1);
    expect(system.output()).toMatch(/products exited unexpectedly/);
    expect(system.output()).toContain("everything stopped");
  });
});
