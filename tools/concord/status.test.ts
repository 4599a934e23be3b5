import { afterAll, describe, expect, it } from "vitest";
import { grpcAlone } from "../../gen/ts/concord_nats.js";
import { tempDir } from "../../test/support/shop.js";
import { serviceTargets, servesGrpcAlone } from "./status.js";

describe("servesGrpcAlone", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  // The shop's two, as in the contracts here (a service added since would change the words below).
  const users = [{ name: "orders" }, { name: "products" }];

  it("reads gRPC alone from gen/ts/concord_nats.ts's grpcAlone, and refuses a service in neither of its lists", () => {
    expect(servesGrpcAlone("billing", { services: users, grpcAlone: [{ name: "billing" }] })).toBe(true);
    expect(servesGrpcAlone("orders", { services: users, grpcAlone: [{ name: "billing" }] })).toBe(false);
    expect(() => servesGrpcAlone("billing", { services: users, grpcAlone: [] })).toThrow(
      "tools/services.ts lists billing, and no proto package of that name (shop.billing.v1) declares a gRPC service, a stream or a (concord.v1.subscribe): " +
        "the contracts' services are orders and products; give the entry its package's name (the one before its version), or run `npm run gen` if the contract is new",
    );
    // concord status's targets, by the contracts as generated.
    expect(serviceTargets({}, { DATA_DIR: dir.path }).map((t) => [t.name, t.grpcAlone])).toEqual(
      serviceTargets({}, { DATA_DIR: dir.path }).map((t) => [t.name, grpcAlone.some((s) => s.name === t.name)]),
    );
  });
});
