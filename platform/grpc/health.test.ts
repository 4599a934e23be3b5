import { spawnSync } from "node:child_process";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { Client, credentials, makeGenericClientConstructor, Server, ServerCredentials, type ServiceError, status } from "@grpc/grpc-js";
import { service as referenceHealth } from "grpc-health-check";
import { afterEach, describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { createLogger } from "../log/index.js";
import { checkHealth, waitForServing } from "./health-client.js";
import { decodeHealthCheckResponse, encodeHealthCheckRequest, HealthService } from "./health.js";
import { createGrpcServer, type GrpcServer } from "./server.js";

const logger = createLogger({ service: "test", level: "silent" });
// grpc-health-check's client, decoding with protobufjs from the standard health.proto: an implementation independent of ours.
const ReferenceClient = makeGenericClientConstructor(referenceHealth, "grpc.health.v1.Health");
type Reference = InstanceType<typeof ReferenceClient> & Record<string, (...args: unknown[]) => unknown>;

describe("grpc.health.v1", () => {
  let server: GrpcServer | undefined;
  const clients: Array<{ close(): void }> = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await server?.shutdown();
    server = undefined;
  });
  const start = async (options: { shutdownTimeoutMs?: number } = {}) => {
    server = createGrpcServer({ descriptorSet, logger, ...options });
    const { port } = await server.start("127.0.0.1:0");
    const address = `127.0.0.1:${port}`;
    const reference = new ReferenceClient(address, credentials.createInsecure()) as Reference;
    clients.push(reference);
    return { address, reference };
  };
  const unary = (client: Reference, name: string, request: unknown) =>
    new Promise<unknown>((resolve, reject) => client[name](request, { deadline: Date.now() + 5_000 }, (err: ServiceError | null, res: unknown) => (err ? reject(err) : resolve(res))));

  it("answers Check and List as the standard's own decoder reads them, and NOT_FOUND for a service it does not know", async () => {
    const { address, reference } = await start();
    expect(await unary(reference, "check", { service: "" })).toEqual({ status: "SERVING" });
    expect(await checkHealth(address, "")).toBe("SERVING");
    await expect(unary(reference, "check", { service: "shop.nothing.v1.Nothing" })).rejects.toMatchObject({ code: status.NOT_FOUND, details: "Health status unknown for service shop.nothing.v1.Nothing" });
    await expect(checkHealth(address, "shop.nothing.v1.Nothing")).rejects.toMatchObject({ code: status.NOT_FOUND });
    server!.setUnavailable("the database is not there yet");
    expect(await unary(reference, "list", {})).toEqual({ statuses: { "": { status: "NOT_SERVING" } } });
    expect(await checkHealth(address)).toBe("NOT_SERVING");
  });

  it("refuses a Check request over 1 KiB with INVALID_ARGUMENT, not naming in its answer the service it asks for", async () => {
    const { reference } = await start();
    const longest = "x".repeat(1021);
    expect(encodeHealthCheckRequest(longest)).toHaveLength(1024);
    await expect(unary(reference, "check", { service: longest })).rejects.toMatchObject({ code: status.NOT_FOUND, details: `Health status unknown for service ${longest}` });
    for (const service of [`${longest}x`, "\u20ac".repeat(85_000)]) {
      const err = await unary(reference, "check", { service }).catch((e: ServiceError) => e);
      expect(err, `${service.length} characters`).toMatchObject({ code: status.INVALID_ARGUMENT, details: "a Check request may have at most 1024 bytes" });
    }
    expect(await unary(reference, "check", { service: "" })).toEqual({ status: "SERVING" });
  });

  it("refuses a request that is not a HealthCheckRequest with INVALID_ARGUMENT", async () => {
    const { address } = await start();
    const raw = new Client(address, credentials.createInsecure());
    clients.push(raw);
    // Field 1, length-delimited, claiming 100 bytes that are not there.
    const err = await new Promise<ServiceError | null>((resolve) =>
      raw.makeUnaryRequest("/grpc.health.v1.Health/Check", (b: Buffer) => b, (b: Buffer) => b, Buffer.from([0x0a, 0x64, 0x41]), { deadline: Date.now() + 5_000 }, (e) => resolve(e)),
    );
    expect(err).toMatchObject({ code: status.INVALID_ARGUMENT, details: "not a grpc.health.v1.HealthCheckRequest" });
  });

  it("streams Watch: the current status, each change, SERVICE_UNKNOWN for an unknown service; a shutdown ends the stream and does not wait for it", async () => {
    const { reference } = await start({ shutdownTimeoutMs: 20_000 });
    const seen: string[] = [];
    const unknown: string[] = [];
    const watch = reference.watch({ service: "" }) as NodeJS.EventEmitter;
    const ended = new Promise<unknown>((resolve) => watch.on("status", (s: { code: number }) => resolve(s.code)));
    watch.on("data", (m: { status: string }) => seen.push(m.status));
    watch.on("error", () => undefined);
    const other = reference.watch({ service: "shop.later.v1.Later" }) as NodeJS.EventEmitter;
    other.on("data", (m: { status: string }) => unknown.push(m.status));
    other.on("error", () => undefined);
    await expect.poll(() => seen).toEqual(["SERVING"]);
    server!.setUnavailable("down for a moment");
    server!.setUnavailable(undefined);
    await expect.poll(() => seen).toEqual(["SERVING", "NOT_SERVING", "SERVING"]);
    await expect.poll(() => unknown).toEqual(["SERVICE_UNKNOWN"]);
    const t0 = Date.now();
    await server!.shutdown();
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(await ended).toBe(status.OK);
    expect(seen.at(-1)).toBe("NOT_SERVING");
  });

  it("keeps nothing of a Watch once it is cancelled: a caller without a token cannot fill the server's memory with service names", async () => {
    const grpcServer = new Server();
    const health = new HealthService({ "": "SERVING" });
    health.addToServer(grpcServer);
    const port = await new Promise<number>((resolve, reject) => grpcServer.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    const raw = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
    try {
      const watchers = (health as unknown as { watchers: Map<string, unknown> }).watchers;
      // Each name as long as a Watch may be, each call cancelled after its first answer: the server must forget the names.
      for (let i = 0; i < 20; i++) {
        const name = `${i}-${"x".repeat(1000)}`;
        const call = raw.makeServerStreamRequest("/grpc.health.v1.Health/Watch", (b: Buffer) => b, (b: Buffer) => b, encodeHealthCheckRequest(name));
        call.on("error", () => undefined);
        await new Promise<void>((resolve) => call.once("data", () => resolve()));
        call.cancel();
        await expect.poll(() => [...(watchers.get(name) as Set<unknown> | undefined) ?? []].length).toBe(0);
      }
      await expect.poll(() => [...watchers.keys()].filter((k) => k.length > 100).length).toBe(0);
    } finally {
      raw.close();
      grpcServer.forceShutdown();
    }
  });
});

