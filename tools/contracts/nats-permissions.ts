/**
 * NATS identities and permissions, derived from the event manifest
 * (gen/events.json): one user per service, allowed to publish its own
 * events and to use exactly the JetStream API of the streams and durable
 * consumers its contracts declare, and one read-only observer. `npm run gen`
 * writes them as gen/ts/concord_nats.ts; `npm start` turns them into the
 * server's `authorization` block (tools/nats/authorization.ts).
 */
import { deadLetterStreamSpec, deadLetterSubject } from "../../platform/events/index.js";

/** What this file reads of gen/events.json. */
export interface EventManifest {
  readonly streams: ReadonlyArray<{ readonly name: string; readonly file: string }>;
  readonly events: ReadonlyArray<{ readonly type: string; readonly stream: string; readonly filterSubject: string }>;
  readonly subscriptions: ReadonlyArray<{ readonly service: string; readonly event: string; readonly durable: string; readonly stream: string }>;
}

/** Publish and subscribe rights of one NATS user, as nats-server's `permissions` take them. */
export interface NatsPermissions {
  readonly publish: { readonly allow: readonly string[]; readonly deny: readonly string[] };
  readonly subscribe: { readonly allow: readonly string[] };
}

/** One service's NATS identity: its user (also its `ce-source`), what it owns and consumes, and its rights. */
export interface NatsServiceUser {
  /** User name, connection name and `ce-source`: the package's name before its version ("orders" for shop.orders.v1). */
  readonly name: string;
  /** The gRPC services of its package (those its name comes from), for people reading the manifest. */
  readonly services: readonly string[];
  /** Its replies come on `<inboxPrefix>.>` (nats.js `inboxPrefix`). */
  readonly inboxPrefix: string;
  /** The streams its events go to. */
  readonly streams: readonly string[];
  /** The subjects of its own events. */
  readonly events: readonly string[];
  /** Its durable consumers. */
  readonly consumers: ReadonlyArray<{ readonly stream: string; readonly durable: string }>;
  readonly permissions: NatsPermissions;
}

/** Everything the contracts say about who may do what on NATS. */
export interface NatsAuthorization {
  readonly services: readonly NatsServiceUser[];
  /**
   * Reads every stream through consumers of its own, under `consumerNames`
   * only (at most that many on a stream); publishes nothing, changes nothing.
   */
  readonly observer: { readonly name: string; readonly inboxPrefix: string; readonly consumerNames: readonly string[]; readonly permissions: NatsPermissions };
  /**
   * The observer's reading, plus what `npx concord dlq replay`, `purge` and
   * `consumer redeliver` need: publishing any event (a dead letter back to
   * its subject, an event a consumer was left without) and deleting or
   * purging dead letters; and what `npx concord streams provision` needs:
   * creating and updating the contracts' streams and the dead letter
   * stream. A person's role (or a deployment's), not a service's.
   */
  readonly operator: { readonly name: string; readonly inboxPrefix: string; readonly permissions: NatsPermissions };
  /** The `ce-source` every event of a stream must carry: the service that owns it. */
  readonly streamSources: Readonly<Record<string, string>>;
  /**
   * The services of gRPC alone: packages with gRPC services and neither a
   * stream nor a (concord.v1.subscribe), by the name a user would have. They
   * have no NATS user and never connect to NATS; listed so that a name
   * neither here nor among the users is known to be no service at all.
   */
  readonly grpcAlone: ReadonlyArray<{ readonly name: string; readonly services: readonly string[] }>;
}

export const observerName = "observer";
export const operatorName = "operator";
/**
 * How many consumers the observer and the operator may have on one stream,
 * together: their names are `observer-1` to `observer-<n>`. Each costs the
 * server; any name at all would let them make as many as the server allows
 * on a stream (1,000 by default, for everyone), leaving none for a
 * service's durable.
 */
export const observerConsumerCount = 16;

/** A name of a package that is its version: v1, v2beta1. */
export const packageVersionPattern = /^v(\d+)(?:(alpha|beta)(\d*))?$/;

