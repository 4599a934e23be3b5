import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createFileRegistry, type DescEnum, type DescMessage, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { descriptorSet } from "../gen/ts/descriptor_set.js";
import { grpcDescriptorSet } from "../gen/ts/grpc_descriptor_set.js";
import { repoRoot } from "../tools/repo-root.js";
import { type Shop, startShop } from "./support/shop.js";
import { outputMismatch, type ReadmeCommand, readmeBlock } from "./support/readme.js";

// The stock tools users reach for, pinned and installed into .tools/bin by
// `node tools/setup.mjs --for-tests` (npm test's pretest).
const toolPath = (name: "grpcurl" | "nats"): string => {
  const path = join(repoRoot, ".tools", "bin", name);
  if (!existsSync(path)) throw new Error(`${name} is missing at .tools/bin/${name}; run \`node tools/setup.mjs --for-tests\``);
  return path;
};

interface ToolRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The environment the tools run in: the tokens the README has the reader make (set in beforeAll). */
const toolEnv: NodeJS.ProcessEnv = { ...process.env };

/** Runs a tool with no shell; a run that outlives `timeoutMs` is killed and fails the test. */
function runTool(name: "grpcurl" | "nats", args: readonly string[], timeoutMs = 20_000): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    execFile(toolPath(name), args, { env: toolEnv, timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && (err as { killed?: boolean }).killed) reject(new Error(`${name} ${args.join(" ")} did not finish within ${timeoutMs} ms`));
      else resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** The shop's development CA, which grpcurl is told to trust (set in beforeAll). */
let caFile = "";

/** grpcurl over TLS trusting the shop's CA, with a deadline of its own, so a hung server fails the call rather than the test run. */
const grpcurl = (...args: string[]): Promise<ToolRun> => runTool("grpcurl", ["-max-time", "10", "-cacert", caFile, ...args]);

/** Runs tools/token.ts as the README does, with the shop's data dir; resolves with the token it prints. */
function makeToken(dataDir: string, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ["--import", "tsx", "tools/token.ts", ...args], { cwd: repoRoot, env: { ...process.env, DATA_DIR: dataDir }, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`tools/token.ts ${args.join(" ")} failed: ${stderr}`, { cause: err }));
      else resolve(stdout.trim());
    });
  });
}

async function succeeds(run: Promise<ToolRun>, what: string): Promise<string> {
  const result = await run;
  if (result.code !== 0) throw new Error(`${what} failed (exit ${result.code}):\n${result.stderr}${result.stdout}`);
  return result.stdout;
}

/** Runs `items` through `work`, at most `limit` at a time (two shared cores). */
async function eachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(Array.from({ length: limit }, async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await work(item);
  }));
}

/** Every message and enum that `roots` reach through their fields, transitively. */
function reachableTypes(roots: readonly DescMessage[]): (DescMessage | DescEnum)[] {
  const seen = new Map<string, DescMessage | DescEnum>();
  const visit = (type: DescMessage | DescEnum): void => {
    if (seen.has(type.typeName)) return;
    seen.set(type.typeName, type);
    if (type.kind !== "message") return;
    for (const field of type.fields) {
      if (field.message) visit(field.message);
      if (field.enum) visit(field.enum);
    }
  };
  roots.forEach(visit);
  return [...seen.values()];
}