describe("grpc.health.v1 Watch, open to callers without a token", () => {
  let grpcServer: Server | undefined;
  let raw: Client | undefined;
  afterEach(() => {
    raw?.close();
    grpcServer?.forceShutdown();
  });
  const start = async (health: HealthService) => {
    grpcServer = new Server();
    health.addToServer(grpcServer);
    const port = await new Promise<number>((resolve, reject) => grpcServer!.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    raw = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  };
  /** A Watch call: resolves with its first answer's status, or rejects with its error. */
  const watch = (request: Buffer) => {
    const call = raw!.makeServerStreamRequest("/grpc.health.v1.Health/Watch", (b: Buffer) => b, (b: Buffer) => b, request);
    const first = new Promise<string>((resolve, reject) => {
      call.once("data", (d: Buffer) => resolve(decodeHealthCheckResponse(d)));
      call.once("error", reject);
    });
    call.on("error", () => undefined);
    return { call, first };
  };

  it("refuses a Watch request over 1 KiB, whatever pads it, and keeps nothing of it", async () => {
    const health = new HealthService({ "": "SERVING" });
    await start(health);
    await expect(watch(encodeHealthCheckRequest("x".repeat(200 * 1024))).first).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: "a Watch request may have at most 1024 bytes" });
    // A short name padded with a field the server skips.
    const padded = Buffer.concat([encodeHealthCheckRequest(""), Buffer.from([0x12, 0x80, 0x10]), Buffer.alloc(2048, 0x41)]);
    await expect(watch(padded).first).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
    expect((health as unknown as { watchers: Map<string, unknown> }).watchers.size).toBe(0);
    expect(await watch(encodeHealthCheckRequest("")).first).toBe("SERVING");
  });

  it("holds at most its limit of Watch streams at once, and takes new ones as others end", async () => {
    await start(new HealthService({ "": "SERVING" }, { watches: 3 }));
    const open = [watch(encodeHealthCheckRequest("")), watch(encodeHealthCheckRequest("a")), watch(encodeHealthCheckRequest("b"))];
    expect(await Promise.all(open.map((w) => w.first))).toEqual(["SERVING", "SERVICE_UNKNOWN", "SERVICE_UNKNOWN"]);
    await expect(watch(encodeHealthCheckRequest("c")).first).rejects.toMatchObject({ code: status.RESOURCE_EXHAUSTED });
    open[1].call.cancel();
    await expect.poll(async () => watch(encodeHealthCheckRequest("c")).first.catch((e: { code: number }) => e.code), { timeout: 5_000 }).toBe("SERVICE_UNKNOWN");
  });
});

