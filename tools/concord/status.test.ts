import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { grpcAlone } from "../../gen/ts/concord_nats.js";
import { tempDir } from "../../test/support/shop.js";
import { printStatus, serviceTargets, servesGrpcAlone } from "./status.js";

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

/** A metrics endpoint that answers `text` on /metrics, as a service's does; resolves with its address. */
async function metricsEndpoint(text: string, servers: Server[]): Promise<string> {
  const server = createServer((_req, res) => res.end(text));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe("printStatus", () => {
  const servers: Server[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  });

  it("says a fact of the database several instances share once, naming the instances it was read through, at its worst reading", async () => {
    const metrics = (oldestPending: number) =>
      [
        "concord_outbox_depth 0",
        "concord_outbox_oldest_age_seconds 0",
        "concord_nats_connected 1",
        "# HELP concord_orders_pending_oldest_age_seconds How long the oldest PENDING order has waited",
        `concord_orders_pending_oldest_age_seconds ${oldestPending}`,
        'concord_database_writes_failing{reason="full"} 1',
        "",
      ].join("\n");
    // Nothing listens on port 9 of the loopback here: health is unreachable, which this test does not look at.
    const instances = [
      { grpc: "127.0.0.1:9", metrics: await metricsEndpoint(metrics(75), servers) },
      { grpc: "127.0.0.1:9", metrics: await metricsEndpoint(metrics(80.5), servers) },
    ];
    const lines: string[] = [];
    const connection = Promise.reject(new Error("not reached"));
    connection.catch(() => undefined);
    const healthy = await printStatus({ url: "nats://127.0.0.1:9", connection }, [{ name: "orders", instances, consumers: [] }], (line) => lines.push(line));
    expect(healthy).toBe(false);
    const waiting = lines.filter((line) => line.includes("waiting:"));
    expect(waiting).toEqual([expect.stringMatching(/^orders {2}waiting: How long the oldest PENDING order has waited: 80\.5s .* \(read through orders#1 and orders#2\)$/)]);
    const refusing = lines.filter((line) => line.includes("refusing writes"));
    expect(refusing).toEqual([expect.stringMatching(/^orders {2}database: refusing writes, its storage is full .* \(read through orders#1 and orders#2\)$/)]);
  });
});
