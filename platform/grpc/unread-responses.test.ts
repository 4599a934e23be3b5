import { type ClientHttp2Session, type ClientHttp2Stream, connect as connectHttp2, constants as http2Constants } from "node:http2";
import { afterEach, describe, expect, it } from "vitest";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { GetProductRequest, ListProductsRequest, ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { productServiceWith, sampleProduct } from "../../test/support/get-product-only.js";
import { Code } from "../errors/index.js";
import { createLogger } from "../log/index.js";
import type { ServiceImpl } from "./bind-service.js";
import { createClient } from "./client.js";
import { createGrpcServer, type GrpcServer } from "./server.js";
import type { UnreadResponseOptions } from "./unread-responses.js";

const logger = createLogger({ service: "test", level: "silent" });
const productId = sampleProduct.id;

/**
 * The contracts as this file's servers read them: the shop's, with its
 * Product cut to the fields these tests know. What a server expects of a
 * list call's answer follows from the bound the contract puts on its items;
 * a field added to Product would raise that bound, or lift it with no
 * max_len, and change what these tests see.
 */
const contracts = ((): Uint8Array => {
  const known = ["id", "name", "description", "price", "stock", "version", "create_time", "update_time", "stock_version"];
  const set = fromBinary(FileDescriptorSetSchema, descriptorSet);
  const products = set.file.filter((file) => file.package === "shop.products.v1").flatMap((file) => file.messageType);
  for (const message of products) if (message.name === "Product") message.field = message.field.filter((field) => known.includes(field.name));
  return toBinary(FileDescriptorSetSchema, set);
})();

/**
 * A product service whose ListProducts answers with one product of about
 * `bytes` of description, counting its runs (a list, as the contract puts
 * no bound on its answers' size).
 */
function bigAnswers(bytes: number, runs = { count: 0 }, page?: { delayMs: number }): ServiceImpl<typeof ProductServiceService> {
  const product = { ...sampleProduct, description: "d".repeat(bytes) };
  // With `page`: page_size products (1 for none), after delayMs, as a handler that reads a database answers;
  // with the page token "small", products of a one-character description.
  const small = { ...product, description: "d" };
  const listProducts = async (req: { pageSize: number; pageToken: string }) => {
    runs.count++;
    if (!page) return { products: [product], nextPageToken: "" };
    await new Promise((resolve) => setTimeout(resolve, page.delayMs));
    return { products: Array.from({ length: req.pageSize || 1 }, () => (req.pageToken === "small" ? small : product)), nextPageToken: "" };
  };
  // A small answer (its contract bounds it at about 9 KB), not counted in `runs`.
  const getProduct = async () => ({ product: { ...product, description: "small" } });
  return productServiceWith({ getProduct, listProducts });
}

/** A raw HTTP/2 ListProducts call whose caller reads nothing of the answer (it sends no WINDOW_UPDATE). */
interface Unread {
  readonly stream: ClientHttp2Stream;
  /** The RST_STREAM code it closed with (0 when it ended normally). */
  readonly closed: Promise<number>;
  /** The bytes of the answer it received. */
  received(): number;
  /** Its grpc-status, once headers or trailers carry one. */
  status(): string | undefined;
}

/** `after`: bytes sent after the request's own (a decoder stops at a 0 tag or an end-group tag, and takes what came before). */
function unreadCall(session: ClientHttp2Session, pageSize = 1, after: readonly number[] = []): Unread {
  const body = Buffer.concat([ListProductsRequest.encode({ pageSize, pageToken: "" }).finish(), Buffer.from(after)]);
  const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, body.length]), body]);
  const stream = session.request({ ":method": "POST", ":path": ProductServiceService.listProducts.path, "content-type": "application/grpc", te: "trailers", "grpc-timeout": "60S" });
  stream.on("error", () => undefined);
  let received = 0;
  stream.on("data", (chunk: Buffer) => (received += chunk.length));
  let status: string | undefined;
  const heard = (headers: Record<string, unknown>) => (status ??= headers["grpc-status"] as string | undefined);
  stream.on("response", heard);
  stream.on("trailers", heard);
  stream.end(frame);
  stream.pause();
  return { stream, closed: new Promise((resolve) => stream.once("close", () => resolve(stream.rstCode ?? 0))), received: () => received, status: () => status };
}