describe("grpcurl and the nats CLI against the running services", () => {
  let shop: Shop;
  const registry = createFileRegistry(
    createFileRegistry(fromBinary(FileDescriptorSetSchema, descriptorSet)),
    createFileRegistry(fromBinary(FileDescriptorSetSchema, grpcDescriptorSet)),
  );
  beforeAll(async () => {
    // As under `npm start`: TLS and tokens for gRPC; nats-server admits the generated users only, and the nats CLI reads as the observer.
    shop = await startShop({ secure: true, secured: true });
    caFile = join(shop.dir, "tls", "ca.pem");
    // As the README has the reader do before its grpcurl calls.
    [toolEnv.ADMIN_TOKEN, toolEnv.CUSTOMER_TOKEN] = await Promise.all([makeToken(shop.dir, "--role", "admin"), makeToken(shop.dir, "--role", "customer", "--subject", "c-1")]);
  }, 60_000);
  afterAll(async () => {
    await shop?.stop();
  });

  /** A README command with the README's addresses replaced by the test's, and nothing else changed. */
  const asRun = (command: ReadmeCommand, productId: string | undefined): { tool: "grpcurl" | "nats"; args: string[] } => {
    const [tool, ...args] = command.argv;
    if (tool !== "grpcurl" && tool !== "nats") throw new Error(`the README runs ${tool}, which this test does not know: ${command.text}`);
    return {
      tool,
      args: args.map((word) => {
        if (word.includes("<id from above>") && productId === undefined) throw new Error(`no product was created before: ${command.text}`);
        return word
          .replaceAll("127.0.0.1:50051", shop.products.service.address)
          .replaceAll("127.0.0.1:50052", shop.orders.service.address)
          .replaceAll("nats://127.0.0.1:4222", shop.nats.url)
          .replaceAll(".data/tls/ca.pem", caFile)
          .replaceAll(".data/nats-credentials/observer.nk", shop.nats.seedFile("observer"))
          .replaceAll("<id from above>", productId ?? "");
      }),
    };
  };

  /** Runs a README command; one whose shown output starts with ERROR: must fail, any other must succeed; the output must be what the README shows. */
  const runAsWritten = async (command: ReadmeCommand, productId?: string): Promise<ToolRun> => {
    const { tool, args } = asRun(command, productId);
    const result = await runTool(tool, args);
    const printed = result.stdout + result.stderr;
    const failureShown = command.output[0]?.trim() === "ERROR:";
    expect(result.code !== 0, `${command.text}\nexit ${result.code}:\n${printed}`).toBe(failureShown);
    if (command.output.length > 0) expect(outputMismatch(command.output, printed), command.text).toBeUndefined();
    return result;
  };

  it("lists each server's own services and grpc.health.v1, through reflection", async () => {
    const listed = async (address: string) => (await succeeds(grpcurl(address, "list"), `grpcurl list ${address}`)).trim().split("\n");
    expect(await listed(shop.products.service.address)).toEqual(["grpc.health.v1.Health", "shop.products.v1.ProductService"]);
    expect(await listed(shop.orders.service.address)).toEqual(["grpc.health.v1.Health", "shop.orders.v1.OrderService"]);
  });

  it("describes every service, every method and every type each method's input and output reach", { timeout: 180_000 }, async () => {
    for (const address of [shop.products.service.address, shop.orders.service.address]) {
      const services = (await succeeds(grpcurl(address, "list"), "grpcurl list")).trim().split("\n");
      const symbols: { name: string; kind: string }[] = [];
      const roots: DescMessage[] = [];
      for (const name of services) {
        const service = registry.getService(name);
        if (!service) throw new Error(`${name} is listed but is in no descriptor set`);
        symbols.push({ name, kind: "service" });
        for (const method of service.methods) {
          symbols.push({ name: `${name}.${method.name}`, kind: "method" });
          roots.push(method.input, method.output);
        }
      }
      const types = reachableTypes(roots);
      symbols.push(...types.map((t) => ({ name: t.typeName, kind: t.kind })));
      // The closure crosses files: imported well-known types, and health's map values.
      expect(types.map((t) => t.typeName)).toEqual(expect.arrayContaining(["google.protobuf.Timestamp", "grpc.health.v1.HealthListResponse"]));
      await eachLimited(symbols, 3, async ({ name, kind }) => {
        const described = await succeeds(grpcurl(address, "describe", name), `grpcurl describe ${name} at ${address}`);
        expect(described.split("\n")[0]).toBe(`${name} is a${kind === "enum" ? "n" : ""} ${kind}:`);
      });
    }
  });

  it("runs each call of the README's \"Calling the services\" block as written, with the output the README shows", { timeout: 60_000 }, async () => {
    const commands = readmeBlock("## Calling the services");
    expect(commands.length).toBeGreaterThanOrEqual(4);
    let productId: string | undefined;
    for (const command of commands) {
      const { stdout } = await runAsWritten(command, productId);
      const created = /"product":\s*\{\s*"id":\s*"([^"]+)"/.exec(stdout);
      if (command.text.includes("/CreateProduct") && created) productId = created[1];
    }
    expect(productId).toBeDefined();
  });

  it("shows the field violations of an invalid request, as the README says", async () => {
    const { product } = await shop.products.client.createProduct({ name: "Kettle", description: "", price: { currencyCode: "EUR", amountMinor: 2500 }, initialStock: 3 });
    const [command, ...more] = readmeBlock("An invalid request fails with");
    expect(more).toEqual([]);
    const { stdout, stderr } = await runAsWritten(command, product?.id);
    expect(stderr).toContain("Code: InvalidArgument");
    for (const field of ["customer_id", "lines[0].quantity", "shipping_address.country_code"]) expect(stdout + stderr).toContain(`"field": "${field}"`);
    expect(stdout + stderr).not.toContain("@value");
  });

  it("runs the README's UpdateOrder call, its field mask as grpcurl takes one, as written", async () => {
    const [command, ...more] = readmeBlock("`UpdateOrder` changes what its `update_mask` names");
    expect(more).toEqual([]);
    const { stderr } = await runAsWritten(command);
    expect(stderr).toContain("Code: InvalidArgument");
    expect(stderr).not.toContain("error getting request data");
  });

  it("refuses a call carrying two authorization headers with UNAUTHENTICATED, whichever comes first, where the first was taken and the other ignored; health still answers", async () => {
    const products = shop.products.service.address;
    const forged = `${toolEnv.ADMIN_TOKEN!.slice(0, toolEnv.ADMIN_TOKEN!.lastIndexOf(".") + 1)}${"A".repeat(43)}`;
    const create = ["-d", '{"name":"Twice","price":{"currency_code":"EUR","amount_minor":100},"initial_stock":1}', products, "shop.products.v1.ProductService/CreateProduct"];
    for (const tokens of [[toolEnv.ADMIN_TOKEN!, forged], [forged, toolEnv.ADMIN_TOKEN!], [toolEnv.ADMIN_TOKEN!, toolEnv.ADMIN_TOKEN!]]) {
      const { code, stderr } = await grpcurl(...tokens.flatMap((t) => ["-H", `authorization: Bearer ${t}`]), ...create);
      expect(code).not.toBe(0);
      expect(stderr).toContain("Code: Unauthenticated");
      expect(stderr).toContain('Message: the call carries 2 authorization headers; send one, "authorization: Bearer <token>"');
    }
    const listed = await succeeds(grpcurl("-H", `authorization: Bearer ${toolEnv.ADMIN_TOKEN}`, "-d", '{"page_size":500}', products, "shop.products.v1.ProductService/ListProducts"), "ListProducts");
    expect(listed).not.toContain("Twice");
    const twice = ["-H", `authorization: Bearer ${forged}`, "-H", `authorization: Bearer ${forged}`];
    expect(JSON.parse(await succeeds(grpcurl(...twice, products, "grpc.health.v1.Health/Check"), "Health/Check"))).toEqual({ status: "SERVING" });
  });

  it("takes metadata under 16 KiB; over it, grpcurl refuses to send the call, naming the server's limit", async () => {
    const products = shop.products.service.address;
    const note = (size: number) => ["-H", `authorization: Bearer ${toolEnv.ADMIN_TOKEN}`, "-H", `x-note: ${"a".repeat(size)}`];
    expect(JSON.parse(await succeeds(grpcurl(...note(12_000), products, "grpc.health.v1.Health/Check"), "Health/Check"))).toEqual({ status: "SERVING" });
    // grpc-go reads the header list size from the server's SETTINGS and fails the call itself, before sending it.
    const { code, stderr } = await grpcurl(...note(17_000), products, "grpc.health.v1.Health/Check");
    expect(code).not.toBe(0);
    expect(stderr).toContain("header list size to send violates the maximum size (16384 bytes) set by server");
  });

  it("checks health per service and lists the statuses (grpc.health.v1's map resolves)", async () => {
    const orders = shop.orders.service.address;
    const check = await succeeds(grpcurl("-d", '{"service":"shop.orders.v1.OrderService"}', orders, "grpc.health.v1.Health/Check"), "Health/Check");
    expect(JSON.parse(check)).toEqual({ status: "SERVING" });
    const list = await succeeds(grpcurl(orders, "grpc.health.v1.Health/List"), "Health/List");
    expect(JSON.parse(list)).toEqual({ statuses: { "": { status: "SERVING" }, "shop.orders.v1.OrderService": { status: "SERVING" } } });
  });

  it("lists the streams and the services' durable consumers with the nats CLI", async () => {
    const nats = (...args: string[]) => succeeds(runTool("nats", ["--server", shop.nats.url, "--nkey", shop.nats.seedFile("observer"), "--timeout", "5s", ...args]), `nats ${args.join(" ")}`);
    const names = (text: string) => text.trim().split("\n").map((l) => l.trim()).filter((l) => l !== "").sort();
    const manifest = JSON.parse(readFileSync(join(repoRoot, "gen", "events.json"), "utf8")) as { subscriptions: { durable: string; stream: string }[] };
    const table = await nats("stream", "ls");
    for (const stream of ["SHOP_PRODUCTS", "SHOP_ORDERS", "CONCORD_DLQ"]) expect(table).toContain(stream);
    expect(names(await nats("stream", "ls", "--names"))).toEqual(["CONCORD_DLQ", "SHOP_ORDERS", "SHOP_PRODUCTS"]);
    for (const stream of ["SHOP_PRODUCTS", "SHOP_ORDERS"]) {
      const durables = manifest.subscriptions.filter((s) => s.stream === stream).map((s) => s.durable).sort();
      expect(durables.length).toBeGreaterThan(0);
      const listed = await nats("consumer", "ls", stream);
      for (const durable of durables) expect(listed).toContain(durable);
      expect(names(await nats("consumer", "ls", stream, "--names"))).toEqual(durables);
    }
  });

  it("runs the README's nats CLI block as written", async () => {
    const commands = readmeBlock("The nats CLI shows the streams");
    expect(commands.map((c) => c.argv[0])).toEqual(["nats", "nats"]);
    const [streams] = await Promise.all(commands.map((c) => runAsWritten(c)));
    for (const stream of ["SHOP_PRODUCTS", "SHOP_ORDERS", "CONCORD_DLQ"]) expect(streams.stdout).toContain(stream);
  });

  it("runs the README's observer commands as written: it reads, and the server refuses its publish and purge", async () => {
    const commands = readmeBlock("The observer may read, never publish");
    expect(commands.map((c) => c.argv.slice(5, 7).join(" "))).toEqual(["pub shop.orders.v1.order.x.cancelled", "stream purge"]);
    for (const command of commands) {
      const { tool, args } = asRun(command, undefined);
      const result = await runTool(tool, args);
      const printed = result.stdout + result.stderr;
      expect(result.code, `${command.text}\nexit ${result.code}:\n${printed}`).not.toBe(0);
      expect(outputMismatch(command.output, printed), command.text).toBeUndefined();
    }
  });
});
