import { type Server, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData, status as grpcStatus } from "@grpc/grpc-js";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";

/**
 * grpc.health.v1 (the standard health protocol that Kubernetes probes,
 * grpcurl and grpc_health_probe speak): Check, Watch and List, with the
 * three messages it needs encoded here. Its contract is
 * grpc/health/v1/health.proto from the grpc-health-check package, which
 * reflection serves (tools/contracts/grpc-descriptors.ts); that package's
 * own implementation is not loaded, as it parses the .proto at start-up
 * with a second protobuf runtime (protobufjs, about 1.3 MB of heap in
 * every service).
 */

export type ServingStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";
const statusNames: readonly ServingStatus[] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

const servicePath = "/grpc.health.v1.Health";
/** Services List reports at most, as grpc-health-check did; more is RESOURCE_EXHAUSTED. */
const listLimit = 100;
/**
 * What one Check or Watch may send, as callers need no token: a request (its
 * service name) of at most this many bytes. A Watch keeps it while its stream
 * is open; a Check for a service it does not know names it in its answer...
 */
export const watchRequestLimit = 1024;
/** ...and at most this many Watch streams open at once, over every connection. */
export const watchLimit = 1024;

const identity = (value: Buffer): Buffer => value;
const method = (name: string, responseStream: boolean) => ({
  path: `${servicePath}/${name}`,
  requestStream: false,
  responseStream,
  requestSerialize: identity,
  requestDeserialize: identity,
  responseSerialize: identity,
  responseDeserialize: identity,
});
/** Bytes in and out: requests are decoded in the handlers, so one that does not decode is INVALID_ARGUMENT, not INTERNAL. */
const definition = { Check: method("Check", false), Watch: method("Watch", true), List: method("List", false) };
/** The paths of grpc.health.v1's methods, as a server registers them. */
export const healthMethodPaths: readonly string[] = Object.values(definition).map((m) => m.path);

/**
 * Field 1 of a message that has only that field (the last value when it
 * repeats, `absent` when it is not there), read with `read` when it has
 * `wireType`; other fields are skipped, as protobuf says. Throws on bytes
 * that are not a message.
 */
function readField1<T>(bytes: Uint8Array, wireType: WireType, read: (reader: BinaryReader) => T, absent: T): T {
  const reader = new BinaryReader(bytes);
  let value = absent;
  while (reader.pos < reader.len) {
    const [field, type] = reader.tag();
    if (field === 1 && type === wireType) value = read(reader);
    else reader.skip(type, field);
  }
  return value;
}

/** HealthCheckRequest: `string service = 1`. */
export function decodeHealthCheckRequest(bytes: Uint8Array): string {
  return readField1(bytes, WireType.LengthDelimited, (r) => r.string(), "");
}

export function encodeHealthCheckRequest(service: string): Buffer {
  const writer = new BinaryWriter();
  if (service !== "") writer.uint32((1 << 3) | WireType.LengthDelimited).string(service);
  return Buffer.from(writer.finish());
}

/** HealthCheckResponse: `ServingStatus status = 1`. */
function writeStatus(writer: BinaryWriter, status: ServingStatus): BinaryWriter {
  const n = statusNames.indexOf(status);
  return n > 0 ? writer.uint32((1 << 3) | WireType.Varint).int32(n) : writer;
}

export function encodeHealthCheckResponse(status: ServingStatus): Buffer {
  return Buffer.from(writeStatus(new BinaryWriter(), status).finish());
}

/** The status a HealthCheckResponse carries, by name; a number this side does not know as its digits. */
export function decodeHealthCheckResponse(bytes: Uint8Array): string {
  const n = readField1(bytes, WireType.Varint, (r) => r.int32(), 0);
  return statusNames[n] ?? String(n);
}

/** HealthListResponse: `map<string, HealthCheckResponse> statuses = 1`, each entry a message of key (1) and value (2). */
function encodeHealthListResponse(statuses: ReadonlyMap<string, ServingStatus>): Buffer {
  const writer = new BinaryWriter();
  for (const [service, status] of statuses) {
    writer.uint32((1 << 3) | WireType.LengthDelimited).fork();
    writer.uint32((1 << 3) | WireType.LengthDelimited).string(service);
    writeStatus(writer.uint32((2 << 3) | WireType.LengthDelimited).fork(), status).join();
    writer.join();
  }
  return Buffer.from(writer.finish());
}

