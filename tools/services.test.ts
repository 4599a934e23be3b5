import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { natsAuthorization } from "../gen/ts/concord_nats.js";
import { tempDirForSuite } from "../test/support/temp-dir.js";
import { repoRoot } from "./repo-root.js";
import { grpcListenOf, serviceFolders, serviceNames, services, servicesWithoutNatsUserSaid, unlistedServices, unlistedServicesSaid } from "./services.js";

const dir = tempDirForSuite("concord-services-");

/** The port of host:port. */
const portOf = (address: string) => Number(/:(\d+)$/.exec(address)![1]);

describe("tools/services.ts", () => {
  it("lists every service of services/ once, and nothing else", () => {
    expect([...serviceNames].sort()).toEqual(serviceFolders(repoRoot));
    expect(new Set(serviceNames).size).toBe(serviceNames.length);
  });

  it("names each service's proto service and NATS user as the contracts generate them, and its consumers", () => {
    for (const entry of services) {
      const user = natsAuthorization.services.find((u) => u.name === entry.name);
      expect(user, `${entry.name}: no NATS user of that name in gen/ts/concord_nats.ts (is its proto package shop.${entry.name}.v1, and has \`npm run gen\` run?)`).toBeDefined();
      expect(user!.services, `${entry.name}: grpcService`).toContain(entry.grpcService);
      const durables = Object.values(entry.consumers).map((c) => c.spec.durable);
      expect([...durables].sort(), `${entry.name}: consumers`).toEqual(user!.consumers.map((c) => c.durable).sort());
    }
    // A service the contracts give a NATS user to, and `npm start` would not start.
    expect(natsAuthorization.services.map((u) => u.name).sort()).toEqual([...serviceNames].sort());
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
    const written = unlistedServices(folders, ["orders", "products", "shipping", "billing"]);
    expect(written).toEqual([
      { name: "billing", hasMain: false },
      { name: "shipping", hasMain: true },
    ]);
    expect(unlistedServicesSaid(written)).toEqual({
      refused: true,
      message: 'services/shipping/main.ts runs a service that tools/services.ts does not list, so npm start would leave it out: add its entry there (README "Adding a service", step 4)',
    });
    expect(unlistedServicesSaid(unlistedServices(["orders", "products"], ["orders", "products", "shipping"]))).toEqual({
      refused: false,
      message: "the contracts declare shipping, a service with no services/shipping/main.ts and no entry in tools/services.ts yet: npm start does not start it",
    });
  });

  it("has npm start refuse a listed service the contracts give no NATS user (no stream, no subscription: gRPC alone), naming it", () => {
    expect(servicesWithoutNatsUserSaid(natsAuthorization.services.map((u) => u.name))).toBeUndefined();
    expect(servicesWithoutNatsUserSaid(["orders", "products"], ["products", "orders", "billing"])).toBe(
      'tools/services.ts lists billing, which has no NATS user in gen/ts/concord_nats.ts: no proto package of that name (shop.billing.v1) declares a stream or a (concord.v1.subscribe), ' +
        "and every service connects to NATS as a user of its own, so a service of gRPC alone cannot start; " +
        'declare its events or its subscriptions (README "Adding a service", step 1) and run `npm run gen`, or give the entry its package\'s name',
    );
  });

  it("gives the services default ports that none of `npm start --instances 8`'s instances share", () => {
    // Instance i listens 2 ports above instance i-1, up to 8 instances.
    const ports = services.flatMap((s) => [grpcListenOf(s), s.metricsListen].flatMap((address) => Array.from({ length: 8 }, (_, i) => portOf(address) + 2 * i)));
    const taken = ports.filter((port, i) => ports.indexOf(port) !== i);
    expect(taken, "ports two services' instances would share").toEqual([]);
  });
});
