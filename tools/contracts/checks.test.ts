import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../../test/support/shop.js";
import { repoRoot } from "../repo-root.js";
import { accessAdvice, narrowerAccess, ownerFieldAdvice } from "./access-changes.js";
import { breakingAdvice, breakingChanges, lintContracts } from "./checks.js";
import { bufBin } from "./image.js";
import { contractEditor } from "../../test/support/edited-contracts.js";
import { readmeProse } from "../../test/support/readme.js";
import { natsAuthorizationOf } from "./nats-permissions.js";
import { printGoEvents } from "./sdk-go.js";
import { readEventsManifest } from "./sdk-manifest.js";
import { printPythonEvents } from "./sdk-python.js";

const productService = "shop/products/v1/product_service.proto";

/** The line (from 1) of `file` where `text` first appears: findings' positions follow the contract as it is edited. */
function lineOf(file: string, text: string): number {
  const line = readFileSync(file, "utf8").split("\n").findIndex((l) => l.includes(text)) + 1;
  if (line === 0) throw new Error(`${file} holds no ${JSON.stringify(text)}`);
  return line;
}

/** A copy of proto/ with one file edited. */
function editedContracts(dir: string, file: string, edit: (text: string) => string): string {
  const copy = join(dir, `proto-${Math.random().toString(36).slice(2)}`);
  cpSync(join(repoRoot, "proto"), copy, { recursive: true });
  writeFileSync(join(copy, file), edit(readFileSync(join(copy, file), "utf8")));
  return copy;
}

/** A copy of this work tree at `clone`, without its git history or builds, running its own tools on the repository's node_modules. */
function copyOfWorkTree(clone: string): void {
  cpSync(repoRoot, clone, { recursive: true, filter: (path) => ![".git", "node_modules", "dist", ".data"].some((skip) => path === join(repoRoot, skip)) });
  symlinkSync(join(repoRoot, "node_modules"), join(clone, "node_modules"));
}

