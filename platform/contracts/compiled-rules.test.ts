import { create, type DescField, type DescMessage, ScalarType, toBinary, getOption, hasOption } from "@bufbuild/protobuf";
import { field as fieldRulesExt } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import * as orderEvents from "../../gen/ts/shop/orders/v1/order_events_pb.js";
import * as orderService from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import * as productEvents from "../../gen/ts/shop/products/v1/product_events_pb.js";
import * as productService from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { contractEditor } from "../../test/support/edited-contracts.js";
import { tempDir } from "../../test/support/shop.js";
import { buildImage } from "../../tools/contracts/image.js";
import { createMessageChecker } from "./message-checker.js";

const checker = createMessageChecker(descriptorSet);
/** ts-proto's codecs of every top-level message, by full name. */
const codecs = new Map<string, { decode(bytes: Uint8Array): unknown }>();
for (const [pkg, module] of [["shop.orders.v1", orderEvents], ["shop.orders.v1", orderService], ["shop.products.v1", productEvents], ["shop.products.v1", productService]] as const) {
  for (const [name, value] of Object.entries(module)) if (value && typeof (value as { decode?: unknown }).decode === "function") codecs.set(`${pkg}.${name}`, value as never);
}

/** A small deterministic random source, so a failure can be run again. */
function random(seed: number) {
  let s = seed >>> 0;
  const next = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
  return { pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)], chance: (p: number) => next() < p };
}

const uuid = "01890a5d-ac96-774b-bcce-b302099a8057";
const strings = ["", "x", "GB", "gb", "EUR", "eur", "name", "price", "lines", "shipping_address", uuid, `${uuid}x`, "not-a-uuid", "é✓".repeat(40), "n".repeat(64), "n".repeat(65), "n".repeat(199), "n".repeat(200), "n".repeat(201), "n".repeat(1001)];
const numbers = [0, 1, -1, 2, 49, 50, 51, 999, 1000, 1001, 1_000_000_000, 1_000_000_001, -1_000_000_000, -1_000_000_001, 100_000_000_000_000, 100_000_000_000_001, 9_007_199_254_740_991];

/** Values around a field's limits, valid and not. */
function valueFor(field: DescField, rnd: ReturnType<typeof random>, depth: number): unknown {
  const kind = field.fieldKind === "list" ? field.listKind : field.fieldKind;
  if (kind === "message") {
    const message = (field as { message: DescMessage }).message;
    if (message.typeName === "google.protobuf.Timestamp") return create(message, { seconds: 1n, nanos: 0 } as never);
    // Up to one path more than the update requests allow, now and then one twice, for their masks' and messages' rules.
    if (message.typeName === "google.protobuf.FieldMask") return create(message, { paths: Array.from({ length: rnd.pick([0, 1, 1, 2, 3, 4]) }, () => rnd.pick(strings)) } as never);
    return depth > 3 ? undefined : messageFor(message, rnd, depth + 1);
  }
  if (kind === "enum") return rnd.pick([0, 1, 2, 3, 4, 99]);
  const scalar = (field as { scalar: ScalarType }).scalar;
  if (scalar === ScalarType.STRING) return rnd.pick(strings);
  if (scalar === ScalarType.BOOL) return rnd.chance(0.5);
  if (scalar === ScalarType.INT64 || scalar === ScalarType.UINT64 || scalar === ScalarType.SINT64 || scalar === ScalarType.FIXED64 || scalar === ScalarType.SFIXED64) {
    const n = rnd.pick(numbers);
    return BigInt(scalar === ScalarType.UINT64 || scalar === ScalarType.FIXED64 ? Math.abs(n) : n);
  }
  const n = rnd.pick(numbers.filter((v) => Math.abs(v) < 2 ** 31));
  return scalar === ScalarType.UINT32 || scalar === ScalarType.FIXED32 ? Math.abs(n) : n;
}

