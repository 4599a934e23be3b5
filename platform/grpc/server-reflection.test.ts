import http2 from "node:http2";
import { Client, credentials, Server, ServerCredentials, status } from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { grpcDescriptorSet } from "../../gen/ts/grpc_descriptor_set.js";
import { createDescriptorIndex } from "./descriptor-index.js";
import { addServerReflection } from "./server-reflection.js";

// ServerReflectionRequest fields, as grpcurl sends them.
type Ask =
  | { fileByFilename: string }
  | { fileContainingSymbol: string }
  | { fileContainingExtension: { containingType: string; extensionNumber: number } }
  | { allExtensionNumbersOfType: string }
  | { listServices: "" }
  | { nothing: true }
  | { raw: Uint8Array };

function encodeAsk(ask: Ask): Uint8Array {
  if ("raw" in ask) return ask.raw;
  const w = new BinaryWriter();
  w.tag(1, WireType.LengthDelimited).string("localhost");
  if ("fileByFilename" in ask) w.tag(3, WireType.LengthDelimited).string(ask.fileByFilename);
  if ("fileContainingSymbol" in ask) w.tag(4, WireType.LengthDelimited).string(ask.fileContainingSymbol);
  if ("fileContainingExtension" in ask) {
    const { containingType, extensionNumber } = ask.fileContainingExtension;
    w.tag(5, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(containingType).tag(2, WireType.Varint).int32(extensionNumber).join();
  }
  if ("allExtensionNumbersOfType" in ask) w.tag(6, WireType.LengthDelimited).string(ask.allExtensionNumbersOfType);
  if ("listServices" in ask) w.tag(7, WireType.LengthDelimited).string("");
  return w.finish();
}

interface Answer {
  validHost: string;
  originalRequest: Uint8Array;
  files: { name: string; bytes: Uint8Array }[];
  services: string[];
  extensions?: { baseTypeName: string; numbers: number[] };
  error?: { code: number; message: string };
}

const fields = (bytes: Uint8Array, each: (field: number, r: BinaryReader, wireType: WireType) => void): void => {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    const before = r.pos;
    each(field, r, wireType);
    if (r.pos === before) r.skip(wireType);
  }
};

function decodeAnswer(bytes: Uint8Array): Answer {
  const answer: Answer = { validHost: "", originalRequest: new Uint8Array(), files: [], services: [] };
  fields(bytes, (field, r) => {
    if (field === 1) answer.validHost = r.string();
    else if (field === 2) answer.originalRequest = r.bytes();
    else if (field === 4) fields(r.bytes(), (f, fr) => {
      if (f !== 1) return;
      const file = fr.bytes();
      answer.files.push({ name: fromBinary(FileDescriptorProtoSchema, file).name, bytes: file });
    });
    else if (field === 5) {
      const extensions = { baseTypeName: "", numbers: [] as number[] };
      fields(r.bytes(), (f, er, t) => {
        if (f === 1) extensions.baseTypeName = er.string();
        else if (f === 2 && t === WireType.LengthDelimited) {
          const packed = new BinaryReader(er.bytes());
          while (packed.pos < packed.len) extensions.numbers.push(packed.int32());
        }
        else if (f === 2) extensions.numbers.push(er.int32());
      });
      answer.extensions = extensions;
    } else if (field === 6) fields(r.bytes(), (f, sr) => {
      if (f === 1) fields(sr.bytes(), (g, nr) => g === 1 && answer.services.push(nr.string()));
    });
    else if (field === 7) {
      const error = { code: 0, message: "" };
      fields(r.bytes(), (f, er) => (f === 1 ? (error.code = er.int32()) : f === 2 ? (error.message = er.string()) : undefined));
      answer.error = error;
    }
  });
  return answer;
}

/** The FileDescriptorProto bytes a serialized FileDescriptorSet holds, by file name. */
function filesOf(set: Uint8Array): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  fields(set, (field, r) => {
    if (field !== 1) return;
    const bytes = r.bytes();
    out.set(fromBinary(FileDescriptorProtoSchema, bytes).name, bytes);
  });
  return out;
}

