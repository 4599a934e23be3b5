import type { StreamSpec } from "./types.js";

/**
 * The services gen/ts/concord_nats.ts knows, by kind: those with a NATS user
 * (their packages declare a stream or a subscription), and those of gRPC
 * alone (their packages declare gRPC services and neither).
 */
export interface ServiceKinds {
  readonly services: ReadonlyArray<{ readonly name: string }>;
  readonly grpcAlone: ReadonlyArray<{ readonly name: string }>;
}

/** What `streamsOfService` reads of the generated NATS authorization (gen/ts/concord_nats.ts). */
export interface ServiceStreamUse extends ServiceKinds {
  readonly services: ReadonlyArray<{ readonly name: string; readonly streams: readonly string[]; readonly consumers: ReadonlyArray<{ readonly stream: string }> }>;
}

/**
 * What the contracts make of the service `name`: "nats" for one with a NATS
 * user, "grpc-alone" for one of gRPC alone, undefined for a name they have no
 * service of (mistyped, or a contract `npm run gen` has not seen). The one
 * reading of it that the services, `npm start` and `concord status` share.
 */
export function serviceKind(name: string, kinds: ServiceKinds): "nats" | "grpc-alone" | undefined {
  if (kinds.services.some((s) => s.name === name)) return "nats";
  if (kinds.grpcAlone.some((s) => s.name === name)) return "grpc-alone";
  return undefined;
}

/**
 * Why `names` (none of which `serviceKind` knows) name no service, and which
 * services the contracts have: the words each refusal of them goes on from.
 */
export function noServiceOfNameSaid(names: readonly string[], kinds: ServiceKinds): string {
  const known = [...kinds.services, ...kinds.grpcAlone].map((s) => s.name).sort();
  const list = known.length < 2 ? (known[0] ?? "none") : `${known.slice(0, -1).join(", ")} and ${known.at(-1)}`;
  return (
    `no proto package of ${names.length === 1 ? "that name" : "those names"} (shop.${names[0]}.v1) declares a gRPC service, a stream or a (concord.v1.subscribe): ` +
    `the contracts' services are ${list}`
  );
}

/**
 * The streams of `all` that the service `name` publishes to or consumes
 * from, as the authorization derived from the contracts gives its NATS user:
 * the only ones it may read, and so the only ones to hand its event runtime
 * (another service's stream it neither consumes nor publishes to would be
 * refused at start). None for a service of gRPC alone, which has no NATS
 * user. Throws when the contracts have no service of that name (neither a
 * NATS user nor one of gRPC alone), or the authorization names a stream
 * `all` lacks.
 */
export function streamsOfService(name: string, authorization: ServiceStreamUse, all: readonly StreamSpec[]): StreamSpec[] {
  const kind = serviceKind(name, authorization);
  if (kind === undefined) {
    throw new Error(
      `the contracts have no service ${JSON.stringify(name)}: ${noServiceOfNameSaid([name], authorization)}; ` +
        "name the service as its package does (the last name before its version), or run `npm run gen` if the contract is new",
    );
  }
  const user = authorization.services.find((s) => s.name === name);
  if (!user) return []; // of gRPC alone: no NATS user
  const used = new Set([...user.streams, ...user.consumers.map((c) => c.stream)]);
  const missing = [...used].filter((stream) => !all.some((s) => s.name === stream));
  if (missing.length > 0) throw new Error(`the NATS authorization gives ${name} stream(s) ${missing.join(", ")}, which the stream specs lack: run \`npm run gen\``);
  return all.filter((s) => used.has(s.name));
}