function messageFor(schema: DescMessage, rnd: ReturnType<typeof random>, depth = 0): object {
  const init: Record<string, unknown> = {};
  for (const field of schema.fields) {
    if (field.fieldKind === "map" || field.oneof) continue;
    if (field.fieldKind === "list") {
      const rules = hasOption(field, fieldRulesExt) ? getOption(field, fieldRulesExt) : undefined;
      const max = rules?.type.case === "repeated" ? Number(rules.type.value.maxItems || 3) : 3;
      const length = rnd.pick([0, 1, 2, Math.min(max, 4), max + 1].filter((n) => n <= 60));
      const items = Array.from({ length }, () => valueFor(field, rnd, depth));
      // Now and then a repeated item, for the uniqueness rules.
      if (items.length > 1 && rnd.chance(0.3)) items[1] = items[0];
      init[field.localName] = items.filter((v) => v !== undefined);
      continue;
    }
    if ((field.fieldKind === "message" || field.proto.proto3Optional) && rnd.chance(0.25)) continue;
    const value = valueFor(field, rnd, depth);
    if (value !== undefined) init[field.localName] = value;
  }
  return create(schema, init as never);
}

describe("compiled rules", () => {
  const compiledTypes = [...codecs.keys()].filter((t) => checker.checkDecoded(t, {}) !== undefined);

  it("compile the rules of the hot paths' messages", () => {
    for (const t of ["shop.orders.v1.CreateOrderRequest", "shop.orders.v1.OrderPlaced", "shop.products.v1.StockReserved", "shop.products.v1.StockReservationFailed", "shop.orders.v1.OrderConfirmed", "shop.products.v1.GetProductRequest", "shop.products.v1.CreateProductRequest"]) {
      expect(compiledTypes, t).toContain(t);
    }
  });

  it("compile the update requests' rules too (a mask's own CEL, and message-level CEL testing the mask's size, a name in it, a field set or sized), so a valid update is decoded once", () => {
    const cases: Array<[string, unknown]> = [
      ["shop.orders.v1.UpdateOrderRequest", { id: uuid, expectedVersion: 1, updateMask: ["shipping_address", "lines"], shippingAddress: { recipient: "A", line1: "B", line2: "", city: "C", postalCode: "D", countryCode: "GB" }, lines: [{ productId: uuid, quantity: 1 }] }],
      ["shop.orders.v1.UpdateOrderRequest", { id: uuid, expectedVersion: 1, updateMask: ["shipping_address", "lines"], lines: [] }],
      ["shop.orders.v1.UpdateOrderRequest", { id: uuid, expectedVersion: 1, updateMask: [], lines: [] }],
      ["shop.orders.v1.UpdateOrderRequest", { id: uuid, expectedVersion: 1, lines: [] }],
      ["shop.products.v1.UpdateProductRequest", { id: uuid, expectedVersion: 1, updateMask: ["name", "price"], name: "Tea", description: "", price: { currencyCode: "EUR", amountMinor: 1 } }],
      ["shop.products.v1.UpdateProductRequest", { id: uuid, expectedVersion: 1, updateMask: ["name", "price", "name"], name: "", description: "" }],
      ["shop.products.v1.UpdateProductRequest", { id: uuid, expectedVersion: 1, updateMask: ["name", "colour"], name: "", description: "" }],
      // Over the mask's count: reported alone, as the check on bytes reports it.
      ["shop.products.v1.UpdateProductRequest", { id: "x", expectedVersion: 1, updateMask: ["name", "name", "name", "name"], name: "", description: "" }],
    ];
    const found = cases.map(([typeName, message]) => {
      const codec = codecs.get(typeName)! as unknown as { encode(m: unknown): { finish(): Uint8Array }; fromPartial(m: unknown): unknown };
      const decoded = codec.fromPartial(message);
      const compiled = checker.checkDecoded(typeName, decoded);
      expect(compiled, JSON.stringify(message)).toEqual(checker.check(typeName, codec.encode(decoded).finish()));
      return compiled?.map((v) => `${v.field}: ${v.description}`);
    });
    expect(found).toEqual([
      [],
      ["shipping_address: shipping_address is required when update_mask names it", "lines: lines must hold 1 to 50 lines when update_mask names it"],
      ["update_mask: paths must be one or more of shipping_address, lines, each once"],
      ["update_mask: value is required"],
      [],
      ["update_mask: paths must be one or more of name, description, price, each once", "name: name must be 1 to 200 characters when update_mask names it", "price: price is required when update_mask names it"],
      ["update_mask: paths must be one or more of name, description, price, each once", "name: name must be 1 to 200 characters when update_mask names it"],
      ["update_mask: paths must be one or more of name, description, price, each once"],
    ]);
  });

  it("say what protovalidate says, word for word and in its order, on thousands of messages", () => {
    let compared = 0;
    let invalid = 0;
    for (const typeName of compiledTypes) {
      const schema = checker.registry.getMessage(typeName)!;
      for (let seed = 1; seed <= 300; seed++) {
        const bytes = toBinary(schema, messageFor(schema, random(seed * 7919 + typeName.length)) as never);
        const expected = checker.check(typeName, bytes);
        const actual = checker.checkDecoded(typeName, codecs.get(typeName)!.decode(bytes));
        if (JSON.stringify(actual) !== JSON.stringify(expected)) {
          const line = (vs: readonly { field: string; description: string }[] | undefined) => (vs ?? []).map((v) => `${v.field}: ${v.description}`);
          expect({ typeName, seed, compiled: line(actual) }).toEqual({ typeName, seed, compiled: line(expected) });
        }
        compared++;
        if (expected.length > 0) invalid++;
      }
    }
    expect(compared).toBeGreaterThan(3_000);
    expect(invalid).toBeGreaterThan(compared / 4);
    expect(invalid).toBeLessThan(compared);
  });
});

