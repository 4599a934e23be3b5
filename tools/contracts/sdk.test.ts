import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTempDir } from "../../test/support/temp-dir.js";
import { eventHeaders } from "../../platform/events/index.js";
import { repoRoot } from "../repo-root.js";
import { buildImage } from "./image.js";
import { generateSdks } from "./sdk.js";
import { printGoEvents } from "./sdk-go.js";
import { loadImageFiles, readEventsManifest, type EventsManifest } from "./sdk-manifest.js";
import { printPythonEvents } from "./sdk-python.js";
import { goPlugins, pythonGenerator, venvPython } from "./sdk-tools.js";
import { listFiles } from "./files.js";

/** Files that differ between two trees, missing ones included. */
function differingFiles(a: string, b: string): string[] {
  const left = listFiles(a);
  const right = listFiles(b);
  const all = [...new Set([...left, ...right])].sort();
  return all.filter((f) => !left.includes(f) || !right.includes(f) || !readFileSync(join(a, f)).equals(readFileSync(join(b, f))));
}


describe("generateSdks", () => {
  const tmp = createTempDir("concord-sdk-test-");
  const image = join(tmp.path, "image.binpb");
  const first = join(tmp.path, "first");
  const second = join(tmp.path, "second");
  let manifest: EventsManifest;

  beforeAll(() => {
    buildImage(join(repoRoot, "proto"), image);
    generateSdks(image, first);
    generateSdks(image, second);
    manifest = JSON.parse(readFileSync(join(first, "events.json"), "utf8")) as EventsManifest;
  }, 120_000);
  afterAll(() => tmp.remove());

  it("writes the same bytes every time, with no absolute path or temporary name in them", () => {
    expect(differingFiles(first, second)).toEqual([]);
    for (const file of listFiles(first)) {
      const text = readFileSync(join(first, file), "utf8");
      expect(text.includes(tmp.path) || text.includes(repoRoot) || /concord-sdk-/.test(text), file).toBe(false);
    }
  });

  it("writes a Go module, the Python packages and the manifest", () => {
    const files = listFiles(first);
    expect(files).toEqual(expect.arrayContaining(["events.json", "go/go.mod", "go/go.sum", "go/concordevents/events.go", "go/shop/orders/v1/order_service_grpc.pb.go", "python/concord_events.py", "python/requirements.txt", "python/shop/orders/v1/order_service_pb2_grpc.py", "python/buf/validate/validate_pb2.py", "python/shop/__init__.py"]));
    // Only files that declare a service get grpc stubs.
    expect(files.filter((f) => f.endsWith("_pb2_grpc.py")).sort()).toEqual(["python/shop/orders/v1/order_service_pb2_grpc.py", "python/shop/products/v1/product_service_pb2_grpc.py"]);
    expect(readFileSync(join(first, "go/shop/orders/v1/order_service.pb.go"), "utf8")).toContain('_ "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"');
  });

  it("reads every event, stream and subscription of the contracts into events.json, defaults applied", () => {
    expect(manifest.streams.map((s) => s.name)).toEqual(["SHOP_ORDERS", "SHOP_PRODUCTS"]);
    expect(manifest.streams[0]).toMatchObject({ subjects: ["shop.orders.v1.>"], storage: "file", replicas: 3, maxAgeMs: 30 * 24 * 3_600_000, duplicateWindowMs: 120_000, file: "shop/orders/v1/order_events.proto" });
    expect(manifest.events.find((e) => e.type === "shop.orders.v1.OrderPlaced")).toMatchObject({
      stream: "SHOP_ORDERS",
      subjectTemplate: "shop.orders.v1.order.{order_id}.placed",
      filterSubject: "shop.orders.v1.order.*.placed",
      tokens: [{ field: "order_id", type: "string" }],
    });
    expect(manifest.subscriptions.find((s) => s.durable === "products-order-placed")).toEqual({
      service: "shop.products.v1.ProductService",
      event: "shop.orders.v1.OrderPlaced",
      durable: "products-order-placed",
      stream: "SHOP_ORDERS",
      filterSubject: "shop.orders.v1.order.*.placed",
      maxDeliver: 5,
      backoffMs: [1_000, 5_000, 30_000],
      ackWaitMs: 5_000,
    });
    expect(manifest.events.map((e) => e.type)).toEqual([...manifest.events.map((e) => e.type)].sort());
  });

  it("has left in gen/go a Go module that go build and go vet accept", () => {
    // The committed module rather than the fresh one, whose new path would miss Go's build cache.
    const options = { cwd: join(repoRoot, "gen/go"), env: { ...process.env, GOWORK: "off", GOFLAGS: "-mod=readonly" }, stdio: "pipe" as const };
    execFileSync("go", ["build", "./..."], options);
    execFileSync("go", ["vet", "./..."], options);
  }, 120_000);

  it("writes Python whose subject builder refuses unsafe token values", () => {
    const script = [
      "import concord_events as ce, json",
      "from shop.orders.v1 import order_service_pb2_grpc, order_events_pb2",
      "refused = []",
      "for bad in ['', 'a.b', 'a*', 'a>', 'a b']:",
      "    try: ce.order_placed_subject(bad)",
      "    except ce.SubjectTokenError: refused.append(bad)",
      "m = order_events_pb2.OrderPlaced(order_id='o-1')",
      "print(json.dumps({'subject': ce.order_placed_subject('o-1'), 'refused': refused, 'of': ce.subject_of(m), 'decoded': ce.decode(ce.ORDER_PLACED_TYPE_NAME, m.SerializeToString()).order_id}))",
    ].join("\n");
    const out = execFileSync(venvPython, ["-c", script], { env: { ...process.env, PYTHONPATH: join(first, "python"), PYTHONDONTWRITEBYTECODE: "1" } });
    expect(JSON.parse(out.toString())).toEqual({ subject: "shop.orders.v1.order.o-1.placed", refused: ["", "a.b", "a*", "a>", "a b"], of: "shop.orders.v1.order.o-1.placed", decoded: "o-1" });
  });

  it("names every header the TypeScript services write on an event, in Go and in Python", () => {
    const go = readFileSync(join(first, "go/concordevents/events.go"), "utf8");
    const python = readFileSync(join(first, "python/concord_events.py"), "utf8");
    const goNames = new Set([...go.matchAll(/^\tHeader\w+\s+= "([^"]+)"$/gm)].map((m) => m[1]));
    const pythonNames = new Set([...python.matchAll(/^HEADER_\w+ = "([^"]+)"$/gm)].map((m) => m[1]));
    for (const header of [...Object.values(eventHeaders), "Nats-Msg-Id"]) {
      expect(goNames.has(header), `Go constant for ${header}`).toBe(true);
      expect(pythonNames.has(header), `Python constant for ${header}`).toBe(true);
    }
  });
});

describe("the SDK event printers", () => {
  const tmp = createTempDir("concord-sdk-printers-");
  afterAll(() => tmp.remove());

  /** Compiles snippets next to the real options.proto, as `npm run gen` compiles proto/. */
  function compile(snippets: Record<string, string>) {
    const dir = join(tmp.path, `protos-${Object.keys(snippets).join("-").replace(/\W/g, "")}`);
    for (const [path, source] of Object.entries(snippets)) {
      mkdirSync(join(dir, path, ".."), { recursive: true });
      writeFileSync(join(dir, path), source);
    }
    mkdirSync(join(dir, "concord/v1"), { recursive: true });
    copyFileSync(join(repoRoot, "proto/concord/v1/options.proto"), join(dir, "concord/v1/options.proto"));
    const image = join(dir, "image.binpb");
    buildImage(dir, image);
    const files = loadImageFiles(readFileSync(image));
    return { files, manifest: readEventsManifest(files) };
  }

  const counter = (pkg: string) => `syntax = "proto3";
package ${pkg};
import "concord/v1/options.proto";
option (concord.v1.stream) = { name: "${pkg.split(".")[0].toUpperCase()}", subjects: ["${pkg.split(".")[0]}.>"] };
message Ticked {
  option (concord.v1.event) = { subject: "${pkg.split(".")[0]}.counter.{counter_id}.{seq}.{live}.ticked" };
  string counter_id = 1;
  int64 seq = 2;
  bool live = 3;
}
`;
  const { files, manifest } = compile({ "alpha/v1/a.proto": counter("alpha.v1"), "beta/v1/b.proto": counter("beta.v1") });

  it("types subject parameters by field and formats numbers and bools as the TypeScript runtime does", () => {
    const go = printGoEvents("example.com/sdk", manifest, files);
    expect(go).toContain("func AlphaV1TickedSubject(counterID string, seq int64, live bool) (string, error) {");
    expect(go).toContain('[]string{counterID, fmt.Sprint(seq), fmt.Sprint(live)}');
    expect(go).toContain('alphav1 "example.com/sdk/alpha/v1"');
    const python = printPythonEvents(manifest, files);
    expect(python).toContain("def alpha_v1_ticked_subject(counter_id: str, seq: int, live: bool) -> str:");
    expect(python).toContain('("true" if value else "false") if isinstance(value, bool)');
  });

  it("qualifies event names by package where two packages share one", () => {
    const go = printGoEvents("example.com/sdk", manifest, files);
    expect(go).toContain("AlphaV1TickedTypeName");
    expect(go).toContain("BetaV1TickedTypeName");
    expect(printPythonEvents(manifest, files)).toContain("BETA_V1_TICKED_TYPE_NAME = ");
  });

  it("keeps an event's names when the next version of its package declares one of the same name: the earlier version's stay short, the later one's are qualified", () => {
    const version = (v: string) => `syntax = "proto3";
package alpha.${v};
import "concord/v1/options.proto";
option (concord.v1.stream) = { name: "ALPHA_${v.toUpperCase()}", subjects: ["alpha.${v}.>"] };
message Ticked {
  option (concord.v1.event) = { subject: "alpha.${v}.counter.{counter_id}.ticked" };
  string counter_id = 1;
}
`;
    // v10 sorts after v2 as a number, and a pre-release before its release.
    const versions = compile({ "alpha/v1/a.proto": version("v1"), "alpha/v2/a.proto": version("v2"), "alpha/v10/a.proto": version("v10"), "alpha/v2beta1/a.proto": version("v2beta1") });
    const go = printGoEvents("example.com/sdk", versions.manifest, versions.files);
    const python = printPythonEvents(versions.manifest, versions.files);
    expect([...go.matchAll(/^\t(\w*Ticked)TypeName\s/gm)].map((m) => m[1]).sort()).toEqual(["AlphaV10Ticked", "AlphaV2Beta1Ticked", "AlphaV2Ticked", "Ticked"]);
    expect(go).toMatch(/^\tTickedTypeName\s+= "alpha\.v1\.Ticked"$/m);
    expect([...python.matchAll(/^(\w*TICKED)_TYPE_NAME = "([^"]+)"$/gm)].map((m) => `${m[1]} ${m[2]}`).sort()).toEqual([
      "ALPHA_V10_TICKED alpha.v10.Ticked",
      "ALPHA_V2BETA1_TICKED alpha.v2beta1.Ticked",
      "ALPHA_V2_TICKED alpha.v2.Ticked",
      "TICKED alpha.v1.Ticked",
    ]);
  });

  it("prints Go source that parses", () => {
    const file = join(tmp.path, "events.go");
    writeFileSync(file, printGoEvents("example.com/sdk", manifest, files));
    execFileSync("gofmt", ["-e", "-l", file], { stdio: "pipe" });
  });
});

describe("the pinned SDK generators", () => {
  it("are the versions tools/setup.mjs installs", () => {
    const setup = readFileSync(join(repoRoot, "tools/setup.mjs"), "utf8");
    for (const plugin of goPlugins) expect(setup).toContain(`module: "${plugin.module}", version: "${plugin.version}", versionOutput: "${plugin.versionOutput}"`);
    expect(setup).toContain(`"${pythonGenerator.distribution}==${pythonGenerator.version}"`);
  });
});
