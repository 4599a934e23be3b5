import { connect as connectHttp2 } from "node:http2";
import { afterEach, describe, expect, it, vi } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { Code, StatusError } from "../errors/index.js";
import { createLogger } from "../log/index.js";
import { createAdmission } from "./admission.js";
import { createClient } from "./client.js";
import { checkHealth } from "./health-client.js";
import { createGrpcServer, streamHeadroom, type GrpcServer } from "./server.js";
import { productServiceWith, sampleProduct as product } from "../../test/support/get-product-only.js";

const logger = createLogger({ service: "test", level: "silent" });

describe("admission control", () => {
  it("gives places in turn, refuses past the queue's bound, and drops a waiter whose deadline passed", async () => {
    const admission = createAdmission({ maxInFlight: 1, maxQueued: 1, maxQueueMs: 10_000 });
    const first = admission.enter(undefined) as () => void;
    expect(typeof first).toBe("function");
    const second = admission.enter(new Date(Date.now() + 60_000));
    expect(() => admission.enter(undefined)).toThrow(expect.objectContaining({ code: Code.RESOURCE_EXHAUSTED }));
    expect(() => admission.enter(new Date(Date.now() - 1))).toThrow(expect.objectContaining({ code: Code.DEADLINE_EXCEEDED }));
    first();
    first(); // a second release gives nothing back
    const release = await second;
    expect(admission.inFlight).toBe(1);
    const late = admission.enter(new Date(Date.now() + 30));
    await expect(late).rejects.toMatchObject({ code: Code.DEADLINE_EXCEEDED });
    release();
    expect(admission.inFlight).toBe(0);
    expect(() => createAdmission({ maxInFlight: 0 })).toThrow(/maxInFlight must be a whole number from 1/);
  });

  it("refuses a call whose deadline had passed when it arrived saying so, not that it waited for its turn", async () => {
    const admission = createAdmission({ maxInFlight: 1, maxQueued: 1, maxQueueMs: 10_000 });
    const arrivedLate = /deadline had already passed when it arrived; nothing was done/;
    // A free server, as for a grpc-timeout of 0S or 1n: the call never waited.
    expect(() => admission.enter(new Date(Date.now() - 1))).toThrow(expect.objectContaining({ code: Code.DEADLINE_EXCEEDED, message: expect.stringMatching(arrivedLate) }));
    const release = admission.enter(undefined) as () => void;
    expect(() => admission.enter(new Date(Date.now()))).toThrow(expect.objectContaining({ code: Code.DEADLINE_EXCEEDED, message: expect.stringMatching(arrivedLate) }));
    // One that did wait and ran out of time there says that instead.
    await expect(admission.enter(new Date(Date.now() + 20))).rejects.toMatchObject({ code: Code.DEADLINE_EXCEEDED, message: expect.stringMatching(/while the call waited for its turn/) });
    release();
    expect(admission.inFlight).toBe(0);
  });
});

describe("admission's timer", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("refuses a waiter whose deadline came first with DEADLINE_EXCEEDED even when the timer fires before the clock reaches the deadline", async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const admission = createAdmission({ maxInFlight: 1, maxQueued: 1, maxQueueMs: 10_000 });
    const release = admission.enter(undefined) as () => void;
    const late = admission.enter(new Date(Date.now() + 30));
    const settled = expect(late).rejects.toMatchObject({ code: Code.DEADLINE_EXCEEDED });
    // Timers and Date.now() are separate clocks: the timer may fire a millisecond early.
    vi.setSystemTime(Date.now() - 2);
    await vi.advanceTimersByTimeAsync(30);
    await settled;
    const full = admission.enter(new Date(Date.now() + 60_000));
    const refusedFull = expect(full).rejects.toMatchObject({ code: Code.RESOURCE_EXHAUSTED });
    await vi.advanceTimersByTimeAsync(10_000);
    await refusedFull;
    // A timer set for the queue's limit that fires only after the deadline (a stalled event loop): the deadline passed.
    const stalled = admission.enter(new Date(Date.now() + 20_000));
    const refusedLate = expect(stalled).rejects.toMatchObject({ code: Code.DEADLINE_EXCEEDED });
    vi.setSystemTime(Date.now() + 30_000);
    await vi.advanceTimersByTimeAsync(10_000);
    await refusedLate;
    release();
    expect(admission.inFlight).toBe(0);
  });
});

describe("a server at capacity", () => {
  let server: GrpcServer | undefined;
  afterEach(async () => {
    await server?.shutdown();
    server = undefined;
  });

  it("lets a client open no more streams on one connection than admission holds calls, plus headroom (a flood stays in the client)", async () => {
    server = createGrpcServer({ descriptorSet, logger, admission: { maxInFlight: 8, maxQueued: 24 } });
    const { port } = await server.start("127.0.0.1:0");
    const session = connectHttp2(`http://127.0.0.1:${port}`);
    try {
      const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve, reject) => {
        session.once("remoteSettings", resolve);
        session.once("error", reject);
      });
      expect(settings.maxConcurrentStreams).toBe(8 + 24 + streamHeadroom);
    } finally {
      session.destroy();
    }
  });

  it("refuses the excess at once with RESOURCE_EXHAUSTED and runs no handler for it or for a caller gone while it waited", async () => {
    let running = 0;
    let ran = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    server = createGrpcServer({ descriptorSet, logger, admission: { maxInFlight: 2, maxQueued: 2, maxQueueMs: 5_000 } });
    server.addService(
      ProductServiceService,
      productServiceWith({
        async getProduct() {
          running++;
          ran++;
          await gate;
          running--;
          return { product };
        },
      }),
    );
    const { port } = await server.start("127.0.0.1:0");
    const address = `127.0.0.1:${port}`;
    const client = createClient(ProductServiceService, { address, maxAttempts: 1 });
    const held = [client.getProduct({ id: product.id }), client.getProduct({ id: product.id })];
    await expect.poll(() => running).toBe(2);
    // Two wait: one until the gate opens, one whose caller gives up first.
    const waiting = client.getProduct({ id: product.id }, { timeoutMs: 30_000 });
    // (Room for a busy machine: both must be waiting when the next call comes, and the impatient one still there.)
    const impatient = client.getProduct({ id: product.id }, { timeoutMs: 3_000 }).catch((e: StatusError) => e);
    await new Promise((r) => setTimeout(r, 500));
    const refused = await client.getProduct({ id: product.id }).catch((e: StatusError) => e);
    expect(refused).toBeInstanceOf(StatusError);
    expect((refused as StatusError).code).toBe(Code.RESOURCE_EXHAUSTED);
    expect((refused as StatusError).message).toMatch(/at capacity \(2 calls running, 2 waiting\); nothing was done/);
    expect(((await impatient) as StatusError).code).toBe(Code.DEADLINE_EXCEEDED);
    // Health is answered whatever the load.
    expect(await checkHealth(address)).toBe("SERVING");
    release();
    await Promise.all([...held, waiting]);
    expect(ran).toBe(3);
    client.close();
  });
});