describe("compiled CEL", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const { edited } = contractEditor(dir.path);

  /** The checker of proto/ with `edits`, from its compiled image. */
  const checkerOf = (edits: Record<string, (text: string) => string>) => {
    const image = join(dir.path, `image-${Math.random().toString(36).slice(2)}.binpb`);
    buildImage(edited(edits), image);
    return createMessageChecker(new Uint8Array(readFileSync(image)));
  };

  it("names a nested message's failed rule by the field holding it, with protovalidate's words for a rule with no message", () => {
    const custom = checkerOf({
      "shop/common/v1/money.proto": (t) => t.replace("message Money {\n", 'message Money {\n  option (buf.validate.message).cel = {\n    id: "money.code"\n    expression: "size(this.currency_code) != 4 && !(\'\' in [])"\n  };\n'),
    });
    // The last conjunct is in no form compiled: Money, and every message holding it, falls back to protovalidate.
    expect(custom.checkDecoded("shop.products.v1.CreateProductRequest", { name: "Tea", description: "", price: { currencyCode: "EUR", amountMinor: 1 }, initialStock: 0 })).toBeUndefined();
    const compiledToo = checkerOf({
      "shop/common/v1/money.proto": (t) => t.replace("message Money {\n", 'message Money {\n  option (buf.validate.message).cel = {\n    id: "money.code"\n    expression: "size(this.currency_code) != 4"\n  };\n'),
    });
    const type = "shop.products.v1.CreateProductRequest";
    const message = { name: "Tea", description: "", price: { currencyCode: "EURO", amountMinor: 1 }, initialStock: 0 };
    const bytes = toBinary(compiledToo.registry.getMessage(type)!, create(compiledToo.registry.getMessage(type)!, { ...message, price: { currencyCode: "EURO", amountMinor: 1n } } as never));
    const expected = [
      { field: "price.currency_code", description: "does not match regex pattern `^[A-Z]{3}$`" },
      { field: "price", description: '"size(this.currency_code) != 4" returned false' },
    ];
    expect(compiledToo.check(type, bytes)).toEqual(expected);
    expect(compiledToo.checkDecoded(type, message)).toEqual(expected);
  });
});