describe("checkHealth and waitForServing", () => {
  it("fail a server that takes the connection and never answers, naming its address, plaintext or TLS", { timeout: 30_000 }, async () => {
    // A process stopped or wedged: the kernel accepts the connection, nothing answers the handshake.
    const accepted = new Set<Socket>();
    const silent = createServer((socket) => accepted.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const at = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
    try {
      for (const tls of [undefined, credentials.createSsl()]) {
        await expect(checkHealth(at, "", 500, tls)).rejects.toMatchObject({ code: status.DEADLINE_EXCEEDED, message: `${at} gave no answer within 0.5 s` });
        await expect(waitForServing(at, 1_500, tls)).rejects.toThrow(`${at} did not report SERVING within 1.5 s: it gave no answer within 1 s, try after try`);
      }
    } finally {
      for (const socket of accepted) socket.destroy();
      silent.close();
    }
  });

  it("say what the server last reported when the wait's last attempt, cut short by its end, gets no answer in time", { timeout: 30_000 }, async () => {
    // A server that answers NOT_SERVING (a service waiting for its database) slowly: 600 ms a check, as under load.
    const slow = new Server();
    slow.register(
      "/grpc.health.v1.Health/Check",
      (_call: unknown, callback: (err: null, value: Buffer) => void) => void setTimeout(() => callback(null, Buffer.from([0x08, 0x02])), 600),
      (value: Buffer) => value,
      (bytes: Buffer) => bytes,
      "unary",
    );
    const port = await new Promise<number>((resolve, reject) => slow.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    const at = `127.0.0.1:${port}`;
    try {
      expect(await checkHealth(at, "", 5_000)).toBe("NOT_SERVING");
      // Tries at about 0, 0.7, 1.4 and 2.1 s: the last has 0.4 s, less than an answer takes.
      await expect(waitForServing(at, 2_500)).rejects.toThrow(`${at} did not report SERVING within 2.5 s: it reported NOT_SERVING, try after try`);
    } finally {
      slow.forceShutdown();
    }
  });
});

describe("the services' processes", () => {
  it("load no second protobuf runtime: neither grpc-health-check's implementation nor protobufjs", () => {
    const script = `
      import { createRequire } from "node:module";
      await import("./services/orders/app.ts");
      await import("./services/products/app.ts");
      const cache = Object.keys(createRequire(import.meta.url).cache);
      console.log(JSON.stringify(cache.flatMap((k) => /node_modules\\/(protobufjs|@grpc\\/proto-loader|grpc-health-check)\\//.exec(k)?.[1] ?? [])));`;
    const child = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", timeout: 60_000 });
    expect(child.stderr).toBe("");
    expect(JSON.parse(child.stdout.trim().split("\n").at(-1)!)).toEqual([]);
  });
});
