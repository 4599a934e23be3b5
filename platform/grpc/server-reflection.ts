import { type Server, type ServerDuplexStream, status } from "@grpc/grpc-js";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { DescriptorIndex } from "./descriptor-index.js";

/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha, the same messages
 * under two names), answered from compiled descriptors, so grpcurl and other
 * stock tools can list, describe and call a server's services. Every answer
 * about a file carries the file's own FileDescriptorProto bytes and those of
 * its imports not yet sent on the stream, as grpc-go does. A stream reads
 * its next request once its last answer is sent, so a caller that does not
 * read its answers has one kept for it, as it needs no token. The messages are encoded by hand: five
 * small, frozen messages.
 */
export interface ServerReflectionOptions {
  /** The descriptors served. */
  readonly index: DescriptorIndex;
  /** What list_services answers: the services this server serves. */
  readonly services: readonly string[];
}

const reflectionServices = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];
/** The paths of server reflection's methods, as addServerReflection registers them. */
export const reflectionMethodPaths: readonly string[] = reflectionServices.map((service) => `/${service}/ServerReflectionInfo`);

/**
 * Registers both reflection services on `server`. Throws when a listed
 * service has no descriptor, as a client could then list it but not describe it.
 */
export function addServerReflection(server: Server, options: ServerReflectionOptions): void {
  const { index, services } = options;
  for (const name of services) {
    if (index.fileOfSymbol(name) === undefined) throw new Error(`service ${name} is not in the descriptor sets; run \`npm run gen\``);
  }
  const identity = (value: Buffer): Buffer => value;
  for (const service of reflectionServices) {
    const definition = {
      ServerReflectionInfo: {
        path: `/${service}/ServerReflectionInfo`,
        requestStream: true,
        responseStream: true,
        requestSerialize: identity,
        requestDeserialize: identity,
        responseSerialize: identity,
        responseDeserialize: identity,
      },
    };
    server.addService(definition, {
      ServerReflectionInfo: (call: ServerDuplexStream<Buffer, Buffer>) => {
        const sent = new Set<string>();
        let ended = false;
        call.on("data", (request: Buffer) => {
          if (ended) return;
          // Every answer holds its request (original_request) and a NOT_FOUND names what was asked: a name of 120 KB went
          // back twice over to a caller without a token. The contracts' names and files are a few hundred bytes.
          if (request.length > reflectionRequestLimit) {
            ended = true;
            call.emit("error", { code: status.INVALID_ARGUMENT, details: `a ServerReflectionRequest may have at most ${reflectionRequestLimit} bytes; this one has ${request.length}` });
            return;
          }
          let response: Uint8Array;
          try {
            response = answer(decodeRequest(request), request, index, services, sent);
          } catch (err) {
            ended = true;
            call.emit("error", { code: status.INVALID_ARGUMENT, details: `invalid ServerReflectionRequest: ${(err as Error).message}` });
            return;
          }
          // One answer at a time, the next request read once this one is sent: every answer carries a file (a request of
          // 38 bytes gave 11 KB), and one stream of 20,000 requests whose answers went unread took the product service's
          // memory up by 227 MB.
          call.pause();
          call.write(Buffer.from(response.buffer, response.byteOffset, response.byteLength), () => call.resume());
        });
        call.on("end", () => {
          if (!ended) call.end();
          ended = true;
        });
        // A client that goes away mid-stream is no error of ours.
        call.on("error", () => {});
      },
    });
  }
}

/** The largest ServerReflectionRequest answered; a larger one ends its stream with INVALID_ARGUMENT. */
export const reflectionRequestLimit = 4096;

type Request =
  | { kind: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices"; host: string; value: string }
  | { kind: "fileContainingExtension"; host: string; containingType: string; extensionNumber: number }
  | { kind: "none"; host: string };

// ServerReflectionRequest: host = 1; oneof { file_by_filename = 3; file_containing_symbol = 4;
// file_containing_extension = 5 (containing_type = 1, extension_number = 2); all_extension_numbers_of_type = 6; list_services = 7 }
const stringRequests = { 3: "fileByFilename", 4: "fileContainingSymbol", 6: "allExtensionNumbersOfType", 7: "listServices" } as const;

function decodeRequest(bytes: Uint8Array): Request {
  const r = new BinaryReader(bytes);
  let host = "";
  let request: Request = { kind: "none", host };
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (field === 1) host = r.string();
    else if (field in stringRequests) request = { kind: stringRequests[field as keyof typeof stringRequests], host, value: r.string() };
    else if (field === 5) {
      const x = new BinaryReader(r.bytes());
      let containingType = "";
      let extensionNumber = 0;
      while (x.pos < x.len) {
        const [f, t] = x.tag();
        if (f === 1) containingType = x.string();
        else if (f === 2) extensionNumber = x.int32();
        else x.skip(t);
      }
      request = { kind: "fileContainingExtension", host, containingType, extensionNumber };
    } else r.skip(wireType);
  }
  return { ...request, host };
}

function answer(request: Request, raw: Uint8Array, index: DescriptorIndex, services: readonly string[], sent: Set<string>): Uint8Array {
  // ServerReflectionResponse: valid_host = 1; original_request = 2; oneof { file_descriptor_response = 4;
  // all_extension_numbers_response = 5; list_services_response = 6; error_response = 7 }
  const w = new BinaryWriter();
  if (request.host !== "") w.tag(1, WireType.LengthDelimited).string(request.host);
  w.tag(2, WireType.LengthDelimited).bytes(raw);
  const files = (fileName: string | undefined, notFound: string): BinaryWriter => {
    const found = fileName === undefined ? undefined : index.fileWithImports(fileName, sent);
    if (!found) return error(w, status.NOT_FOUND, notFound);
    w.tag(4, WireType.LengthDelimited).fork();
    for (const file of found) w.tag(1, WireType.LengthDelimited).bytes(file);
    return w.join();
  };
  switch (request.kind) {
    case "listServices":
      w.tag(6, WireType.LengthDelimited).fork();
      for (const name of services) w.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(name).join();
      w.join();
      break;
    case "fileByFilename":
      files(request.value, `file ${request.value} not found`);
      break;
    case "fileContainingSymbol":
      files(index.fileOfSymbol(request.value), `symbol ${request.value} not found`);
      break;
    case "fileContainingExtension":
      files(index.fileOfExtension(request.containingType, request.extensionNumber), `extension ${request.extensionNumber} of ${request.containingType} not found`);
      break;
    case "allExtensionNumbersOfType": {
      const numbers = index.extensionNumbersOf(request.value);
      if (!numbers) {
        error(w, status.NOT_FOUND, `message type ${request.value} not found`);
        break;
      }
      w.tag(5, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(request.value);
      if (numbers.length > 0) {
        w.tag(2, WireType.LengthDelimited).fork();
        for (const n of numbers) w.int32(n);
        w.join();
      }
      w.join();
      break;
    }
    case "none":
      throw new Error("it asks nothing (no message_request is set)");
  }
  return w.finish();
}

function error(w: BinaryWriter, code: status, message: string): BinaryWriter {
  // ErrorResponse: error_code = 1; error_message = 2
  return w.tag(7, WireType.LengthDelimited).fork().tag(1, WireType.Varint).int32(code).tag(2, WireType.LengthDelimited).string(message).join();
}