/** One ListProducts call read in full by a grpc-js client: the server then expects answers of its size. */
async function readOneAnswer(address: string): Promise<void> {
  const client = createClient(ProductServiceService, { address });
  try {
    await client.listProducts({ pageSize: 1, pageToken: "" });
  } finally {
    client.close();
  }
}

/** Reads `call`'s answer about 64 KiB at a time, `everyMs` apart; clearInterval of the result stops it. */
function readSlowly(call: Unread, everyMs = 150): NodeJS.Timeout {
  let turn = 0;
  call.stream.on("data", (chunk: Buffer) => {
    turn += chunk.length;
    if (turn >= 64 * 1024) call.stream.pause();
  });
  return setInterval(() => {
    turn = 0;
    call.stream.resume();
  }, everyMs);
}

describe("answers their callers do not read", () => {
  let server: GrpcServer | undefined;
  let session: ClientHttp2Session | undefined;
  afterEach(async () => {
    session?.destroy();
    session = undefined;
    await server?.shutdown();
    server = undefined;
  });

  async function serve(answerBytes: number, unreadResponses: UnreadResponseOptions, runs = { count: 0 }, page?: { delayMs: number }): Promise<string> {
    server = createGrpcServer({ descriptorSet: contracts, logger, unreadResponses, shutdownTimeoutMs: 1_000 });
    server.addService(ProductServiceService, bigAnswers(answerBytes, runs, page));
    const { port } = await server.start("127.0.0.1:0");
    session = connectHttp2(`http://127.0.0.1:${port}`);
    return `127.0.0.1:${port}`;
  }

  it("cancels the calls of a connection that sent none of its answers for stallMs (RST_STREAM CANCEL), while a caller that reads is answered", async () => {
    // Room for all four answers on the connection: here every call runs, and waits to be cancelled.
    const address = await serve(2 * 1024 * 1024, { stallMs: 600, maxBytesPerConnection: 64 * 1024 * 1024, checkMs: 50 });
    const unread = Array.from({ length: 4 }, () => unreadCall(session!));
    const started = Date.now();
    // A gRPC client that reads its 2 MiB answer meanwhile gets all of it.
    const client = createClient(ProductServiceService, { address });
    try {
      const answer = await client.listProducts({ pageSize: 1, pageToken: "" });
      expect(answer.products[0]?.description).toHaveLength(2 * 1024 * 1024);
    } finally {
      client.close();
    }
    const codes = await Promise.all(unread.map((call) => call.closed));
    expect(codes).toEqual(codes.map(() => http2Constants.NGHTTP2_CANCEL));
    expect(server!.unreadAnswers.cancelled).toBe(4);
    expect(Date.now() - started).toBeGreaterThanOrEqual(600);
    // Nothing past the first flow-control window reached them.
    for (const call of unread) expect(call.received()).toBeLessThanOrEqual(65_535);
  });

  it("refuses a call before it runs on a connection that takes none of its answers and holds more than maxBytesPerConnection of them; other connections are served", async () => {
    const runs = { count: 0 };
    const address = await serve(1024 * 1024, { stallMs: 60_000, maxBytesPerConnection: 2.5 * 1024 * 1024, checkMs: 50 }, runs);
    const unread: Unread[] = [];
    // Far enough apart for the connection to be found sending nothing at four looks in a row.
    for (let i = 0; i < 5; i++) {
      unread.push(unreadCall(session!));
      await new Promise((r) => setTimeout(r, 300));
    }
    // Two answers of just over 1 MiB wait: the third call and those after it find the connection stalled with more
    // than 2.5 MiB of them and its own, and do not run.
    expect(runs.count).toBe(2);
    expect(await Promise.all(unread.slice(2).map((call) => call.closed))).toEqual([0, 0, 0]);
    expect(unread.slice(2).map((call) => call.status())).toEqual(["8", "8", "8"]);
    expect(unread.slice(0, 2).map((call) => call.stream.closed)).toEqual([false, false]);
    const client = createClient(ProductServiceService, { address });
    try {
      expect((await client.listProducts({ pageSize: 1, pageToken: "" })).products[0]?.description).toHaveLength(1024 * 1024);
    } finally {
      client.close();
    }
    expect(runs.count).toBe(3);
  });

  it("cancels the oldest calls of stalled connections while their answers pass maxBytes, and the rest are answered in full once read", async () => {
    await serve(1024 * 1024, { stallMs: 60_000, maxBytes: 3.5 * 1024 * 1024, checkMs: 50 });
    const unread: Unread[] = [];
    // One at a time, so that which waited longest is clear: six answers of just over 1 MiB, nearly all of each held
    // back (the connection's first window of 64 KiB went to the first).
    for (let i = 0; i < 6; i++) {
      unread.push(unreadCall(session!));
      await new Promise((r) => setTimeout(r, 120));
    }
    const reset = await Promise.all(unread.slice(0, 3).map((call) => call.closed));
    expect(reset).toEqual([http2Constants.NGHTTP2_CANCEL, http2Constants.NGHTTP2_CANCEL, http2Constants.NGHTTP2_CANCEL]);
    // The three left hold 3 MiB, under the bound: they stay, and their callers get everything once they read.
    await new Promise((r) => setTimeout(r, 300));
    for (const call of unread.slice(3)) expect(call.stream.closed).toBe(false);
    for (const call of unread.slice(3)) call.stream.resume();
    expect(await Promise.all(unread.slice(3).map((call) => call.closed))).toEqual([0, 0, 0]);
    for (const call of unread.slice(3)) expect(call.received()).toBeGreaterThan(1024 * 1024);
  });

  it("leaves alone a caller that reads slowly, however much longer than stallMs its answer takes", async () => {
    await serve(1024 * 1024, { stallMs: 400, checkMs: 50 });
    const slow = unreadCall(session!);
    // About 64 KiB at a time, a pause of 150 ms between: over 2 s for the whole answer, never 400 ms without reading.
    const reader = readSlowly(slow);
    const started = Date.now();
    try {
      expect(await slow.closed).toBe(0);
    } finally {
      clearInterval(reader);
    }
    expect(slow.received()).toBeGreaterThan(1024 * 1024);
    expect(Date.now() - started).toBeGreaterThan(1_000);
  });

  it("neither refuses nor cancels callers that read at full speed, however many large answers they ask for at once", async () => {
    const runs = { count: 0 };
    const address = await serve(1024 * 1024, { stallMs: 1_000, maxBytes: 4 * 1024 * 1024, maxBytesPerConnection: 2 * 1024 * 1024, checkMs: 50 }, runs);
    const client = createClient(ProductServiceService, { address });
    try {
      for (let round = 0; round < 3; round++) {
        const answers = await Promise.all(Array.from({ length: 40 }, () => client.listProducts({ pageSize: 1, pageToken: "" })));
        expect(answers.map((a) => a.products[0]?.description.length)).toEqual(answers.map(() => 1024 * 1024));
        await new Promise((r) => setTimeout(r, 60 * round));
      }
    } finally {
      client.close();
    }
    expect(runs.count).toBe(120);
  });

  it("lets a burst from a caller that reads steadily wait its turn, however long, and answers every call", async () => {
    const runs = { count: 0 };
    const address = await serve(256 * 1024, { stallMs: 60_000, maxBytesPerConnection: 512 * 1024, checkMs: 50 }, runs);
    // One answer read first: the server now expects answers of this size from ListProducts.
    await readOneAnswer(address);
    // Sixteen answers of 256 KiB, read 64 KiB a stream every 50 ms, two streams at a time: about 2 s in all, several
    // times the 8 looks after which a waiting call ran past the bound (to twice it) or was refused, as for a caller that
    // pings and reads nothing.
    const calls = Array.from({ length: 16 }, () => unreadCall(session!));
    const timers = calls.map((call) => readSlowly(call, 50));
    try {
      expect(await Promise.all(calls.map((call) => call.closed))).toEqual(calls.map(() => 0));
    } finally {
      for (const timer of timers) clearInterval(timer);
    }
    expect(calls.map((call) => call.status())).toEqual(calls.map(() => "0"));
    for (const call of calls) expect(call.received()).toBeGreaterThan(256 * 1024);
    expect(runs.count).toBe(1 + 16);
  });

  it("holds back a burst of calls on one connection at about maxBytesPerConnection of answers, and refuses the rest before they run once its caller is seen to take none", async () => {
    const runs = { count: 0 };
    const address = await serve(1024 * 1024, { stallMs: 60_000, maxBytes: 1024 * 1024 * 1024, maxBytesPerConnection: 4.5 * 1024 * 1024, checkMs: 50 }, runs);
    // One answer read first: the server now expects answers of this size from ListProducts.
    await readOneAnswer(address);
    // Forty calls sent at once on one connection whose caller reads nothing: four answers of just over 1 MiB fit in 4.5 MiB.
    const unread = Array.from({ length: 40 }, () => unreadCall(session!));
    const refused = await Promise.all(unread.slice(4).map((call) => call.closed));
    expect(refused).toEqual(refused.map(() => 0));
    expect(unread.slice(4).map((call) => call.status())).toEqual(refused.map(() => "8"));
    expect(runs.count).toBe(1 + 4);
    expect(unread.slice(0, 4).map((call) => call.stream.closed)).toEqual([false, false, false, false]);
    // Once read, the four that ran are answered in full.
    for (const call of unread.slice(0, 4)) call.stream.resume();
    expect(await Promise.all(unread.slice(0, 4).map((call) => call.closed))).toEqual([0, 0, 0, 0]);
    for (const call of unread.slice(0, 4)) expect(call.received()).toBeGreaterThan(1024 * 1024);
  });

  it("expects a list call's answer from its page_size before the method has answered: a burst for large pages at the start is held back", async () => {
    const runs = { count: 0 };
    // Products of 2,000 characters (the contract's most), 500 to a page: about 1 MiB, listPage's most, each.
    await serve(2_000, { stallMs: 60_000, maxBytesPerConnection: 4 * 1024 * 1024, checkMs: 1_000 }, runs, { delayMs: 100 });
    const unread = Array.from({ length: 40 }, () => unreadCall(session!, 500));
    await new Promise((resolve) => setTimeout(resolve, 600));
    // Four pages of about 1 MiB fit in 4 MiB; expected at 64 KiB each, as a method with no answers yet was, all 40 ran.
    expect(runs.count).toBeLessThanOrEqual(4);
    expect(runs.count).toBeGreaterThanOrEqual(3);
    for (const call of unread) call.stream.resume();
    expect(await Promise.all(unread.map((call) => call.closed))).toEqual(unread.map(() => 0));
    expect(runs.count).toBe(40);
  });

  it("runs no list call whose request has bytes after its page_size that the decoder would stop at or skip: the wire format's check refuses them first", async () => {
    // After page_size 500: a 0 tag, an end-group tag, field 0 (which the decoder skips), an end group ending another field's group.
    // Decoded, each asked for 500 products of about 2 KB while its bytes might have read as another page_size; refused
    // as the wire format does not allow them (platform/contracts/wire-shape.ts), none runs, and none is answered a page.
    for (const after of [[0], [0x0c], [0x02, 0x00], [0x2b, 0x34]]) {
      const runs = { count: 0 };
      await serve(2_000, { stallMs: 60_000, maxBytesPerConnection: 4 * 1024 * 1024, checkMs: 1_000 }, runs, { delayMs: 100 });
      const unread = Array.from({ length: 40 }, () => unreadCall(session!, 500, after));
      for (const call of unread) call.stream.resume();
      expect(await Promise.all(unread.map((call) => call.closed))).toEqual(unread.map(() => 0));
      expect(unread.map((call) => call.status()), `page_size 500, then ${JSON.stringify(after)}`).toEqual(unread.map(() => String(Code.INVALID_ARGUMENT)));
      expect(runs.count).toBe(0);
      for (const call of unread) expect(call.received()).toBeLessThan(1024);
      session?.destroy();
      await server?.shutdown();
      server = undefined;
    }
  });

  it("expects a list call's items as large as the contract allows, whatever items its method answered with before", async () => {
    const runs = { count: 0 };
    const address = await serve(2_000, { stallMs: 60_000, maxBytesPerConnection: 4 * 1024 * 1024, checkMs: 1_000 }, runs, { delayMs: 100 });
    const client = createClient(ProductServiceService, { address });
    try {
      expect((await client.listProducts({ pageSize: 50, pageToken: "small" })).products).toHaveLength(50);
    } finally {
      client.close();
    }
    // A page of small products says nothing of the next: pages of 500 products of 2,000 characters (a page token may
    // lead to them) are expected at 1 MiB each, and four fit in 4 MiB. Expected from the small ones, all 40 ran.
    const unread = Array.from({ length: 40 }, () => unreadCall(session!, 500));
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(runs.count - 1).toBeLessThanOrEqual(4);
    for (const call of unread) call.stream.resume();
    expect(await Promise.all(unread.map((call) => call.closed))).toEqual(unread.map(() => 0));
  });

  it("expects a list call's answer from its page_size: small pages run at once after a large one", async () => {
    const runs = { count: 0 };
    const address = await serve(2_000, { stallMs: 60_000, maxBytesPerConnection: 2 * 1024 * 1024, checkMs: 1_000 }, runs, { delayMs: 100 });
    const client = createClient(ProductServiceService, { address });
    try {
      expect((await client.listProducts({ pageSize: 500, pageToken: "" })).products).toHaveLength(500);
    } finally {
      client.close();
    }
    // Pages of five products (at most 46 KB by the contract) after one of 500 (about 1 MiB): all fit in 2 MiB, and
    // run at once. Expected at the method's largest answer, two ran at a time (each takes 100 ms): all 40 only after
    // 2 s, and 11 within the second given here when that was tried.
    const unread = Array.from({ length: 40 }, () => unreadCall(session!, 5));
    await expect.poll(() => runs.count, { timeout: 1_000, interval: 20 }).toBe(1 + 40);
    for (const call of unread) call.stream.resume();
    expect(await Promise.all(unread.map((call) => call.closed))).toEqual(unread.map(() => 0));
  });

  it("runs a burst from a caller that reads as fast as it takes its answers, a few at a time, and answers every call", async () => {
    const runs = { count: 0 };
    const address = await serve(1024 * 1024, { stallMs: 60_000, maxBytesPerConnection: 3 * 1024 * 1024, checkMs: 50 }, runs);
    const client = createClient(ProductServiceService, { address });
    try {
      await client.listProducts({ pageSize: 1, pageToken: "" });
      // How many calls had run whose answers this caller had not yet got in full, at worst: 30 without the bound.
      let answered = 0;
      let ahead = 0;
      const answers = await Promise.all(
        Array.from({ length: 30 }, async () => {
          const answer = await client.listProducts({ pageSize: 1, pageToken: "" });
          answered++;
          ahead = Math.max(ahead, runs.count - 1 - answered);
          return answer;
        }),
      );
      expect(answers.map((a) => a.products[0]?.description.length)).toEqual(answers.map(() => 1024 * 1024));
      expect(ahead).toBeLessThanOrEqual(3);
    } finally {
      client.close();
    }
    expect(runs.count).toBe(31);
  });

  it("runs a call that waited 8 looks for room on a connection that still sends answers (a proxy's, carrying a paused caller) without waiting for the room", async () => {
    const runs = { count: 0 };
    const address = await serve(1024 * 1024, { stallMs: 60_000, maxBytesPerConnection: 2.5 * 1024 * 1024, checkMs: 50 }, runs);
    await readOneAnswer(address);
    const paused = unreadCall(session!);
    // A caller reading about 64 KiB every 150 ms: its answer takes over two seconds, and the connection keeps sending.
    const slow = unreadCall(session!);
    const reader = readSlowly(slow);
    try {
      await expect.poll(() => runs.count).toBe(3);
      // Two answers of 1 MiB held: a third does not fit in 2.5 MiB, and waits 8 looks of 50 ms before it runs.
      const third = unreadCall(session!);
      await new Promise((r) => setTimeout(r, 150));
      expect(runs.count).toBe(3);
      await expect.poll(() => runs.count, { timeout: 1_500 }).toBe(4);
      expect(slow.stream.closed).toBe(false);
      expect(third.stream.closed).toBe(false);
      expect(paused.stream.closed).toBe(false);
      expect(await slow.closed).toBe(0);
    } finally {
      clearInterval(reader);
    }
  });

  it("refuses, after 8 looks, the waiting calls of a connection that reads none of its answers but pings, once it would hold twice maxBytesPerConnection", async () => {
    const runs = { count: 0 };
    const address = await serve(1024 * 1024, { stallMs: 60_000, maxBytesPerConnection: 2.5 * 1024 * 1024, checkMs: 50 }, runs);
    await readOneAnswer(address);
    // Its socket writes a PING's answer at every look: the connection is never found stalled.
    const pinger = setInterval(() => session!.ping(() => undefined), 20);
    try {
      const unread = Array.from({ length: 20 }, () => unreadCall(session!));
      // Two answers of just over 1 MiB fit in 2.5 MiB; after 8 looks two more run, within 5 MiB, and the rest are refused.
      const refused = await Promise.all(unread.slice(4).map((call) => call.closed));
      expect(refused).toEqual(refused.map(() => 0));
      expect(unread.slice(4).map((call) => call.status())).toEqual(refused.map(() => "8"));
      expect(runs.count).toBe(1 + 4);
      expect(unread.slice(0, 4).map((call) => call.stream.closed)).toEqual([false, false, false, false]);
      expect(server!.unreadAnswers.cancelled).toBe(0);
    } finally {
      clearInterval(pinger);
    }
  });

  it("answers a small call that fits at once, though a large one waits before it on the same connection (a proxy's, carrying a paused caller)", async () => {
    const runs = { count: 0 };
    const address = await serve(3 * 1024 * 1024, { stallMs: 60_000, checkMs: 50 }, runs);
    await readOneAnswer(address);
    // Two answers of 3 MiB nobody reads run; a third does not fit in 8 MiB, and waits.
    const paused = Array.from({ length: 3 }, () => unreadCall(session!));
    await expect.poll(() => runs.count).toBe(3);
    // Another caller on the connection asks for a small answer, and reads it.
    const started = Date.now();
    const body = GetProductRequest.encode({ id: productId }).finish();
    const stream = session!.request({ ":method": "POST", ":path": ProductServiceService.getProduct.path, "content-type": "application/grpc", te: "trailers" });
    let status: string | undefined;
    stream.on("response", (headers) => (status ??= headers["grpc-status"] as string | undefined));
    stream.on("trailers", (headers) => (status ??= headers["grpc-status"] as string | undefined));
    stream.on("data", () => undefined);
    stream.end(Buffer.concat([Buffer.from([0, 0, 0, 0, body.length]), body]));
    await new Promise((resolve) => stream.once("close", resolve));
    // Behind the waiting call it would have sent nothing, and been refused with the rest once the connection was found stalled.
    expect(status).toBe("0");
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(paused.slice(0, 2).map((call) => call.stream.closed)).toEqual([false, false]);
  });

  it("refuses options that are not whole numbers from 1", () => {
    expect(() => createGrpcServer({ descriptorSet, logger, unreadResponses: { stallMs: 0 } })).toThrow(/stallMs/);
    expect(() => createGrpcServer({ descriptorSet, logger, unreadResponses: { maxBytes: 1.5 } })).toThrow(/maxBytes/);
    expect(() => createGrpcServer({ descriptorSet, logger, unreadResponses: { maxBytesPerConnection: -1 } })).toThrow(/maxBytesPerConnection/);
    expect(() => createGrpcServer({ descriptorSet, logger, unreadResponses: { timeout: 5 } as never })).toThrow(/unknown option timeout/);
  });
});
