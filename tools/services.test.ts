import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { grpcAlone, natsAuthorization } from "../gen/ts/concord_nats.js";
import { descriptorSet } from "../gen/ts/descriptor_set.js";
import { tempDirForSuite } from "../test/support/temp-dir.js";
import { identityOfPackage } from "./contracts/nats-permissions.js";
import { repoRoot } from "./repo-root.js";
import { grpcListenOf, type ServiceEntry, serviceFolders, serviceNames, services, servicesWithoutNatsUserSaid, unlistedServices, unlistedServicesSaid } from "./services.js";

const dir = tempDirForSuite("concord-services-");

/** The port of host:port. */
const portOf = (address: string) => Number(/:(\d+)$/.exec(address)![1]);

/** The shop's two services: the cases below name their NATS users themselves, so a service added to the list (README "Adding a service") leaves them as they are. */
const shop = services.filter((s) => s.name === "products" || s.name === "orders");

describe("tools/services.ts", () => {
  it("lists every service of services/ once, and nothing else", () => {
    expect([...serviceNames].sort()).toEqual(serviceFolders(repoRoot));
    expect(new Set(serviceNames).size).toBe(serviceNames.length);
  });

  it("names each service's proto service as the contracts declare it, in the package of its name, and its consumers as its NATS user has them (none without one: gRPC alone)", () => {
    const contracts = createFileRegistry(fromBinary(FileDescriptorSetSchema, descriptorSet));
    for (const entry of services as readonly ServiceEntry[]) {
      const declared = contracts.getService(entry.grpcService);
      expect(declared, `${entry.name}: grpcService ${entry.grpcService} is not in the contracts (has \`npm run gen\` run?)`).toBeDefined();
      expect(identityOfPackage(declared!.file.proto.package ?? ""), `${entry.name}: grpcService ${entry.grpcService} is of another package`).toBe(entry.name);
      const durables = Object.values(entry.consumers).map((c) => c.spec.durable);
      const user = natsAuthorization.services.find((u) => u.name === entry.name);
      // None: a service of gRPC alone (no stream, no subscription), which has no consumers either.
      expect([...durables].sort(), `${entry.name}: consumers`).toEqual((user?.consumers ?? []).map((c) => c.durable).sort());
    }
    // A service the contracts declare, and `npm start` would not start.
    for (const user of natsAuthorization.services) expect(serviceNames, `${user.name}: a NATS user tools/services.ts does not list`).toContain(user.name);
    for (const alone of grpcAlone) expect(serviceNames, `${alone.name}: a service of gRPC alone tools/services.ts does not list`).toContain(alone.name);
  });

  it("agrees with each service's main.ts and settings: its name, its variables' prefix, its gRPC address", () => {
    for (const entry of services) {
      const main = readFileSync(join(repoRoot, "services", entry.name, "main.ts"), "utf8");
      expect(main, `services/${entry.name}/main.ts runs the service under another name`).toContain(`name: "${entry.name}"`);
      expect(main, `services/${entry.name}/main.ts reads other variables`).toContain(`hostSettingsOf("${entry.envPrefix}"`);
      for (const suffix of ["LISTEN", "METRICS_LISTEN", "DATABASE_URL"]) expect(Object.keys(entry.settings)).toContain(`${entry.envPrefix}_${suffix}`);
      expect(grpcListenOf(entry)).toMatch(/^127\.0\.0\.1:\d+$/);
      for (const callee of entry.calls) {
        expect(serviceNames, `${entry.name} calls ${callee}`).toContain(callee);
        expect(Object.keys(entry.settings), `${entry.name} calls ${callee}`).toContain(`${services.find((s) => s.name === callee)!.envPrefix}_ADDRESS`);
      }
    }
    expect(new Set(services.map((s) => s.envPrefix)).size).toBe(services.length);
  });

  it("has npm start refuse a services/<name>/main.ts it lacks, naming the file and the step that lists it, and note a service the contracts alone declare", () => {
    const root = join(dir, "repo");
    for (const [name, files] of [["products", ["main.ts"]], ["orders", ["main.ts"]], ["shipping", ["main.ts", "app.ts"]], ["notes", ["README.md"]]] as const) {
      mkdirSync(join(root, "services", name), { recursive: true });
      for (const file of files) writeFileSync(join(root, "services", name, file), "");
    }
    const folders = serviceFolders(root);
    expect(folders).toEqual(["orders", "products", "shipping"]);
    expect(unlistedServices(serviceFolders(repoRoot), natsAuthorization.services.map((u) => u.name))).toEqual([]);
    expect(unlistedServicesSaid([])).toBeUndefined();
    const written = unlistedServices(folders, ["orders", "products", "shipping", "billing"], shop);
    expect(written).toEqual([
      { name: "billing", hasMain: false },
      { name: "shipping", hasMain: true },
    ]);
    expect(unlistedServicesSaid(written)).toEqual({
      refused: true,
      message: 'services/shipping/main.ts runs a service that tools/services.ts does not list, so npm start would leave it out: add its entry there (README "Adding a service", step 4)',
    });
    expect(unlistedServicesSaid(unlistedServices(["orders", "products"], ["orders", "products", "shipping"], shop))).toEqual({
      refused: false,
      message: "the contracts declare shipping, a service with no services/shipping/main.ts and no entry in tools/services.ts yet: npm start does not start it",
    });
  });

  it("has npm start refuse a listed service with consumers that the contracts give no NATS user (its name not its package's), naming it, and take one without consumers as gRPC alone", () => {
    expect(servicesWithoutNatsUserSaid({ services: natsAuthorization.services, grpcAlone })).toBeUndefined();
    const billing = { ...shop[0], name: "billing", consumers: {} };
    expect(servicesWithoutNatsUserSaid({ services: [{ name: "orders" }, { name: "products" }], grpcAlone: [{ name: "billing" }] }, [...shop, billing])).toBeUndefined();
    const product = { ...shop[0], name: "product" };
    expect(servicesWithoutNatsUserSaid({ services: [{ name: "orders" }], grpcAlone: [{ name: "billing" }] }, [product, shop[1], billing])).toBe(
      "tools/services.ts lists product with consumers, and it has no NATS user in gen/ts/concord_nats.ts: no proto package of that name (shop.product.v1) declares a stream or a (concord.v1.subscribe), " +
        "so its consumers have nothing to read; give the entry its package's name (the one before its version), or run `npm run gen` if the contract changed",
    );
  });

  it("has npm start refuse a listed service without consumers that is neither a NATS user nor a service of gRPC alone (a name mistyped, or contracts not generated), naming it and the contracts' services", () => {
    const biling = { ...shop[0], name: "biling", consumers: {} };
    expect(servicesWithoutNatsUserSaid({ services: [{ name: "orders" }, { name: "products" }], grpcAlone: [{ name: "billing" }] }, [...shop, biling])).toBe(
      "tools/services.ts lists biling, and no proto package of that name (shop.biling.v1) declares a gRPC service, a stream or a (concord.v1.subscribe): " +
        "the contracts' services are billing, orders and products; give the entry its package's name (the one before its version), or run `npm run gen` if the contract is new",
    );
    // Not yet generated: no service of gRPC alone known.
    expect(servicesWithoutNatsUserSaid({ services: [{ name: "orders" }, { name: "products" }], grpcAlone: [] }, [...shop, { ...biling, name: "billing" }])).toMatch(/^tools\/services\.ts lists billing, and no proto package of that name \(shop\.billing\.v1\)/);
  });

  it("gives the services default ports that none of `npm start --instances 8`'s instances share", () => {
    // Instance i listens 2 ports above instance i-1, up to 8 instances.
    const ports = services.flatMap((s) => [grpcListenOf(s), s.metricsListen].flatMap((address) => Array.from({ length: 8 }, (_, i) => portOf(address) + 2 * i)));
    const taken = ports.filter((port, i) => ports.indexOf(port) !== i);
    expect(taken, "ports two services' instances would share").toEqual([]);
  });
});