describe("contract checks", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const { filesOf } = contractEditor(dir.path);

  it("passes buf lint, and fails it on a badly named field", () => {
    expect(lintContracts()).toMatchObject({ ok: true });
    const bad = editedContracts(dir.path, productService, (t) => t.replace("string next_page_token = 2;", "string nextPageToken = 2;"));
    const result = lintContracts(bad);
    expect(result.ok).toBe(false);
    expect(result.output).toBe(`${join(bad, productService)}:${lineOf(join(bad, productService), "nextPageToken")}:10:Field name "nextPageToken" should be lower_snake_case, such as "next_page_token".`);
  });

  it("fails buf lint on an event's broken stream, subject or subscription option, which npm run gen and npm run breaking refuse, naming each by file, line and column", () => {
    const events = "shop/products/v1/product_events.proto";
    const broken = editedContracts(dir.path, events, (t) =>
      t.replace('name: "SHOP_PRODUCTS"', 'name: "shop-products"').replace('subject: "shop.products.v1.product.{product_id}.created"', 'subject: "shop.products.v1.product.{nope}.created"'),
    );
    const service = join(broken, productService);
    writeFileSync(service, readFileSync(service, "utf8").replace('event: "shop.orders.v1.OrderPlaced"', 'event: "OrderPlaced"'));
    // It passed them: only npm run gen and npm run breaking read the Concord options.
    const result = lintContracts(broken);
    expect(result.ok).toBe(false);
    expect(result.output.split("\n")).toEqual([
      `${join(broken, events)}:${lineOf(join(broken, events), "option (concord.v1.stream)")}:1: (concord.v1.stream) name "shop-products" must be upper case letters, digits and underscores, for example "SHOP_ORDERS"`,
      `${join(broken, events)}:${lineOf(join(broken, events), "message ProductCreated {")}:1: message shop.products.v1.ProductCreated: (concord.v1.event) subject "shop.products.v1.product.{nope}.created" names {nope}, which is not a field of ProductCreated (fields: product_id, product)`,
      `${service}:${lineOf(service, "service ProductService {")}:1: service shop.products.v1.ProductService: (concord.v1.subscribe) #1 (event "OrderPlaced"): no message OrderPlaced exists; did you mean shop.orders.v1.OrderPlaced? Name the event by its full name, and import its file`,
    ]);
  });

  it("refuses a request's list, map or FieldMask with no bound on its size, at any depth, naming the field and how to bound it", () => {
    const unbounded = editedContracts(dir.path, productService, (t) =>
      t
        .replace("    max_items: 100\n", "")
        // An expression with || bounds nothing: the size test may be passed over.
        .replace("size(this.paths) <= 3 && size(this.paths) > 0", "(size(this.paths) <= 3 || size(this.paths) > 0)")
        .replace("  string page_token = 2 [(buf.validate.field).string.max_len = 200];\n}", "  string page_token = 2 [(buf.validate.field).string.max_len = 200];\n  // Labels.\n  map<string, string> labels = 3;\n}"),
    );
    const money = "shop/common/v1/money.proto";
    writeFileSync(join(unbounded, money), readFileSync(join(unbounded, money), "utf8").replace(/\n}\n$/, "\n  // Notes, held in every request with a price.\n  repeated string notes = 3 [(buf.validate.field).repeated.items.string.max_len = 10];\n}\n"));
    const result = lintContracts(unbounded);
    expect(result.ok).toBe(false);
    const findings = result.output.split("\n");
    expect(findings).toHaveLength(4);
    expect(findings[0]).toBe(
      `${join(unbounded, money)}:19:3:Field "notes" of message "shop.common.v1.Money", at price.notes in the request of shop.products.v1.ProductService.CreateProduct: a repeated field with no max_items; ` +
        "a request could hold any number of items, each checked by the contract's rules before it is refused. Bound it: (buf.validate.field).repeated.max_items = <the most a caller needs>",
    );
    expect(findings[1]).toMatch(new RegExp(`^${join(unbounded, productService)}:${lineOf(join(unbounded, productService), "repeated string ids = 1")}:3:Field "ids" of message "shop.products.v1.BatchGetProductsRequest", at ids in the request of shop.products.v1.ProductService.BatchGetProducts: a repeated field with no max_items;`));
    expect(findings[2]).toContain(`${productService}:${lineOf(join(unbounded, productService), "FieldMask update_mask = 3")}:3:Field "update_mask" of message "shop.products.v1.UpdateProductRequest", at update_mask in the request of shop.products.v1.ProductService.UpdateProduct: a google.protobuf.FieldMask with no bound on its paths;`);
    expect(findings[2]).toContain('begin its (buf.validate.field).cel expression with "size(this.paths) <= <N> && "');
    expect(findings[3]).toContain(`${productService}:${lineOf(join(unbounded, productService), "labels = 3")}:3:Field "labels" of message "shop.products.v1.ListProductsRequest", at labels in the request of shop.products.v1.ProductService.ListProducts: a map with no max_pairs;`);
  });

  it("npm run gen and gen:check refuse a request's list with no bound on its size, naming it, and write nothing", () => {
    const clone = join(dir.path, "gen-repo");
    copyOfWorkTree(clone);
    const service = join(clone, "proto", productService);
    writeFileSync(service, readFileSync(service, "utf8").replace("    max_items: 100\n", ""));
    const before = readFileSync(join(clone, "gen", "ts", "descriptor_set.ts"), "utf8");
    const idsLine = lineOf(service, "repeated string ids = 1");
    for (const args of [["--check"], []]) {
      const gen = spawnSync(process.execPath, ["--import", "tsx", "tools/gen.ts", ...args], { cwd: clone, encoding: "utf8", timeout: 120_000 });
      expect(gen.status, args.join(" ")).toBe(1);
      expect(gen.stderr).toMatch(new RegExp(String.raw`^1 contract problem:\n {2}- proto\/shop\/products\/v1\/product_service\.proto:${idsLine}:3:Field "ids" of message "shop\.products\.v1\.BatchGetProductsRequest", at ids in the request of shop\.products\.v1\.ProductService\.BatchGetProducts: a repeated field with no max_items; .* Bound it: \(buf\.validate\.field\)\.repeated\.max_items = <the most a caller needs>\n$`));
    }
    expect(readFileSync(join(clone, "gen", "ts", "descriptor_set.ts"), "utf8")).toBe(before);
  }, 240_000);

  it("npm run gen names an event's contract problem by its file from the repository's root, line and column, as npm run breaking names it, and writes nothing", () => {
    const clone = join(dir.path, "gen-event-repo");
    copyOfWorkTree(clone);
    const events = join(clone, "proto", "shop", "products", "v1", "product_events.proto");
    const text = readFileSync(events, "utf8");
    writeFileSync(events, text.replace('subject: "shop.products.v1.product.{product_id}.created"', 'subject: "shop.products.v1.product.{nope}.created"'));
    const line = text.slice(0, text.indexOf("message ProductCreated {")).split("\n").length;
    const gen = spawnSync(process.execPath, ["--import", "tsx", "tools/gen.ts"], { cwd: clone, encoding: "utf8", timeout: 120_000 });
    expect(gen.status).toBe(1);
    expect(gen.stderr).toBe(
      `1 contract problem:\n  - proto/shop/products/v1/product_events.proto:${line}:1: message shop.products.v1.ProductCreated: (concord.v1.event) subject "shop.products.v1.product.{nope}.created" names {nope}, which is not a field of ProductCreated (fields: product_id, product)\n`,
    );
    expect(() => breakingChanges(join(clone, "proto"), join(repoRoot, "proto"))).toThrow(`- ${join(clone, "proto")}/shop/products/v1/product_events.proto:${line}:1: message shop.products.v1.ProductCreated:`);
  }, 240_000);

  it("npm run lint:proto names the files of its findings as they are opened from the repository's root, as npm run breaking does", () => {
    const clone = join(dir.path, "lint-repo");
    copyOfWorkTree(clone);
    const service = join(clone, "proto", productService);
    writeFileSync(service, readFileSync(service, "utf8").replace("string next_page_token = 2;", "string nextPageToken = 2;"));
    const lint = spawnSync(process.execPath, ["--import", "tsx", "tools/buf.ts", "lint"], { cwd: clone, encoding: "utf8", timeout: 60_000 });
    expect(lint.status).toBe(1);
    expect(lint.stderr.trim().split("\n")).toEqual([
      "buf lint found problems:",
      `proto/${productService}:${lineOf(service, "nextPageToken")}:10:Field name "nextPageToken" should be lower_snake_case, such as "next_page_token".`,
    ]);
  }, 60_000);

  it("lets compatible changes through and fails buf breaking on wire-incompatible ones, each finding saying what to do instead", () => {
    const added = editedContracts(dir.path, productService, (t) => t.replace("  string next_page_token = 2;\n}", "  string next_page_token = 2;\n  // Added.\n  string sku = 3;\n}"));
    expect(breakingChanges(added, join(repoRoot, "proto"))).toMatchObject({ ok: true });
    const retyped = editedContracts(dir.path, productService, (t) => t.replace("string next_page_token = 2;", "int32 next_page_token = 2;"));
    const result = breakingChanges(retyped, join(repoRoot, "proto"));
    expect(result.ok).toBe(false);
    expect(result.output.split("\n")[0]).toBe(
      `${join(retyped, productService)}:${lineOf(join(retyped, productService), "int32 next_page_token")}:3:Field "2" with name "next_page_token" on message "ListProductsResponse" changed type from "string" to "int32". ` +
        "See https://developers.google.com/protocol-buffers/docs/proto3#updating for wire compatibility rules and https://developers.google.com/protocol-buffers/docs/proto3#json for JSON compatibility rules. " +
        "Instead: add a field of the new type, under a new number and name, beside it; write both while builds that read the old one run, then remove the old one with its number and name reserved.",
    );
    const renumbered = editedContracts(dir.path, productService, (t) => t.replace("repeated Product products = 1;", "repeated Product products = 11;"));
    const moved = breakingChanges(renumbered, join(repoRoot, "proto"));
    expect(moved.ok).toBe(false);
    // Renumbered, the field keeps its name, which a reservation of it would clash with: the advice says to give the number back.
    expect(moved.output).toContain(
      `${join(renumbered, productService)}:${lineOf(join(renumbered, productService), "message BatchGetProductsResponse {")}:1:Previously present field "1" with name "products" on message "BatchGetProductsResponse" was deleted without reserving the number "1". ` +
        'It was renumbered: "products" is now field 11, which running builds skip as unknown, and they find 1 unset. Instead: give it back number 1; to move it, add a field under a new number and a new name beside it, ' +
        'write both while builds that read this one run, then remove it with its number and name reserved (reserved 1; reserved "products";).',
    );
    // Deleted, it is to be reserved under its own number and name.
    const deleted = editedContracts(dir.path, productService, (t) => t.replace(/  \/\/ Free-text description; may be empty\.\n  string description = 3 [^\n]*\n/, ""));
    const gone = breakingChanges(deleted, join(repoRoot, "proto"));
    expect(gone.ok).toBe(false);
    expect(gone.output.split("\n").slice(0, 2)).toEqual(
      ["name", "number"].map(
        (what) =>
          `${join(deleted, productService)}:${lineOf(join(deleted, productService), "message Product {")}:1:Previously present field "3" with name "description" on message "Product" was deleted without reserving the ${what} "${what === "name" ? "description" : "3"}". ` +
          'Instead: keep it until no running build reads it, then remove it with its number and name reserved (reserved 3; reserved "description";).',
      ),
    );
  });

  it("names the reserved lines of an enum value deleted, and says a value renumbered, whose name the enum still uses, is to be given its number back", () => {
    const orderService = "shop/orders/v1/order_service.proto";
    const at = (copy: string) => `${join(copy, orderService)}:78:1:Previously present enum value "4" on enum "OrderState" was deleted`;
    const renumbered = editedContracts(dir.path, orderService, (t) => t.replace("  ORDER_STATE_CANCELLED = 4;", "  ORDER_STATE_CANCELLED = 5;"));
    expect(breakingChanges(renumbered, join(repoRoot, "proto")).output.split("\n")).toContain(
      `${at(renumbered)} without reserving the number "4". It was renumbered: ORDER_STATE_CANCELLED is now 5, a value running builds do not know, and they send 4 for it. ` +
        'Instead: give it back number 4; a value under a new number takes a new name, beside it; once no running build sends or reads this one, remove it with its number and name reserved (reserved 4; reserved "ORDER_STATE_CANCELLED";).',
    );
    const deleted = editedContracts(dir.path, orderService, (t) => t.replace(/  \/\/ Withdrawn by the customer[^\n]*\n  ORDER_STATE_CANCELLED = 4;\n/, ""));
    expect(breakingChanges(deleted, join(repoRoot, "proto")).output.split("\n")).toContain(
      `${at(deleted)} without reserving the number "4". Instead: keep the value until no running build sends or reads it, then remove it with its number and name reserved (reserved 4; reserved "ORDER_STATE_CANCELLED";).`,
    );
  });

  it("refuses a breaking: ignore path that names no contract file or folder, which ignores nothing, saying its paths are relative to proto/", () => {
    const deleted = editedContracts(dir.path, productService, (t) => t.replace(/  \/\/ Free-text description; may be empty\.\n  string description = 3 [^\n]*\n/, ""));
    // As the findings name the file: from the repository's root, where buf.yaml's paths start at proto/.
    const result = breakingChanges(deleted, join(repoRoot, "proto"), undefined, ["buf/validate", "google", `proto/${productService}`]);
    expect(result.ok).toBe(false);
    expect(result.output.split("\n")).toContain(
      `buf.yaml: breaking: ignore lists proto/${productService}, which is no file or folder of the contracts, so it ignores nothing: its paths are relative to proto/ (${productService})`,
    );
  });

  it("fails buf breaking on an RPC or a service removed, which the callers of the running version still call", () => {
    const noRpc = editedContracts(dir.path, productService, (t) => t.replace(/  \/\/ Adds a signed delta[\s\S]*?rpc AdjustStock\([\s\S]*?\n  }\n/, ""));
    const result = breakingChanges(noRpc, join(repoRoot, "proto"));
    expect(result.ok).toBe(false);
    expect(result.output).toContain(
      `${productService}:15:1:Previously present RPC "AdjustStock" on service "ProductService" was deleted. ` +
        "Instead: add the new RPC (or service) beside it, move its callers, then remove the old one in a commit that lists its file under breaking: ignore.",
    );
    const noService = editedContracts(dir.path, productService, (t) => t.slice(0, t.indexOf("// ProductService owns")) + t.slice(t.indexOf("// A product that can be ordered.")));
    const gone = breakingChanges(noService, join(repoRoot, "proto"));
    expect(gone.ok).toBe(false);
    expect(gone.output).toContain('Previously present service "ProductService" was deleted from package "shop.products.v1".');
  });

  it('takes the next version of a package beside the last, as README "Breaking changes" has it: shop.products.v2 with a field retyped passes npm run breaking, and its stream and events are the product service\'s', () => {
    const copy = join(dir.path, "proto-v2");
    cpSync(join(repoRoot, "proto"), copy, { recursive: true });
    mkdirSync(join(copy, "shop", "products", "v2"));
    const v2 = (file: string, edit: (text: string) => string) => {
      const text = readFileSync(join(copy, "shop", "products", "v1", file), "utf8").replaceAll("shop.products.v1", "shop.products.v2").replaceAll("shop/products/v1/", "shop/products/v2/");
      writeFileSync(join(copy, "shop", "products", "v2", file), edit(text));
    };
    // The service without v1's subscriptions, which stay on v1's service; stock an int64 where v1 has an int32.
    v2("product_service.proto", (t) => t.replace(/  \/\/ [^\n]*\n  option \(concord\.v1\.subscribe\) = \{[^}]*\};\n/g, "").replace("int32 stock = 5 [(buf.validate.field).int32 = {", "int64 stock = 5 [(buf.validate.field).int64 = {"));
    v2("product_events.proto", (t) => t.replace('name: "SHOP_PRODUCTS"', 'name: "SHOP_PRODUCTS_V2"'));
    expect(breakingChanges(copy, join(repoRoot, "proto"))).toMatchObject({ ok: true });
    const files = filesOf(copy);
    const manifest = readEventsManifest(files);
    const auth = natsAuthorizationOf(manifest);
    expect(auth.streamSources).toMatchObject({ SHOP_PRODUCTS: "products", SHOP_PRODUCTS_V2: "products" });
    expect(auth.services.map((user) => user.name)).toEqual(["orders", "products"]);
    expect(auth.services.find((user) => user.name === "products")!.events).toEqual(expect.arrayContaining(["shop.products.v1.product.*.created", "shop.products.v2.product.*.created"]));
    // The SDKs keep v1's event names; v2's take their package.
    const go = printGoEvents("concord/gen/go", manifest, files);
    expect(go).toMatch(/^\tProductCreatedTypeName\s+= "shop\.products\.v1\.ProductCreated"$/m);
    expect(go).toMatch(/^\tShopProductsV2ProductCreatedTypeName\s+= "shop\.products\.v2\.ProductCreated"$/m);
    const python = printPythonEvents(manifest, files);
    expect(python).toMatch(/^PRODUCT_CREATED_TYPE_NAME = "shop\.products\.v1\.ProductCreated"$/m);
    expect(python).toMatch(/^SHOP_PRODUCTS_V2_PRODUCT_CREATED_TYPE_NAME = "shop\.products\.v2\.ProductCreated"$/m);
    // Once v1's service goes, its subscriptions move to v2's under the same durables, which takes nothing from the consumers.
    const subscriptions = /  \/\/ [^\n]*\n  option \(concord\.v1\.subscribe\) = \{[^}]*\};\n/g;
    const v1Service = join(copy, "shop", "products", "v1", "product_service.proto");
    const v2Service = join(copy, "shop", "products", "v2", "product_service.proto");
    const moved = readFileSync(v1Service, "utf8").match(subscriptions)!;
    expect(moved).toHaveLength(4);
    writeFileSync(v1Service, readFileSync(v1Service, "utf8").replace(subscriptions, ""));
    writeFileSync(v2Service, readFileSync(v2Service, "utf8").replace("service ProductService {\n", `service ProductService {\n${moved.join("")}`));
    expect(breakingChanges(copy, join(repoRoot, "proto"))).toMatchObject({ ok: true });
    const durables = (user: { consumers: ReadonlyArray<{ durable: string }> }) => user.consumers.map((c) => c.durable);
    expect(durables(natsAuthorizationOf(readEventsManifest(filesOf(copy))).services.find((user) => user.name === "products")!)).toEqual(durables(auth.services.find((user) => user.name === "products")!));
    const prose = readmeProse();
    const section = prose.slice(prose.indexOf("### Breaking changes"), prose.indexOf("### Adding a service"));
    for (const said of ["proto/shop/products/v2/", "shop.products.v2", "SHOP_PRODUCTS_V2", "shop.products.v2.>", "host.server.addService", "grpcService", "ShopProductsV2ProductCreatedTypeName", "SHOP_PRODUCTS_V2_PRODUCT_CREATED_TYPE_NAME", "under the same durables"]) {
      expect(section).toContain(said);
    }
  });

  it("fails npm run breaking on a method's access narrowed, which refuses the running callers with PERMISSION_DENIED, and passes it widened", () => {
    const batchGet = 'rpc BatchGetProducts(BatchGetProductsRequest) returns (BatchGetProductsResponse) {\n    option (concord.v1.access) = { roles: ["admin", "service", "customer"] };';
    const withAccess = (access: string) => editedContracts(dir.path, productService, (t) => t.replace(batchGet, batchGet.replace('{ roles: ["admin", "service", "customer"] }', access)));
    const at = `${productService}:51:3:RPC "shop.products.v1.ProductService.BatchGetProducts"`;
    const refused = `a running caller's call could be refused with PERMISSION_DENIED. ${accessAdvice}`;
    const narrower = withAccess('{ roles: ["admin", "customer"] }');
    expect(breakingChanges(narrower, join(repoRoot, "proto"))).toEqual({ ok: false, output: `${join(narrower, at)}: role "service" may no longer call it; ${refused}\n\n${breakingAdvice}` });
    const [now, then] = [filesOf(withAccess('{ roles: ["admin"] owner_roles: ["customer", "service"] }')), filesOf(join(repoRoot, "proto"))];
    expect(narrowerAccess(now, then)).toEqual([`${at}: role "service", "customer" may now call it only on what it owns; ${refused}`]);
    expect(narrowerAccess(then, now), "widened").toEqual([]);
    const closed = filesOf(editedContracts(dir.path, productService, (t) => t.replace(batchGet, batchGet.replace(/\n    option \(concord\.v1\.access\)[^\n]*/, ""))));
    expect(narrowerAccess(closed, then)).toEqual([`${productService}:51:3:RPC "shop.products.v1.ProductService.BatchGetProducts": its (concord.v1.access) option is gone, so no one may call it; ${refused}`]);
    expect(narrowerAccess(then, closed), "opened to callers").toEqual([]);
    expect(narrowerAccess(closed, then, [productService])).toEqual([]);
    const orderService = "shop/orders/v1/order_service.proto";
    const owner = filesOf(editedContracts(dir.path, orderService, (t) => t.replace('owner_roles: ["customer"] owner_field: "customer_id" };\n  }\n  // Returns one order', 'owner_roles: ["customer"] owner_field: "request_id" };\n  }\n  // Returns one order')));
    expect(narrowerAccess(owner, then)).toEqual([
      `${orderService}:49:3:RPC "shop.orders.v1.OrderService.CreateOrder": owner_field changed from "customer_id" to "request_id", which cannot be proved looser; ${refused}`,
    ]);
    // Where the handler judged ownership from stored data, the server now refuses a customer's call whose id field is not its own id.
    const getOrder = 'rpc GetOrder(GetOrderRequest) returns (GetOrderResponse) {\n    option (concord.v1.access) = { roles: ["admin"] owner_roles: ["customer"]';
    const ownerAdded = filesOf(editedContracts(dir.path, orderService, (t) => t.replace(getOrder, `${getOrder} owner_field: "id"`)));
    expect(narrowerAccess(ownerAdded, then)).toEqual([
      `${orderService}:53:3:RPC "shop.orders.v1.OrderService.GetOrder": owner_field "id" was added, so role "customer" may call it only with its own id in that field; a running caller's call could be refused with PERMISSION_DENIED. ${ownerFieldAdvice}`,
    ]);
    expect(narrowerAccess(then, ownerAdded), "owner_field removed leaves the check to the handler").toEqual([]);
  });

  it("npm run breaking fails on a revision that is no commit, named or in BREAKING_AGAINST, rather than passing having compared nothing", () => {
    const breaking = (args: string[], env: NodeJS.ProcessEnv = {}) =>
      spawnSync(process.execPath, ["--import", "tsx", "tools/buf.ts", "breaking", ...args], { cwd: repoRoot, encoding: "utf8", timeout: 30_000, env: { ...process.env, ...env } });
    const named = breaking(["no-such-revision"]);
    expect(named.status).toBe(2);
    expect(named.stderr).toContain('buf breaking: no commit "no-such-revision" in this repository; name a branch, tag or commit');
    const fromEnv = breaking([], { BREAKING_AGAINST: "no-such-revision" });
    expect(fromEnv.status).toBe(2);
    expect(fromEnv.stderr).toContain('buf breaking: no commit "no-such-revision" (BREAKING_AGAINST) in this repository');
  });

  it("npm run breaking fails in a shallow clone that lacks HEAD~1 (a CI checkout of one commit), where it passed having compared nothing, and passes in a repository of one commit", () => {
    const origin = join(dir.path, "origin");
    copyOfWorkTree(origin);
    const git = (cwd: string, ...args: string[]) => execFileSync("git", ["-c", "user.name=t", "-c", "user.email=t@t", ...args], { cwd, encoding: "utf8" }).trim();
    git(origin, "init", "-q");
    git(origin, "add", "-A");
    git(origin, "commit", "-qm", "the contracts");
    const breaking = (cwd: string) => spawnSync(process.execPath, ["--import", "tsx", "tools/buf.ts", "breaking"], { cwd, encoding: "utf8", timeout: 60_000 });
    const first = breaking(origin);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toContain("buf breaking: HEAD~1 does not exist (first commit?); nothing to compare against");

    const money = join(origin, "proto", "shop", "common", "v1", "money.proto");
    writeFileSync(money, readFileSync(money, "utf8").replace("string currency_code = 1", "bytes currency_code = 1"));
    git(origin, "commit", "-qam", "currency_code as bytes");
    const shallow = join(dir.path, "shallow");
    git(dir.path, "clone", "-q", "--depth", "1", `file://${origin}`, shallow);
    symlinkSync(join(repoRoot, "node_modules"), join(shallow, "node_modules"));
    const result = breaking(shallow);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("buf breaking: HEAD~1 is not in this clone, which is shallow");
    expect(result.stderr).toContain("git fetch --deepen=1");
    git(shallow, "fetch", "-q", "--deepen=1");
    expect(breaking(shallow).stderr).toContain('Field "1" with name "currency_code" on message "Money" changed type from "string" to "bytes"');
  }, 120_000);

  it("npm run breaking -- --help and npm run lint:proto -- --help print the usage, exit 0, and an option breaking does not take is refused, where --help was taken for a revision", () => {
    const buf = (args: string[]) => spawnSync(process.execPath, ["--import", "tsx", "tools/buf.ts", ...args], { cwd: repoRoot, encoding: "utf8", timeout: 30_000 });
    for (const args of [["breaking", "--help"], ["lint", "-h"]]) {
      const help = buf(args);
      expect(help.status, args.join(" ")).toBe(0);
      expect(help.stdout, args.join(" ")).toMatch(/^Usage: npm run lint:proto\n {7}npm run breaking \[-- REVISION\]\n/);
    }
    const unknown = buf(["breaking", "--against", "main"]);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toBe("buf breaking: unknown option --against (`npm run breaking -- --help` shows the usage)\n");
    // An argument it does not take printed the usage alone.
    const extra = buf(["lint", "proto/shop/orders/v1/order_service.proto"]);
    expect(extra.status).toBe(2);
    expect(extra.stderr.split("\n")[0]).toBe("buf: lint takes no arguments, got proto/shop/orders/v1/order_service.proto");
    expect(buf(["breaking", "main", "HEAD"]).stderr.split("\n")[0]).toBe("buf: breaking takes one REVISION at most, got main HEAD");
  }, 90_000);

  it("npm run breaking says what it compared: proto/ at HEAD, or the work tree's with its uncommitted files named, against the revision, whose name no shell reads", () => {
    // A copy of this work tree in a repository of its own, whose commits the test makes, running its own tools/buf.ts.
    const clone = join(dir.path, "repo");
    copyOfWorkTree(clone);
    const git = (...args: string[]) => execFileSync("git", ["-c", "user.name=t", "-c", "user.email=t@t", ...args], { cwd: clone, encoding: "utf8" }).trim();
    git("init", "-q");
    git("add", "-A");
    git("commit", "-qm", "the contracts");
    const breaking = (...args: string[]) => spawnSync(process.execPath, ["--import", "tsx", "tools/buf.ts", "breaking", ...args], { cwd: clone, encoding: "utf8", timeout: 60_000 });
    const money = join(clone, "proto", "shop", "common", "v1", "money.proto");
    writeFileSync(money, readFileSync(money, "utf8").replace("// An amount of money", "// A sum of money"));
    git("commit", "-qam", "a comment");
    const [head, previous] = [git("rev-parse", "--short", "HEAD"), git("rev-parse", "--short", "HEAD~1")];
    const clean = breaking();
    expect(clean.stdout.trim()).toBe(`buf breaking: no incompatible changes in proto/ at HEAD (${head}) against HEAD~1 (${previous})`);

    writeFileSync(money, readFileSync(money, "utf8").replace("string currency_code = 1", "bytes currency_code = 1").replace("lte: 100000000000000", "lte: 100000000000"));
    const dirty = breaking();
    expect(dirty.status).toBe(1);
    expect(dirty.stderr.split("\n")[0]).toBe(
      `buf breaking: incompatible changes in proto/ as the work tree holds it, uncommitted changes to proto/shop/common/v1/money.proto included, against HEAD~1 (${previous}): ` +
        "the changes committed since HEAD~1 and the uncommitted ones together (npm run breaking -- HEAD compares the uncommitted ones alone):",
    );
    // Its findings name their files as they are opened from the repository's root, buf's as well as its own.
    const [bufs, own] = dirty.stderr.split("\n").slice(1, 3);
    expect(bufs).toMatch(/^proto\/shop\/common\/v1\/money\.proto:12:3:Field "1" with name "currency_code" on message "Money" changed type from "string" to "bytes"\./);
    expect(own).toMatch(/^proto\/shop\/common\/v1\/money\.proto:14:3:Field "amount_minor" of message "shop\.common\.v1\.Money": \(buf\.validate\.field\)\.int64 bound narrowed/);
    const alone = breaking("HEAD");
    expect(alone.status).toBe(1);
    expect(alone.stderr.split("\n")[0]).toBe(`buf breaking: incompatible changes in proto/ as the work tree holds it, uncommitted changes to proto/shop/common/v1/money.proto included, against HEAD (${head}):`);

    // A branch's name is no shell code: this one ran touch when a shell took the revision.
    const branch = "old$(touch${IFS}touched)";
    git("branch", branch, "HEAD~1");
    const named = breaking(branch);
    expect(named.stderr.split("\n")[0]).toContain(`against ${branch} (${previous}): the changes committed since`);
    expect(existsSync(join(clone, "touched"))).toBe(false);

    // An event removed is named where the revision declared it, saying so: the work tree's file has another line there.
    const orderEvents = join(clone, "proto", "shop", "orders", "v1", "order_events.proto");
    const events = readFileSync(orderEvents, "utf8");
    const rejected = events.slice(events.lastIndexOf("\n\n", events.indexOf("message OrderRejected {")), events.indexOf("\n}\n", events.indexOf("message OrderRejected {")) + 2);
    const line = events.slice(0, events.indexOf("message OrderRejected {")).split("\n").length;
    writeFileSync(orderEvents, events.replace(rejected, ""));
    const removed = breaking("HEAD");
    expect(removed.status).toBe(1);
    expect(removed.stderr).toContain(`\nproto/shop/orders/v1/order_events.proto:${line}:1:Event "shop.orders.v1.OrderRejected" (declared there in HEAD) was removed or renamed (consumers take events by this name, their ce-type);`);
  }, 120_000);
});

