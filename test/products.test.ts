import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkHealth } from "../platform/grpc/index.js";
import { useNatsServer } from "./support/nats-server.js";
import { CreateProductRequest, ProductServiceService, UpdateProductRequest } from "../gen/ts/shop/products/v1/product_service_pb.js";
import { grpcError, rawCall, type RunningProducts, startTestProducts, tempDir } from "./support/shop.js";

const eur = (amountMinor: number) => ({ currencyCode: "EUR", amountMinor });

describe("ProductService", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const nats = useNatsServer();
  let products: RunningProducts;
  beforeAll(async () => {
    products = await startTestProducts(dir.path, nats().url);
  });
  afterAll(async () => {
    await products.stop();
  });
  const create = (name = "Teapot", stock = 10, price = 1999) =>
    products.client.createProduct({ name, description: "Porcelain", price: eur(price), initialStock: stock }).then((r) => r.product!);

  it("creates and reads back a product", async () => {
    const created = await create("Kettle", 5, 4500);
    expect(created.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(created).toMatchObject({ name: "Kettle", stock: 5, version: 1, price: eur(4500) });
    const { product } = await products.client.getProduct({ id: created.id });
    expect(product).toEqual(created);
  });

  it("gets several products in one call, leaving out ids that do not exist", async () => {
    const a = await create("A");
    const b = await create("B");
    const { products: found } = await products.client.batchGetProducts({ ids: [b.id, "01890a5d-ac96-774b-bcce-b302099a8057", a.id] });
    expect(found.map((p) => p.name)).toEqual(["B", "A"]);
    const repeated = await grpcError(products.client.batchGetProducts({ ids: [a.id, a.id] }));
    expect(repeated.violations.map((v) => v.field)).toEqual(["ids"]);
    const malformed = await grpcError(products.client.batchGetProducts({ ids: ["nope"] }));
    expect(malformed.violations.map((v) => v.field)).toEqual(["ids[0]"]);
    const none = await grpcError(products.client.batchGetProducts({ ids: [] }));
    expect(none.violations.map((v) => v.field)).toEqual(["ids"]);
  });

  it("takes ids in upper case as the same ids, as UUIDs compare (RFC 9562), where it answered NOT_FOUND for a product that exists", async () => {
    const p = await create("Tray", 4);
    const upper = p.id.toUpperCase();
    expect((await products.client.getProduct({ id: upper })).product).toEqual(p);
    const { product: adjusted } = await products.client.adjustStock({ id: upper, delta: 2, reason: "count", requestId: undefined });
    expect(adjusted).toMatchObject({ id: p.id, stock: 6 });
    expect((await products.client.batchGetProducts({ ids: [upper] })).products.map((q) => q.id)).toEqual([p.id]);
    // One product named twice, in two cases, is named twice: the list's unique rule refuses it.
    const twice = await grpcError(products.client.batchGetProducts({ ids: [upper, p.id] }));
    expect(twice.violations.map((v) => v.field)).toEqual(["ids"]);
    // A request checked by protovalidate on its bytes (a message-level rule) is checked as it is then served.
    const { product: renamed } = await products.client.updateProduct({ id: upper, expectedVersion: 1, updateMask: ["name"], name: "Platter", description: "", price: undefined });
    expect(renamed).toMatchObject({ id: p.id, name: "Platter", version: 2 });
  });

  it("answers NOT_FOUND for an unknown id and INVALID_ARGUMENT for a malformed one", async () => {
    const missing = await grpcError(products.client.getProduct({ id: "01890a5d-ac96-774b-bcce-b302099a8057" }));
    expect(missing.code).toBe(status.NOT_FOUND);
    const malformed = await grpcError(products.client.getProduct({ id: "not-a-uuid" }));
    expect(malformed.code).toBe(status.INVALID_ARGUMENT);
    expect(malformed.violations.map((v) => v.field)).toEqual(["id"]);
  });

  it("names every bad field of an invalid CreateProduct and stores nothing", async () => {
    const before = await products.client.listProducts({ pageSize: 500, pageToken: "" });
    const err = await grpcError(
      products.client.createProduct({ name: "", description: "x".repeat(2001), price: { currencyCode: "euro", amountMinor: -1 }, initialStock: -3 }),
    );
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    // An empty name breaks two rules: it is too short, and has no visible character.
    expect(err.violations.map((v) => v.field).sort()).toEqual(["description", "initial_stock", "name", "name", "price.amount_minor", "price.currency_code"]);
    expect(err.violations.every((v) => v.description.length > 0)).toBe(true);
    const missingPrice = await grpcError(products.client.createProduct({ name: "x", description: "", price: undefined, initialStock: 0 }));
    expect(missingPrice.violations.map((v) => v.field)).toEqual(["price"]);
    const after = await products.client.listProducts({ pageSize: 500, pageToken: "" });
    expect(after.products.length).toBe(before.products.length);
  });

  it("updates masked fields only, and refuses a stale version with ABORTED", async () => {
    const p = await create("Cup", 3, 500);
    const { product: updated } = await products.client.updateProduct({ id: p.id, expectedVersion: 1, updateMask: ["name", "price"], name: "Mug", description: "ignored", price: eur(650) });
    expect(updated).toMatchObject({ name: "Mug", description: "Porcelain", price: eur(650), version: 2 });
    const stale = await grpcError(products.client.updateProduct({ id: p.id, expectedVersion: 1, updateMask: ["name"], name: "Stale", description: "", price: undefined }));
    expect(stale.code).toBe(status.ABORTED);
    expect((await products.client.getProduct({ id: p.id })).product!.name).toBe("Mug");
  });

  it("refuses an update mask with unknown or missing fields", async () => {
    const p = await create();
    const unknown = await grpcError(products.client.updateProduct({ id: p.id, expectedVersion: 1, updateMask: ["stock"], name: "", description: "", price: undefined }));
    expect(unknown.code).toBe(status.INVALID_ARGUMENT);
    expect(unknown.violations.map((v) => v.field)).toEqual(["update_mask"]);
    const emptyName = await grpcError(products.client.updateProduct({ id: p.id, expectedVersion: 1, updateMask: ["name"], name: "", description: "", price: undefined }));
    expect(emptyName.violations.map((v) => v.field)).toEqual(["name"]);
    const unknownProduct = await grpcError(products.client.updateProduct({ id: "01890a5d-ac96-774b-bcce-b302099a8057", expectedVersion: 1, updateMask: ["name"], name: "x", description: "", price: undefined }));
    expect(unknownProduct.code).toBe(status.NOT_FOUND);
  });

  it("adjusts stock and never lets it go below zero", async () => {
    const p = await create("Saucer", 2);
    const { product: up } = await products.client.adjustStock({ id: p.id, delta: 5, reason: "delivery" });
    // Stock has a version of its own: the catalogue version an editor holds stays valid.
    expect(up).toMatchObject({ stock: 7, version: 1, stockVersion: 2 });
    const err = await grpcError(products.client.adjustStock({ id: p.id, delta: -8, reason: "count" }));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect((await products.client.getProduct({ id: p.id })).product!.stock).toBe(7);
    const zero = await grpcError(products.client.adjustStock({ id: p.id, delta: 0, reason: "" }));
    expect(zero.violations.map((v) => v.field).sort()).toEqual(["delta", "reason"]);
    const missing = await grpcError(products.client.adjustStock({ id: "01890a5d-ac96-774b-bcce-b302099a8057", delta: 1, reason: "x" }));
    expect(missing.code).toBe(status.NOT_FOUND);
  });

  it("refuses stock beyond what int32 carries, and 64-bit values beyond what a number holds, naming the field and writing nothing", async () => {
    const p = await create("Crate", 1_000_000_000);
    const over = await grpcError(products.client.adjustStock({ id: p.id, delta: 1, reason: "delivery" }));
    expect(over.code).toBe(status.OUT_OF_RANGE);
    expect(over.violations.map((v) => v.field)).toEqual(["delta"]);
    // 2e9 + 1e9 used to overflow the response's int32 and answer INTERNAL.
    const crate = await create("Crate", 999_999_999);
    const twice = await grpcError(products.client.adjustStock({ id: crate.id, delta: 1_000_000_000, reason: "delivery" }));
    expect(twice.code).toBe(status.OUT_OF_RANGE);
    expect((await products.client.getProduct({ id: crate.id })).product).toMatchObject({ stock: 999_999_999, stockVersion: 1 });
    // expected_version 2^62: above Number.MAX_SAFE_INTEGER, which used to answer INTERNAL on decoding.
    const raw = Buffer.concat([
      Buffer.from(UpdateProductRequest.encode({ id: p.id, expectedVersion: 1, updateMask: ["name"], name: "x", description: "", price: undefined }).finish()),
      Buffer.from([0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]),
    ]);
    const huge = await grpcError(rawCall(products.service.address, ProductServiceService.updateProduct.path, raw));
    expect(huge.code).toBe(status.INVALID_ARGUMENT);
    expect(huge.violations.map((v) => v.field)).toEqual(["expected_version"]);
    expect((await products.client.getProduct({ id: p.id })).product).toMatchObject({ name: "Crate", version: 1 });
  });

  it("refuses a name that is not valid UTF-8 with INVALID_ARGUMENT, storing nothing (it was stored with U+FFFD in place of the bytes)", async () => {
    const before = (await products.client.listProducts({ pageSize: 500, pageToken: "" })).products.length;
    const valid = Buffer.from(CreateProductRequest.encode({ name: "TZZA", description: "", price: eur(100), initialStock: 1, requestId: "01890a5d-ac96-774b-bcce-b302099a9077" }).finish());
    const at = valid.indexOf("TZZA");
    const invalid = Buffer.from(valid);
    invalid[at + 1] = 0xff;
    invalid[at + 2] = 0xfe;
    const err = await grpcError(rawCall(products.service.address, ProductServiceService.createProduct.path, invalid));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.violations.map((v) => v.description).join(" ")).toContain("not valid UTF-8");
    // The message as a whole does not decode: no field to name, and no empty one either.
    expect(err.message).toMatch(/^invalid request: not a valid shop\.products\.v1\.CreateProductRequest: /);
    expect((await products.client.listProducts({ pageSize: 500, pageToken: "" })).products).toHaveLength(before);
    // The same request with its bytes intact is taken.
    await rawCall(products.service.address, ProductServiceService.createProduct.path, valid);
  });

  it("refuses a request the protobuf wire format does not allow with INVALID_ARGUMENT, storing nothing, where field number 0 or a stray end-group tag had the rest dropped and the product made", async () => {
    const before = (await products.client.listProducts({ pageSize: 500, pageToken: "" })).products.length;
    const valid = Buffer.from(CreateProductRequest.encode({ name: "Wire", description: "", price: eur(100), initialStock: 1 }).finish());
    const name = (text: string) => Buffer.concat([Buffer.from([0x0a, text.length]), Buffer.from(text)]);
    const price = Buffer.from(CreateProductRequest.encode({ name: "", description: "", price: eur(100), initialStock: 0 }).finish());
    const malformed: [string, Buffer, string][] = [
      ["field number 0, then a field", Buffer.concat([valid, Buffer.from([0x00]), name("Other")]), "field number 0"],
      ["field number 0 last", Buffer.concat([valid, Buffer.from([0x00])]), "field number 0"],
      ["an end-group tag that ends no group", Buffer.concat([valid, Buffer.from([0x0c]), name("Other")]), "ends no group"],
      // Money of 4 bytes: its currency, then field 0, then what its parent read as a name of its own.
      ["field number 0 inside the price", Buffer.concat([name("Wire"), Buffer.from([0x1a, 0x0b, 0x0a, 0x03]), Buffer.from("EUR"), Buffer.from([0x00]), name("Evil")]), "field number 0"],
      ["a group ended by another field's end-group tag", Buffer.concat([valid, Buffer.from([0x4b, 0x54])]), "ended by field 10"],
      ["a tag of 6 bytes", Buffer.concat([valid, Buffer.from([0xa0, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01])]), "32 bits"],
      ["a varint of 10 bytes beyond 64 bits", Buffer.concat([name("Wire"), price, Buffer.from([0x20, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f])]), "64 bits"],
      ["a length running past the message", Buffer.concat([price, Buffer.from([0x0a, 50, 0x41, 0x42])]), "runs past the end"],
      ["a varint of 11 bytes", Buffer.concat([name("Wire"), price, Buffer.from([0x20, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00])]), "longer than 10 bytes"],
      // ts-proto skipped it, keeping the stock sent before; protobuf-es, which checks rules that are not compiled, read 8 as the stock.
      ["initial_stock as a group", Buffer.concat([valid, Buffer.from([0x23, 0x08, 0x05, 0x24])]), "field 4 (shop.products.v1.CreateProductRequest.initial_stock) comes as a group (wire type 3), which it is not"],
    ];
    for (const [what, bytes, says] of malformed) {
      const err = await grpcError(rawCall(products.service.address, ProductServiceService.createProduct.path, bytes));
      expect([what, err.code]).toEqual([what, status.INVALID_ARGUMENT]);
      expect([what, err.message]).toEqual([what, expect.stringMatching(/^invalid request: not a valid shop\.products\.v1\.CreateProductRequest: /)]);
      expect([what, err.message]).toEqual([what, expect.stringContaining(says)]);
    }
    expect((await products.client.listProducts({ pageSize: 500, pageToken: "" })).products).toHaveLength(before);
    // What the format allows is taken: an unknown field, a group of unknown fields, a known field with another wire type (unknown, as Go reads it).
    const unknowns = Buffer.concat([valid, Buffer.from([0x50, 0x01, 0x5b, 0x60, 0x01, 0x5c, 0x25, 1, 0, 0, 0])]);
    await rawCall(products.service.address, ProductServiceService.createProduct.path, unknowns);
    expect((await products.client.listProducts({ pageSize: 500, pageToken: "" })).products).toHaveLength(before + 1);
  });

  it("refuses a name with no visible character (spaces, zero-width or other format characters alone) with INVALID_ARGUMENT, on create and update, writing nothing", async () => {
    const pattern = "does not match regex pattern `[^\\p{Z}\\p{Cc}\\p{Cf}]`";
    const before = (await products.client.listProducts({ pageSize: 500, pageToken: "" })).products;
    for (const name of ["   ", "\u00a0\u3000", "\t\n", "\u200b\u200c\u200d\u2060\ufeff", "\u00ad\u202e"]) {
      const created = await grpcError(products.client.createProduct({ name, description: "", price: eur(100), initialStock: 1 }));
      expect([JSON.stringify(name), created.code, created.violations]).toEqual([JSON.stringify(name), status.INVALID_ARGUMENT, [{ field: "name", description: pattern }]]);
    }
    const p = await create("Saucer", 2);
    const updated = await grpcError(products.client.updateProduct({ id: p.id, expectedVersion: 1, updateMask: ["name"], name: " \u200b ", description: "", price: undefined }));
    expect(updated.code).toBe(status.INVALID_ARGUMENT);
    expect(updated.violations).toEqual([{ field: "name", description: pattern }]);
    expect((await products.client.getProduct({ id: p.id })).product).toMatchObject({ name: "Saucer", version: 1 });
    // A name with one visible character among them is taken as it is.
    expect((await create(" \u200bé ", 1)).name).toBe(" \u200bé ");
    const after = (await products.client.listProducts({ pageSize: 500, pageToken: "" })).products;
    expect(after.length).toBe(before.length + 2);
  });

  it("refuses a NUL character in any string with INVALID_ARGUMENT naming the field, and writes nothing (PostgreSQL cannot store it)", async () => {
    const nul = "must not contain the NUL character (U+0000)";
    const before = (await products.client.listProducts({ pageSize: 500, pageToken: "" })).products;
    const created = await grpcError(products.client.createProduct({ name: "Tea\u0000pot", description: "", price: eur(100), initialStock: 1 }));
    expect(created.code).toBe(status.INVALID_ARGUMENT);
    expect(created.violations).toEqual([{ field: "name", description: nul }]);
    expect(created.message).toBe(`invalid request: name: ${nul}`);
    const p = await create("Pot", 4);
    const updated = await grpcError(products.client.updateProduct({ id: p.id, expectedVersion: 1, updateMask: ["description"], name: "", description: "lid\u0000", price: undefined }));
    expect(updated.violations).toEqual([{ field: "description", description: nul }]);
    const adjusted = await grpcError(products.client.adjustStock({ id: p.id, delta: 1, reason: "r\u0000" }));
    expect(adjusted.violations).toEqual([{ field: "reason", description: nul }]);
    expect((await products.client.getProduct({ id: p.id })).product).toMatchObject({ description: "Porcelain", stock: 4, version: 1 });
    const after = (await products.client.listProducts({ pageSize: 500, pageToken: "" })).products;
    expect(after.map((x) => x.id).sort()).toEqual([...before.map((x) => x.id), p.id].sort());
  });

  it("creates and adjusts once per request_id: a repeat returns the first result, a different request with the same id is refused", async () => {
    const requestId = "01890a5d-ac96-774b-bcce-b302099a9001";
    const request = { name: "Once", description: "", price: eur(100), initialStock: 3, requestId };
    const first = (await products.client.createProduct(request)).product!;
    const again = (await products.client.createProduct(request)).product!;
    expect(again).toEqual(first);
    const listed = (await products.client.listProducts({ pageSize: 500, pageToken: "" })).products.filter((p) => p.name === "Once");
    expect(listed).toHaveLength(1);
    const reused = await grpcError(products.client.createProduct({ ...request, initialStock: 4 }));
    expect(reused.code).toBe(status.ALREADY_EXISTS);
    expect(reused.violations.map((v) => v.field)).toEqual(["request_id"]);
    const bad = await grpcError(products.client.createProduct({ ...request, requestId: "not-a-uuid" }));
    expect(bad.violations.map((v) => v.field)).toEqual(["request_id"]);

    const adjust = { id: first.id, delta: 2, reason: "delivery 1", requestId: "01890a5d-ac96-774b-bcce-b302099a9002" };
    expect((await products.client.adjustStock(adjust)).product!.stock).toBe(5);
    expect((await products.client.adjustStock(adjust)).product!.stock).toBe(5);
    expect((await products.client.getProduct({ id: first.id })).product!.stock).toBe(5);
    // Ids are per method: the same id on another method is a new request.
    expect((await products.client.adjustStock({ ...adjust, requestId })).product!.stock).toBe(7);
  });

  it("lists every product once across pages, in a stable order", async () => {
    for (let i = 0; i < 7; i++) await create(`Item ${i}`);
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await products.client.listProducts({ pageSize: 3, pageToken });
      expect(page.products.length).toBeLessThanOrEqual(3);
      seen.push(...page.products.map((p) => p.id));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(new Set(seen).size).toBe(seen.length);
    expect([...seen].sort()).toEqual(seen);
    const all = await products.client.listProducts({ pageSize: 500, pageToken: "" });
    expect(seen).toEqual(all.products.map((p) => p.id));
    const bad = await grpcError(products.client.listProducts({ pageSize: 3, pageToken: "garbage!" }));
    expect(bad.violations.map((v) => v.field)).toEqual(["page_token"]);
    const tooBig = await grpcError(products.client.listProducts({ pageSize: 501, pageToken: "" }));
    expect(tooBig.violations.map((v) => v.field)).toEqual(["page_size"]);
  });

  it("ends a page early at 1 MiB of products, so that a page of the largest ones reaches a client with gRPC's default 4 MiB limit; the next page goes on from there", async () => {
    // 2,000 characters of 4 bytes each, the most a description may hold: 8 KB a product, about 130 to a MiB.
    const description = "\u{1F375}".repeat(2_000);
    const made = new Set<string>();
    for (let i = 0; i < 160; i++) made.add((await products.client.createProduct({ name: `Large ${i}`, description, price: eur(100), initialStock: 1 })).product!.id);
    const pages: number[] = [];
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await products.client.listProducts({ pageSize: 500, pageToken });
      const mine = page.products.filter((p) => made.has(p.id));
      if (mine.length > 0) pages.push(mine.length);
      expect(Buffer.byteLength(JSON.stringify(page.products.map((p) => p.description)))).toBeLessThanOrEqual(1024 * 1024);
      seen.push(...mine.map((p) => p.id));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(seen).toEqual([...made].sort());
    expect(pages.length).toBe(2);
    expect(pages[0]).toBeGreaterThan(100);
    expect(pages[0]).toBeLessThan(130);
  });

  it("refuses oversized strings and requests over the method's limit, and stays healthy", async () => {
    const long = await grpcError(create("n".repeat(201)));
    expect(long.violations.map((v) => v.field)).toEqual(["name"]);
    const huge = await grpcError(products.client.createProduct({ name: "x", description: "d".repeat(5 * 1024 * 1024), price: eur(1), initialStock: 0 }));
    expect(huge.code).toBe(status.RESOURCE_EXHAUSTED);
    // CreateProduct's contract bounds a request to a few KiB: 40 KiB is refused before it is decoded.
    const overLimit = await grpcError(products.client.createProduct({ name: "x", description: "d".repeat(40 * 1024), price: eur(1), initialStock: 0 }));
    expect(overLimit.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(overLimit.message).toMatch(/CreateProduct request may have at most \d+ bytes/);
    expect(await checkHealth(products.service.address)).toBe("SERVING");
    expect((await create("Still works")).name).toBe("Still works");
  });
});
