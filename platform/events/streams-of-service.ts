import type { StreamSpec } from "./types.js";

/** What `streamsOfService` reads of the generated NATS authorization (gen/ts/concord_nats.ts). */
export interface ServiceStreamUse {
  readonly services: ReadonlyArray<{ readonly name: string; readonly streams: readonly string[]; readonly consumers: ReadonlyArray<{ readonly stream: string }> }>;
  /** The services of gRPC alone: their packages declare gRPC services and neither a stream nor a subscription. */
  readonly grpcAlone: ReadonlyArray<{ readonly name: string }>;
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
  const user = authorization.services.find((s) => s.name === name);
  if (!user) {
    if (authorization.grpcAlone.some((s) => s.name === name)) return [];
    const known = [...authorization.services, ...authorization.grpcAlone].map((s) => s.name).sort();
    throw new Error(
      `the contracts have no service ${JSON.stringify(name)} (the last name of its proto package before the version; they have ${known.join(", ") || "none"}): ` +
        "has `npm run gen` run since the service was added?",
    );
  }
  const used = new Set([...user.streams, ...user.consumers.map((c) => c.stream)]);
  const missing = [...used].filter((stream) => !all.some((s) => s.name === stream));
  if (missing.length > 0) throw new Error(`the NATS authorization gives ${name} stream(s) ${missing.join(", ")}, which the stream specs lack: run \`npm run gen\``);
  return all.filter((s) => used.has(s.name));
}