/**
 * Ends a Watch with an error status. grpc-js sends a server stream's status
 * when the stream ends after an "error" event; `destroy` would close it
 * without one, and the caller would wait for its deadline.
 */
function refuse(call: ServerWritableStream<Buffer, Buffer>, code: grpcStatus, details: string): void {
  call.emit("error", Object.assign(new Error(details), { code, details }));
}

/** The serving status of the whole server ("") and of each service, as grpc.health.v1 reports it. */
export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Map<string, Set<ServerWritableStream<Buffer, Buffer>>>();
  /** Watch streams open now. */
  private watching = 0;

  constructor(
    initial: Record<string, ServingStatus>,
    private readonly limits: { readonly watches: number } = { watches: watchLimit },
  ) {
    for (const [service, status] of Object.entries(initial)) this.statuses.set(service, status);
  }

  /** Sets a service's status and tells its watchers. */
  setStatus(service: string, status: ServingStatus): void {
    this.statuses.set(service, status);
    for (const call of this.watchers.get(service) ?? []) call.write(encodeHealthCheckResponse(status));
  }

  /** Ends every Watch call (OK): a server that stops does not wait for them. */
  endWatches(): void {
    for (const calls of this.watchers.values()) {
      for (const call of calls) call.end();
      calls.clear();
    }
    this.watchers.clear();
    this.watching = 0;
  }

  addToServer(server: Server): void {
    server.addService(definition, {
      Check: (call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => {
        // The NOT_FOUND below names the service: a name of 255 KB went back whole, 765 KB percent-encoded, to anyone.
        if (call.request.length > watchRequestLimit) {
          return callback({ code: grpcStatus.INVALID_ARGUMENT, details: `a Check request may have at most ${watchRequestLimit} bytes` });
        }
        const service = this.serviceOf(call.request);
        if (service === undefined) return callback({ code: grpcStatus.INVALID_ARGUMENT, details: "not a grpc.health.v1.HealthCheckRequest" });
        const status = this.statuses.get(service);
        if (status === undefined) return callback({ code: grpcStatus.NOT_FOUND, details: `Health status unknown for service ${service}` });
        callback(null, encodeHealthCheckResponse(status));
      },
      Watch: (call: ServerWritableStream<Buffer, Buffer>) => {
        // An open Watch keeps its request: a caller without a token may not make the server keep much of its choosing.
        if (call.request.length > watchRequestLimit) {
          return refuse(call, grpcStatus.INVALID_ARGUMENT, `a Watch request may have at most ${watchRequestLimit} bytes`);
        }
        if (this.watching >= this.limits.watches) {
          return refuse(call, grpcStatus.RESOURCE_EXHAUSTED, `the server holds ${this.limits.watches} Watch streams already; use Check, or try again later`);
        }
        const service = this.serviceOf(call.request);
        if (service === undefined) return refuse(call, grpcStatus.INVALID_ARGUMENT, "not a grpc.health.v1.HealthCheckRequest");
        let calls = this.watchers.get(service);
        if (!calls) this.watchers.set(service, (calls = new Set()));
        calls.add(call);
        this.watching++;
        // The name goes with its last watcher: callers need no token, and the names they choose would otherwise stay.
        call.on("cancelled", () => {
          if (calls.delete(call)) this.watching--;
          if (calls.size === 0 && this.watchers.get(service) === calls) this.watchers.delete(service);
        });
        call.write(encodeHealthCheckResponse(this.statuses.get(service) ?? "SERVICE_UNKNOWN"));
      },
      List: (_call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => {
        if (this.statuses.size > listLimit) return callback({ code: grpcStatus.RESOURCE_EXHAUSTED, details: "Too many services to list." });
        callback(null, encodeHealthListResponse(this.statuses));
      },
    });
  }

  private serviceOf(request: Buffer): string | undefined {
    try {
      return decodeHealthCheckRequest(request);
    } catch {
      return undefined;
    }
  }
}