describe("buf run alone on proto/", () => {
  // proto/ imports buf/validate/validate.proto, which the npm scripts take from an npm package into the image they
  // hand buf. Run alone, buf lint, build and breaking printed "imported file does not exist" and "cannot find
  // `buf.validate.field` in this scope" on every contract file, naming nothing to run instead.
  it.each([["lint"], ["build"], ["breaking", "--against", ".git#ref=HEAD"]])("buf %s fails naming the npm scripts to run instead", (...args) => {
    const result = spawnSync(bufBin, args, { cwd: repoRoot, encoding: "utf8" });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain("run npm run lint:proto, npm run breaking or npm run gen");
    expect(result.stderr).not.toContain("imported file does not exist");
  });

  it("leaves npm run lint:proto and npm run breaking to read buf.yaml's rules", () => {
    const lint = spawnSync("npm", ["run", "-s", "lint:proto"], { cwd: repoRoot, encoding: "utf8" });
    expect(lint.stderr).toBe("");
    expect(lint.stdout).toContain("buf lint: the contracts pass");
    const breaking = spawnSync("npm", ["run", "-s", "breaking", "--", "HEAD"], { cwd: repoRoot, encoding: "utf8" });
    expect(breaking.stderr).toBe("");
    expect(breaking.stdout).toContain("buf breaking: no incompatible changes");
  }, 120_000);
});