/** The names of a package that are not its version ("shop", "orders" of "shop.orders.v1"): the same for every version of a service's contracts. */
export const namesOfPackage = (pkg: string): string[] => pkg.split(".").filter((p) => p !== "" && !packageVersionPattern.test(p));

/** "orders" for "shop.orders.v1" (the package's last name that is not a version). */
export function identityOfPackage(pkg: string): string {
  const named = namesOfPackage(pkg);
  const name = named.at(-1);
  if (!name || !/^[a-z][a-z0-9_-]*$/.test(name)) throw new Error(`package ${JSON.stringify(pkg)} gives no NATS user name (lower case letters, digits, "-" and "_")`);
  return name;
}

const packageOfFile = (file: string): string => file.split("/").slice(0, -1).join(".");
const packageOfName = (fullName: string): string => fullName.split(".").slice(0, -1).join(".");

/**
 * The users and rights the contracts in `manifest` call for (the versions of
 * one package are one user), and the services of gRPC alone among
 * `grpcServices` (the full names of every gRPC service of the contracts).
 * Throws when two other packages map to one user name.
 */
export function natsAuthorizationOf(manifest: EventManifest, grpcServices: readonly string[] = []): NatsAuthorization {
  const dlq = deadLetterStreamSpec.name;
  const byName = new Map<string, { packages: Set<string>; services: Set<string>; streams: Set<string>; events: string[]; consumers: Array<{ stream: string; durable: string }> }>();
  const userOf = (pkg: string) => {
    const name = identityOfPackage(pkg);
    let user = byName.get(name);
    if (!user) byName.set(name, (user = { packages: new Set(), services: new Set(), streams: new Set(), events: [], consumers: [] }));
    user.packages.add(pkg);
    // Versions of one package (shop.orders.v1 and a v2 beside it) are one service's; other packages are other services.
    if (new Set([...user.packages].map((p) => namesOfPackage(p).join("."))).size > 1) {
      throw new Error(`packages ${[...user.packages].join(" and ")} would share the NATS user ${name}: give one of them another name before its version`);
    }
    if (name === observerName || name === operatorName) {
      throw new Error(`package ${pkg} would take the NATS user ${name}, which is Concord's own ${name}'s (and so its nkey seed): give the package another name before its version`);
    }
    return user;
  };
  const streamSources: Record<string, string> = {};
  for (const stream of manifest.streams) {
    const pkg = packageOfFile(stream.file);
    userOf(pkg).streams.add(stream.name);
    streamSources[stream.name] = identityOfPackage(pkg);
  }
  for (const event of manifest.events) {
    const owner = streamSources[event.stream];
    if (!owner) throw new Error(`event ${event.type} goes to stream ${event.stream}, which the manifest does not declare`);
    byName.get(owner)!.events.push(event.filterSubject);
  }
  for (const sub of manifest.subscriptions) {
    const user = userOf(packageOfName(sub.service));
    user.services.add(sub.service);
    user.consumers.push({ stream: sub.stream, durable: sub.durable });
  }
  // Each gRPC service goes to the user of its package's name; with none, that name serves gRPC alone.
  const grpcAloneByName = new Map<string, Set<string>>();
  for (const service of grpcServices) {
    const name = identityOfPackage(packageOfName(service));
    const user = byName.get(name);
    if (user) user.services.add(service);
    else grpcAloneByName.set(name, (grpcAloneByName.get(name) ?? new Set()).add(service));
  }
  const grpcAlone = [...grpcAloneByName.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, services]) => ({ name, services: [...services].sort() }));
  const allDurables = manifest.subscriptions.map((s) => ({ stream: s.stream, durable: s.durable }));

  const services = [...byName.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, user]): NatsServiceUser => {
      const streams = [...user.streams].sort();
      const consumers = [...user.consumers].sort((a, b) => `${a.stream}.${a.durable}`.localeCompare(`${b.stream}.${b.durable}`));
      const events = [...user.events].sort();
      // Streams it checks at start (its own, those it consumes, the dead letter stream): it reads them and changes
      // none. No subject permission can refuse a stream's configuration, and a stream that republishes (or sources,
      // or mirrors) has the server publish with no user's permissions: a user that could create or update a stream
      // could purge or delete any stream, or forge another service's events. The operator provisions them.
      const used = [...new Set([...streams, ...consumers.map((c) => c.stream), dlq])].sort();
      const allow = [
        ...events,
        ...consumers.map((c) => deadLetterSubject(deadLetterStreamSpec, c.stream, c.durable)),
        "$JS.API.INFO",
        ...used.map((s) => `$JS.API.STREAM.INFO.${s}`),
        ...consumers.flatMap(({ stream, durable }) => [
          `$JS.API.CONSUMER.CREATE.${stream}.${durable}`,
          `$JS.API.CONSUMER.CREATE.${stream}.${durable}.>`,
          `$JS.API.CONSUMER.DURABLE.CREATE.${stream}.${durable}`,
          `$JS.API.CONSUMER.INFO.${stream}.${durable}`,
          `$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`,
          `$JS.ACK.${stream}.${durable}.>`,
        ]),
      ];
      return {
        name,
        services: [...user.services].sort(),
        inboxPrefix: `_INBOX_${name}`,
        streams,
        events,
        consumers,
        permissions: { publish: { allow, deny: [] }, subscribe: { allow: [`_INBOX_${name}.>`] } },
      };
    });

  // The observer reads through consumers of its own; the services' durables are theirs alone (taking a message
  // from one, or deleting it, would take it from the service). It creates consumers only through the subject that
  // names them ($JS.API.CONSUMER.CREATE.<stream>.<name>[.<filter>]), and only under its few names: subjects match
  // whole tokens, so no prefix of a name can be allowed, and neither how long a consumer lives nor whether it is
  // durable shows in a subject; a fixed list of names is what bounds how many it has. The older
  // $JS.API.CONSUMER.CREATE.<stream> carries the name in the request body alone, and the server takes a body
  // naming an existing durable as an update of that durable (its filter, ack wait, deliveries), which no subject
  // permission can refuse. The denials keep a service's durable out should a contract give it one of the names.
  const consumerNames = Array.from({ length: observerConsumerCount }, (_, i) => `${observerName}-${i + 1}`);
  const taken = allDurables.find((d) => consumerNames.includes(d.durable));
  if (taken) throw new Error(`durable ${taken.durable} on stream ${taken.stream} takes a name kept for the observer's consumers (${consumerNames[0]} to ${consumerNames.at(-1)}); rename it`);
  const observer = {
    name: observerName,
    // The default prefix, so that the nats CLI and any client work as they are; no service replies there.
    inboxPrefix: "_INBOX",
    consumerNames,
    permissions: {
      publish: {
        allow: [
          "$JS.API.INFO",
          "$JS.API.STREAM.NAMES",
          "$JS.API.STREAM.LIST",
          "$JS.API.STREAM.INFO.*",
          "$JS.API.STREAM.MSG.GET.*",
          "$JS.API.DIRECT.GET.>",
          "$JS.API.CONSUMER.NAMES.*",
          "$JS.API.CONSUMER.LIST.*",
          "$JS.API.CONSUMER.INFO.*.*",
          ...consumerNames.flatMap((n) => [`$JS.API.CONSUMER.CREATE.*.${n}`, `$JS.API.CONSUMER.CREATE.*.${n}.>`, `$JS.API.CONSUMER.MSG.NEXT.*.${n}`, `$JS.API.CONSUMER.DELETE.*.${n}`, `$JS.ACK.*.${n}.>`]),
        ],
        deny: allDurables.flatMap(({ stream, durable }) => [
          `$JS.API.CONSUMER.CREATE.${stream}.${durable}`,
          `$JS.API.CONSUMER.CREATE.${stream}.${durable}.>`,
          `$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`,
          `$JS.API.CONSUMER.DELETE.${stream}.${durable}`,
          `$JS.ACK.${stream}.${durable}.>`,
        ]),
      },
      subscribe: { allow: ["_INBOX.>"] },
    },
  };
  const operator = {
    name: operatorName,
    inboxPrefix: "_INBOX",
    permissions: {
      publish: {
        allow: [
          ...observer.permissions.publish.allow,
          ...manifest.events.map((e) => e.filterSubject).sort(),
          `$JS.API.STREAM.MSG.DELETE.${dlq}`,
          `$JS.API.STREAM.PURGE.${dlq}`,
          // Provisioning (`npx concord streams provision`, run by npm start): the contracts' streams and the dead letter stream.
          ...[...manifest.streams.map((st) => st.name), dlq].sort().flatMap((st) => [`$JS.API.STREAM.CREATE.${st}`, `$JS.API.STREAM.UPDATE.${st}`]),
          // The durables no contract declares any more (`npx concord consumer stale --delete`): the denials below keep
          // every declared one out, as deny wins over allow.
          ...manifest.streams.map((st) => `$JS.API.CONSUMER.DELETE.${st.name}.*`).sort(),
        ],
        deny: observer.permissions.publish.deny,
      },
      subscribe: observer.permissions.subscribe,
    },
  };
  return { services, observer, operator, streamSources, grpcAlone };
}

