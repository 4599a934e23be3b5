import { describe, expect, it } from "vitest";
import { natsAuthorization } from "../../gen/ts/concord_nats.js";
import { identityOfPackage, natsAuthorizationOf, type EventManifest } from "./nats-permissions.js";

const manifest: EventManifest = {
  streams: [
    { name: "ZOO_ANIMALS", file: "zoo/animals/v1/animal_events.proto" },
    { name: "ZOO_KEEPERS", file: "zoo/keepers/v2/keeper_events.proto" },
  ],
  events: [
    { type: "zoo.animals.v1.Fed", stream: "ZOO_ANIMALS", filterSubject: "zoo.animals.v1.animal.*.fed" },
    { type: "zoo.keepers.v2.ShiftStarted", stream: "ZOO_KEEPERS", filterSubject: "zoo.keepers.v2.shift.*.started" },
  ],
  subscriptions: [{ service: "zoo.keepers.v2.KeeperService", event: "zoo.animals.v1.Fed", durable: "keepers-fed", stream: "ZOO_ANIMALS" }],
};

describe("natsAuthorizationOf", () => {
  it("names a user after its package, without the version", () => {
    expect(identityOfPackage("shop.orders.v1")).toBe("orders");
    expect(identityOfPackage("zoo.keepers.v2beta1")).toBe("keepers");
    expect(() => identityOfPackage("v1")).toThrow(/gives no NATS user name/);
  });

  it("gives a user its events, its dead letters, info of its streams and the JetStream API of its own durables, the observer reads only, and the operator provisions the streams", () => {
    const auth = natsAuthorizationOf(manifest);
    expect(auth.streamSources).toEqual({ ZOO_ANIMALS: "animals", ZOO_KEEPERS: "keepers" });
    const animals = auth.services.find((u) => u.name === "animals")!;
    expect(animals.permissions.publish.allow.filter((s) => !s.startsWith("$JS.API.STREAM") && s !== "$JS.API.INFO")).toEqual(["zoo.animals.v1.animal.*.fed"]);
    const keepers = auth.services.find((u) => u.name === "keepers")!;
    expect(keepers.permissions.publish.allow).toEqual([
      "zoo.keepers.v2.shift.*.started",
      "concord.dlq.ZOO_ANIMALS.keepers-fed",
      "$JS.API.INFO",
      "$JS.API.STREAM.INFO.CONCORD_DLQ",
      "$JS.API.STREAM.INFO.ZOO_ANIMALS",
      "$JS.API.STREAM.INFO.ZOO_KEEPERS",
      "$JS.API.CONSUMER.CREATE.ZOO_ANIMALS.keepers-fed",
      "$JS.API.CONSUMER.CREATE.ZOO_ANIMALS.keepers-fed.>",
      "$JS.API.CONSUMER.DURABLE.CREATE.ZOO_ANIMALS.keepers-fed",
      "$JS.API.CONSUMER.INFO.ZOO_ANIMALS.keepers-fed",
      "$JS.API.CONSUMER.MSG.NEXT.ZOO_ANIMALS.keepers-fed",
      "$JS.ACK.ZOO_ANIMALS.keepers-fed.>",
    ]);
    expect(keepers.permissions.publish.allow.filter((s) => s.includes("CONCORD_DLQ") && !/\.INFO\./.test(s))).toEqual([]);
    // Streams are the operator's to create and change.
    expect(auth.operator.permissions.publish.allow.filter((s) => /^\$JS\.API\.STREAM\.(CREATE|UPDATE)\./.test(s))).toEqual([
      "$JS.API.STREAM.CREATE.CONCORD_DLQ",
      "$JS.API.STREAM.UPDATE.CONCORD_DLQ",
      "$JS.API.STREAM.CREATE.ZOO_ANIMALS",
      "$JS.API.STREAM.UPDATE.ZOO_ANIMALS",
      "$JS.API.STREAM.CREATE.ZOO_KEEPERS",
      "$JS.API.STREAM.UPDATE.ZOO_KEEPERS",
    ]);
    // And to delete the durables no contract declares any more on the contracts' streams: the declared ones are denied it.
    expect(auth.operator.permissions.publish.allow.filter((s) => s.startsWith("$JS.API.CONSUMER.DELETE.") && !s.includes(".observer-"))).toEqual([
      "$JS.API.CONSUMER.DELETE.ZOO_ANIMALS.*",
      "$JS.API.CONSUMER.DELETE.ZOO_KEEPERS.*",
    ]);
    expect(auth.operator.permissions.publish.deny).toContain("$JS.API.CONSUMER.DELETE.ZOO_ANIMALS.keepers-fed");
    expect(keepers.permissions.subscribe.allow).toEqual(["_INBOX_keepers.>"]);
    const observer = auth.observer.permissions.publish;
    expect(observer.allow.some((s) => /^(zoo|concord)\./.test(s) || /PURGE|UPDATE|STREAM\.CREATE|STREAM\.DELETE|MSG\.DELETE/.test(s))).toBe(false);
    expect(observer.deny).toEqual(expect.arrayContaining(["$JS.API.CONSUMER.MSG.NEXT.ZOO_ANIMALS.keepers-fed", "$JS.API.CONSUMER.DELETE.ZOO_ANIMALS.keepers-fed", "$JS.ACK.ZOO_ANIMALS.keepers-fed.>"]));
  });

  it("lets the observer (and the operator, who reads as it does) make, pull from, ack for and delete consumers of its sixteen names only; the operator deletes the undeclared durables too", () => {
    const auth = natsAuthorizationOf(manifest);
    expect(auth.observer.consumerNames).toEqual(Array.from({ length: 16 }, (_, i) => `observer-${i + 1}`));
    const staleDeletion = (s: string) => /^\$JS\.API\.CONSUMER\.DELETE\.ZOO_(ANIMALS|KEEPERS)\.\*$/.test(s);
    expect(auth.observer.permissions.publish.allow.filter(staleDeletion)).toEqual([]);
    for (const allow of [auth.observer.permissions.publish.allow, auth.operator.permissions.publish.allow.filter((s) => !staleDeletion(s))]) {
      const consumerApi = allow.filter((s) => /^\$JS\.API\.CONSUMER\.(CREATE|DURABLE|MSG\.NEXT|DELETE)|^\$JS\.ACK/.test(s));
      expect(consumerApi).toHaveLength(16 * 5);
      expect(consumerApi.filter((s) => !/\.observer-([1-9]|1[0-6])(\.>)?$/.test(s))).toEqual([]);
      expect(allow).toEqual(expect.arrayContaining(["$JS.API.CONSUMER.CREATE.*.observer-16", "$JS.API.CONSUMER.CREATE.*.observer-16.>", "$JS.ACK.*.observer-1.>", "$JS.API.CONSUMER.INFO.*.*"]));
    }
  });

  it("gives each user the gRPC services of its package, and lists the packages with gRPC services and no user as services of gRPC alone", () => {
    const grpcServices = ["zoo.keepers.v2.KeeperService", "zoo.animals.v1.AnimalService", "zoo.tickets.v1.TicketService", "zoo.tickets.v1.RefundService", "zoo.gates.v1.GateService"];
    const auth = natsAuthorizationOf(manifest, grpcServices);
    expect(auth.services.map((u) => [u.name, u.services])).toEqual([
      ["animals", ["zoo.animals.v1.AnimalService"]],
      ["keepers", ["zoo.keepers.v2.KeeperService"]],
    ]);
    expect(auth.grpcAlone).toEqual([
      { name: "gates", services: ["zoo.gates.v1.GateService"] },
      { name: "tickets", services: ["zoo.tickets.v1.RefundService", "zoo.tickets.v1.TicketService"] },
    ]);
    // No user, no rights: the observer's and the operator's are those of the streams alone.
    expect(natsAuthorizationOf(manifest).operator).toEqual(auth.operator);
    expect(natsAuthorizationOf(manifest).grpcAlone).toEqual([]);
  });

  it("refuses a contract durable named as one of the observer's consumers", () => {
    const taken = { ...manifest, subscriptions: [{ ...manifest.subscriptions[0]!, durable: "observer-2" }] };
    expect(() => natsAuthorizationOf(taken)).toThrow("durable observer-2 on stream ZOO_ANIMALS takes a name kept for the observer's consumers (observer-1 to observer-16); rename it");
  });

  it("refuses two packages that would share a user", () => {
    const clash = { ...manifest, streams: [...manifest.streams, { name: "OLD_ANIMALS", file: "old/animals/v1/animal_events.proto" }] };
    expect(() => natsAuthorizationOf(clash)).toThrow(/packages zoo\.animals\.v1 and old\.animals\.v1 would share the NATS user animals/);
  });

  it("gives the versions of one package, a v2 declared beside v1 to change its contracts incompatibly, one user: the service's, with the events and streams of both", () => {
    const v2 = {
      ...manifest,
      streams: [...manifest.streams, { name: "ZOO_ANIMALS_V2", file: "zoo/animals/v2/animal_events.proto" }],
      events: [...manifest.events, { type: "zoo.animals.v2.Fed", stream: "ZOO_ANIMALS_V2", filterSubject: "zoo.animals.v2.animal.*.fed" }],
      subscriptions: [...manifest.subscriptions, { service: "zoo.animals.v2.AnimalService", event: "zoo.keepers.v2.ShiftStarted", durable: "animals-shift-started", stream: "ZOO_KEEPERS" }],
    };
    const auth = natsAuthorizationOf(v2);
    expect(auth.streamSources).toEqual({ ZOO_ANIMALS: "animals", ZOO_ANIMALS_V2: "animals", ZOO_KEEPERS: "keepers" });
    const animals = auth.services.find((u) => u.name === "animals")!;
    expect(animals).toMatchObject({ streams: ["ZOO_ANIMALS", "ZOO_ANIMALS_V2"], events: ["zoo.animals.v1.animal.*.fed", "zoo.animals.v2.animal.*.fed"], consumers: [{ stream: "ZOO_KEEPERS", durable: "animals-shift-started" }] });
    expect(auth.services.map((u) => u.name)).toEqual(["animals", "keepers"]);
  });

  it("refuses a package that would take the observer's or the operator's user", () => {
    for (const name of ["observer", "operator"]) {
      const taken = { ...manifest, streams: [...manifest.streams, { name: "SHOP_WATCH", file: `shop/${name}/v1/watch_events.proto` }] };
      expect(() => natsAuthorizationOf(taken)).toThrow(
        `package shop.${name}.v1 would take the NATS user ${name}, which is Concord's own ${name}'s (and so its nkey seed): give the package another name before its version`,
      );
    }
  });

  it("is what gen/ts/concord_nats.ts holds for the contracts", () => {
    expect(natsAuthorization.services.map((u) => [u.name, u.services])).toEqual([
      ["orders", ["shop.orders.v1.OrderService"]],
      ["products", ["shop.products.v1.ProductService"]],
    ]);
    expect(natsAuthorization.grpcAlone).toEqual([]);
  });
});
