import { create, type DescField, type DescMessage, ScalarType, toBinary, getOption, hasOption } from "@bufbuild/protobuf";
import { field as fieldRulesExt } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import * as orderEvents from "../../gen/ts/shop/orders/v1/order_events_pb.js";
import * as orderService from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import * as productEvents from "../../gen/ts/shop/products/v1/product_events_pb.js";
import * as productService from "../../gen/ts/shop/products/v1/product_service_pb.js";
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
    if (message.typeName === "google.protobuf.FieldMask") return create(message, { paths: [rnd.pick(strings)] } as never);
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
    // Message-level CEL is left to protovalidate.
    expect(checker.checkDecoded("shop.products.v1.UpdateProductRequest", {})).toBeUndefined();
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