/** gen/ts/concord_nats.ts: the authorization as data, for the runtime (stream sources) and the tools. */
export function natsAuthorizationModule(authorization: NatsAuthorization): string {
  return [
    "// Written by tools/contracts/nats-permissions.ts from gen/events.json.",
    "",
    "/**",
    " * Who may do what on NATS, derived from the contracts: one user per service",
    " * (its name is also its `ce-source`), with its own events, dead letters and",
    " * the JetStream API of its streams and durable consumers, and a read-only",
    " * observer. `streamSources` names the service whose events each stream holds;",
    " * `grpcAlone` the services with no NATS user, whose packages declare gRPC",
    " * services and neither a stream nor a subscription.",
    " */",
    `export const natsAuthorization = ${JSON.stringify(authorization, null, 2)} as const;`,
    "",
    "/** The `ce-source` every event of a stream carries: the service that owns the stream. */",
    "export const streamSources: Readonly<Record<string, string>> = natsAuthorization.streamSources;",
    "",
    "/** The services of gRPC alone, by name, with their gRPC services: they have no NATS user. */",
    "export const grpcAlone: ReadonlyArray<{ readonly name: string; readonly services: readonly string[] }> = natsAuthorization.grpcAlone;",
    "",
  ].join("\n");
}

/** The README's table of who may publish what (section "Security"); no trailing newline. */
export function natsPermissionTable(authorization: NatsAuthorization): string {
  const code = (s: string) => `\`${s}\``;
  const rows = authorization.services.map((u) => {
    const streams = [...new Set(u.consumers.map((c) => c.stream))];
    const consumes = streams.map((stream) => `${code(stream)}: ${u.consumers.filter((c) => c.stream === stream).map((c) => c.durable).join(", ")}`);
    return [
      code(u.name),
      [...u.events.map(code), ...(u.consumers.length > 0 ? [`its dead letters (${code("concord.dlq.<stream>.<its durable>")})`] : [])].join(", ") || "nothing",
      consumes.join("; ") || "nothing",
    ];
  });
  const names = authorization.observer.consumerNames;
  rows.push([code(authorization.observer.name), "nothing", `any stream, through at most ${names.length} consumers of its own there (${code(names[0]!)} to ${code(names.at(-1)!)})`]);
  rows.push([code(authorization.operator.name), "any event (a dead letter replayed, an event a consumer was left without); deletes and purges dead letters; creates and updates the streams (`npx concord streams provision`); deletes the durable consumers no contract declares (`npx concord consumer stale --delete`)", "as the observer"]);
  return ["| user | may publish | reads through its durable consumers |", "|---|---|---|", ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
}