const setOf = (...files: { name: string; dependency?: string[]; messageType?: { name: string }[] }[]): Uint8Array =>
  toBinary(FileDescriptorSetSchema, create(FileDescriptorSetSchema, { file: files.map((f) => create(FileDescriptorProtoSchema, f)) }));

describe("server reflection", () => {
  const served = ["shop.products.v1.ProductService", "grpc.health.v1.Health"];
  const known = new Map([...filesOf(descriptorSet), ...filesOf(grpcDescriptorSet)]);
  let server: Server;
  let client: Client;

  /** Sends `asks` on one reflection stream and collects the answers and how the stream ended. */
  const reflect = (asks: Ask[], version: "v1" | "v1alpha" = "v1"): Promise<{ answers: Answer[]; code: number; details: string }> =>
    new Promise((resolve) => {
      const answers: Answer[] = [];
      const call = client.makeBidiStreamRequest(
        `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
        (b: Buffer) => b,
        (b: Buffer) => b,
      );
      call.on("data", (b: Buffer) => answers.push(decodeAnswer(b)));
      call.on("error", (err: { code: number; details: string }) => resolve({ answers, code: err.code, details: err.details }));
      call.on("status", (s: { code: number; details: string }) => s.code === status.OK && resolve({ answers, code: s.code, details: s.details }));
      for (const ask of asks) call.write(Buffer.from(encodeAsk(ask)));
      call.end();
    });

  beforeAll(async () => {
    server = new Server();
    addServerReflection(server, { index: createDescriptorIndex([descriptorSet, grpcDescriptorSet]), services: served });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  });
  afterAll(() => {
    client?.close();
    server?.forceShutdown();
  });

  it("lists the services it was given, the same on v1 and v1alpha", async () => {
    for (const version of ["v1", "v1alpha"] as const) {
      const { answers, code } = await reflect([{ listServices: "" }], version);
      expect(code).toBe(status.OK);
      expect(answers[0].services).toEqual(served);
      expect(answers[0].validHost).toBe("localhost");
      expect([...answers[0].originalRequest]).toEqual([...encodeAsk({ listServices: "" })]);
    }
  });

  it("answers a symbol with the file declaring it and its transitive imports, as protoc wrote them", async () => {
    const { answers } = await reflect([{ fileContainingSymbol: "shop.products.v1.ProductService" }]);
    const names = answers[0].files.map((f) => f.name);
    expect(names[0]).toBe("shop/products/v1/product_service.proto");
    expect(new Set(names)).toEqual(
      new Set([
        "shop/products/v1/product_service.proto",
        "buf/validate/validate.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/duration.proto",
        "google/protobuf/field_mask.proto",
        "google/protobuf/timestamp.proto",
        "concord/v1/options.proto",
        "shop/common/v1/money.proto",
      ]),
    );
    expect(names.length).toBe(new Set(names).size);
    for (const file of answers[0].files) expect(Buffer.from(file.bytes).equals(known.get(file.name) ?? new Uint8Array()), file.name).toBe(true);
  });

  it("sends each import once per stream, and the asked file every time", async () => {
    const { answers } = await reflect([
      { fileContainingSymbol: "shop.products.v1.Product" },
      { fileContainingSymbol: "shop.products.v1.Product" },
      { fileByFilename: "shop/products/v1/product_events.proto" },
    ]);
    expect(answers[0].files.length).toBeGreaterThan(1);
    expect(answers[1].files.map((f) => f.name)).toEqual(["shop/products/v1/product_service.proto"]);
    expect(answers[2].files.map((f) => f.name)).toEqual(["shop/products/v1/product_events.proto"]);
    // A new stream starts afresh.
    expect((await reflect([{ fileContainingSymbol: "shop.products.v1.Product" }])).answers[0].files.length).toBe(answers[0].files.length);
  });

  it("finds the file of every kind of symbol, in the contracts, their imports, health and error details", async () => {
    const symbols: [string, string][] = [
      ["shop.products.v1.ProductService.CreateProduct", "shop/products/v1/product_service.proto"],
      ["shop.common.v1.Money.amount_minor", "shop/common/v1/money.proto"],
      ["concord.v1.Storage", "concord/v1/options.proto"],
      ["concord.v1.STORAGE_FILE", "concord/v1/options.proto"],
      ["concord.v1.stream", "concord/v1/options.proto"],
      ["buf.validate.FieldRules.type", "buf/validate/validate.proto"],
      ["buf.validate.field", "buf/validate/validate.proto"],
      ["grpc.health.v1.Health", "grpc/health/v1/health.proto"],
      ["grpc.health.v1.HealthListResponse.StatusesEntry", "grpc/health/v1/health.proto"],
      ["grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"],
      ["grpc.health.v1.HealthCheckResponse.SERVING", "grpc/health/v1/health.proto"],
      ["google.rpc.BadRequest.FieldViolation", "google/rpc/error_details.proto"],
      ["google.protobuf.Timestamp", "google/protobuf/timestamp.proto"],
    ];
    const { answers } = await reflect(symbols.map(([fileContainingSymbol]) => ({ fileContainingSymbol })));
    expect(answers.map((a) => a.error)).toEqual(symbols.map(() => undefined));
    expect(answers.map((a) => a.files[0].name)).toEqual(symbols.map(([, file]) => file));
  });

  it("serves the map entry health's HealthListResponse needs", async () => {
    const { answers } = await reflect([{ fileByFilename: "grpc/health/v1/health.proto" }]);
    const health = fromBinary(FileDescriptorProtoSchema, answers[0].files[0].bytes);
    const list = health.messageType.find((m) => m.name === "HealthListResponse");
    expect(list?.nestedType.map((n) => [n.name, n.options?.mapEntry])).toEqual([["StatusesEntry", true]]);
    expect(list?.field[0].typeName).toBe(".grpc.health.v1.HealthListResponse.StatusesEntry");
  });

  it("answers extension queries", async () => {
    const { answers } = await reflect([
      { fileContainingExtension: { containingType: "google.protobuf.FileOptions", extensionNumber: 51001 } },
      { fileContainingExtension: { containingType: "google.protobuf.FieldOptions", extensionNumber: 1159 } },
      { allExtensionNumbersOfType: "google.protobuf.ServiceOptions" },
      { allExtensionNumbersOfType: "google.protobuf.MessageOptions" },
      { allExtensionNumbersOfType: "shop.common.v1.Money" },
    ]);
    expect(answers[0].files[0].name).toBe("concord/v1/options.proto");
    expect(answers[1].files[0].name).toBe("buf/validate/validate.proto");
    expect(answers[2].extensions).toEqual({ baseTypeName: "google.protobuf.ServiceOptions", numbers: [51003] });
    expect(answers[3].extensions).toEqual({ baseTypeName: "google.protobuf.MessageOptions", numbers: [1159, 51002] });
    expect(answers[4].extensions).toEqual({ baseTypeName: "shop.common.v1.Money", numbers: [] });
  });

  it("answers NOT_FOUND for unknown names and keeps the stream open", async () => {
    const { answers, code } = await reflect([
      { fileByFilename: "nope.proto" },
      { fileContainingSymbol: "shop.products.v1.Nope" },
      { fileContainingSymbol: "shop.products.v1" },
      { fileContainingExtension: { containingType: "google.protobuf.FileOptions", extensionNumber: 42 } },
      { allExtensionNumbersOfType: "shop.products.v1.ProductService" },
      { listServices: "" },
    ]);
    expect(code).toBe(status.OK);
    expect(answers.slice(0, 5).map((a) => [a.error?.code, a.files.length])).toEqual(Array(5).fill([status.NOT_FOUND, 0]));
    expect(answers[1].error?.message).toContain("shop.products.v1.Nope");
    expect(answers[5].services).toEqual(served);
  });

  it("ends the stream with INVALID_ARGUMENT for a request that asks nothing or does not decode", async () => {
    const nothing = await reflect([{ nothing: true }, { listServices: "" }]);
    expect([nothing.code, nothing.answers.length]).toEqual([status.INVALID_ARGUMENT, 0]);
    expect(nothing.details).toContain("no message_request");
    // Field 4 (file_containing_symbol) announcing 100 bytes and carrying 2.
    const truncated = await reflect([{ raw: Uint8Array.of(0x22, 100, 0x61, 0x62) }]);
    expect(truncated.code).toBe(status.INVALID_ARGUMENT);
    expect(truncated.details).toContain("invalid ServerReflectionRequest");
  });

  it("ends the stream with INVALID_ARGUMENT for a request over 4 KiB, where its name went back twice, to a caller without a token", async () => {
    const name = `shop.${"a".repeat(5_000)}`;
    const long = await reflect([{ fileContainingSymbol: name }, { listServices: "" }]);
    expect([long.code, long.answers.length]).toEqual([status.INVALID_ARGUMENT, 0]);
    expect(long.details).toBe(`a ServerReflectionRequest may have at most 4096 bytes; this one has ${encodeAsk({ fileContainingSymbol: name }).length}`);
    // The longest names the contracts have are far below it.
    expect((await reflect([{ fileContainingSymbol: "shop.products.v1.ProductService.AdjustStock" }])).code).toBe(status.OK);
  });

  it("reads a stream's next request only while its caller takes the answers, and answers every request once it reads again", async () => {
    let asked = 0;
    const index = createDescriptorIndex([descriptorSet, grpcDescriptorSet]);
    const counting = { ...index, fileOfSymbol: (name: string) => (asked++, index.fileOfSymbol(name)) };
    const own = new Server();
    addServerReflection(own, { index: counting, services: served });
    // Those it looked up to check the services it lists.
    asked = 0;
    const port = await new Promise<number>((resolve, reject) => own.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const stream = session.request({ ":method": "POST", ":path": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "content-type": "application/grpc", te: "trailers" });
      stream.pause();
      const ask = encodeAsk({ fileContainingSymbol: "shop.products.v1.ProductService" });
      const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, ask.length]), ask]);
      const requests = 1_000;
      stream.end(Buffer.concat(Array.from({ length: requests }, () => frame)));
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      // Answered while unread: about 11 KB each, every one of them before.
      console.log(`answered while unread: ${asked} of ${requests}`);
      expect(asked).toBeGreaterThan(0);
      expect(asked).toBeLessThan(20);
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => stream.on("trailers", resolve));
      stream.resume();
      expect((await trailers)["grpc-status"]).toBe("0");
      const received = Buffer.concat(chunks);
      let answers = 0;
      for (let at = 0; at < received.length; at += 5 + received.readUInt32BE(at + 1)) answers++;
      expect([answers, asked]).toEqual([requests, requests]);
    } finally {
      session.destroy();
      own.forceShutdown();
    }
  });

  it("refuses to list a service it has no descriptor of", () => {
    expect(() => addServerReflection(new Server(), { index: createDescriptorIndex([descriptorSet]), services: ["grpc.health.v1.Health"] })).toThrow(/grpc.health.v1.Health is not in the descriptor sets/);
  });
});

describe("createDescriptorIndex", () => {
  it("keeps a file that two sets hold once", () => {
    const a = setOf({ name: "a.proto", messageType: [{ name: "A" }] });
    const index = createDescriptorIndex([a, a]);
    expect(index.fileNames).toEqual(["a.proto"]);
    expect(index.fileOfSymbol("A")).toBe("a.proto");
  });

  it("refuses two different files of one name, a symbol declared twice, and an import no set holds", () => {
    expect(() => createDescriptorIndex([setOf({ name: "a.proto", messageType: [{ name: "A" }] }), setOf({ name: "a.proto" })])).toThrow(/two different files named a.proto/);
    expect(() => createDescriptorIndex([setOf({ name: "a.proto", messageType: [{ name: "A" }] }, { name: "b.proto", messageType: [{ name: "A" }] })])).toThrow(/A is declared by both a.proto and b.proto/);
    expect(() => createDescriptorIndex([setOf({ name: "a.proto", dependency: ["missing.proto"] })])).toThrow(/a.proto imports missing.proto, which no descriptor set holds/);
  });
});
