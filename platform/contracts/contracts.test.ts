import { spawnSync } from "node:child_process";
import { create, type DescMessage, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { CreateOrderRequest, UpdateOrderRequest } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { createMessageChecker } from "./message-checker.js";
import { encodedSizeBound, patternMaxLength, sizeLimit } from "./size-bound.js";
import { contractEditor } from "../../test/support/edited-contracts.js";
import { createTempDir } from "../../test/support/temp-dir.js";

const checker = createMessageChecker(descriptorSet);
const address = { recipient: "A", line1: "B", line2: "", city: "C", postalCode: "D", countryCode: "GB" };
const uuid = (n: number) => `01890a5d-ac96-774b-bcce-${String(n).padStart(12, "0")}`;

describe("createMessageChecker", () => {
  it("is one checker per descriptor set, and loads protovalidate only when a message's bytes are checked, every shop message's rules being compiled", () => {
    expect(createMessageChecker(descriptorSet)).toBe(checker);
    // In a process of its own, whose module loader logs each module it loads (NODE_DEBUG=esm) between the script's marks.
    const script = `
      const { descriptorSet } = await import("./gen/ts/descriptor_set.ts");
      const { CreateOrderRequest, UpdateOrderRequest } = await import("./gen/ts/shop/orders/v1/order_service_pb.ts");
      const { createMessageChecker } = await import("./platform/contracts/message-checker.ts");
      const checker = createMessageChecker(descriptorSet);
      const lines = [{ productId: "01890a5d-ac96-774b-bcce-000000000001", quantity: 1 }];
      const shippingAddress = { recipient: "A", line1: "B", line2: "", city: "C", postalCode: "D", countryCode: "GB" };
      const created = checker.checkDecoded("shop.orders.v1.CreateOrderRequest", CreateOrderRequest.fromPartial({ customerId: "c", lines, shippingAddress }));
      const update = UpdateOrderRequest.fromPartial({ id: "01890a5d-ac96-774b-bcce-000000000002", expectedVersion: 1, updateMask: ["shipping_address"] });
      const compiled = checker.checkDecoded("shop.orders.v1.UpdateOrderRequest", update);
      console.error("MARK the first check of bytes");
      const violations = checker.check("shop.orders.v1.UpdateOrderRequest", UpdateOrderRequest.encode(update).finish());
      console.log(JSON.stringify({ created, compiled: compiled ?? "none", violations }));`;
    const child = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", timeout: 60_000, maxBuffer: 256 * 1024 * 1024, env: { ...process.env, NODE_DEBUG: "esm,module" } });
    expect(JSON.parse(child.stdout.trim().split("\n").at(-1)!)).toEqual({
      created: [],
      compiled: [{ field: "shipping_address", description: "shipping_address is required when update_mask names it" }],
      violations: [{ field: "shipping_address", description: "shipping_address is required when update_mask names it" }],
    });
    const log = child.stderr.split("\n");
    const mark = log.findIndex((line) => line.startsWith("MARK"));
    const protovalidate = log.findIndex((line) => line.includes("@bufbuild/protovalidate/dist/esm/index.js"));
    expect(mark).toBeGreaterThan(0);
    expect(protovalidate).toBeGreaterThan(mark);
  });

  it("reports a list over its max_items alone, without running the costly rules over every item", () => {
    // 6,000 lines used to overflow the stack in the uniqueness rule (a CEL macro over every line).
    const bytes = CreateOrderRequest.encode({ customerId: "", lines: Array.from({ length: 6_000 }, () => ({ productId: "", quantity: 0 })), shippingAddress: undefined }).finish();
    expect(checker.check("shop.orders.v1.CreateOrderRequest", bytes)).toEqual([{ field: "lines", description: "must contain no more than 50 item(s)" }]);
  });

  it("reports a FieldMask over its contract's count of paths alone, on the decoded request and on its bytes, before any CEL", () => {
    // 60,000 paths took 27 ms of protovalidate's CEL, message-level rules included, each looking through them all.
    const type = "shop.orders.v1.UpdateOrderRequest";
    const update = UpdateOrderRequest.fromPartial({ id: uuid(1), expectedVersion: 1, updateMask: Array.from({ length: 60_000 }, () => "lines") });
    const refused = [{ field: "update_mask", description: "paths must be one or more of shipping_address, lines, each once" }];
    expect(checker.checkDecoded(type, update)).toEqual(refused);
    const bytes = UpdateOrderRequest.encode(update).finish();
    expect(checker.check(type, bytes)).toEqual(refused);
    expect(checker.checkItemCounts(type, bytes)).toEqual(refused);
    // Within the count, the mask's own rule says the same (protovalidate's path: the request has message-level CEL).
    const three = { ...update, updateMask: ["lines", "lines", "lines"] };
    expect(checker.checkDecoded(type, three)).toEqual(refused);
    const two = { ...update, updateMask: ["lines", "lines"] };
    const twice = [...refused, { field: "lines", description: "lines must hold 1 to 50 lines when update_mask names it" }];
    expect(checker.checkDecoded(type, two)).toEqual(twice);
    expect(checker.check(type, UpdateOrderRequest.encode(two).finish())).toEqual(twice);
  });

  it("names every bad field of a message within its item limits", () => {
    const bytes = CreateOrderRequest.encode({ customerId: "", lines: [{ productId: "x", quantity: 0 }], shippingAddress: { ...address, countryCode: "gbr" } }).finish();
    expect(checker.check("shop.orders.v1.CreateOrderRequest", bytes).map((v) => v.field).sort()).toEqual(["customer_id", "lines[0].product_id", "lines[0].quantity", "shipping_address.country_code"]);
  });

  it("refuses 64-bit values a JavaScript number cannot hold, even where the contract sets no bound", () => {
    // google.protobuf.Timestamp.seconds has no rule; 2^62 is still refused, naming the field.
    const timestamp = Uint8Array.from([0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
    expect(checker.check("google.protobuf.Timestamp", timestamp)).toEqual([{ field: "seconds", description: "must be between -9007199254740991 and 9007199254740991" }]);
  });

  it("refuses a NUL in any string field, nested and repeated, on decoded messages and on bytes alike", () => {
    const nul = "must not contain the NUL character (U+0000)";
    const order = { customerId: "c\u0000", lines: [{ productId: uuid(1), quantity: 1 }, { productId: `${uuid(2)}\u0000`, quantity: 1 }], shippingAddress: { ...address, line2: "\u0000" }, requestId: uuid(3) };
    const type = "shop.orders.v1.CreateOrderRequest";
    const expected = [
      { field: "customer_id", description: nul },
      { field: "lines[1].product_id", description: nul },
      { field: "shipping_address.line2", description: nul },
    ];
    // lines[1].product_id is no UUID either: the contract's own rule names it too.
    const named = (violations: { field: string; description: string }[] | undefined) => violations?.filter((v) => v.description === nul);
    expect(named(checker.checkDecoded(type, order))).toEqual(expected);
    expect(named(checker.check(type, CreateOrderRequest.encode(order).finish()))).toEqual(expected);
    // A message with message-level CEL gets the same, compiled and through protovalidate's path.
    const update = UpdateOrderRequest.fromPartial({ id: uuid(4), expectedVersion: 1, updateMask: ["shipping_address"], shippingAddress: { ...address, city: "Lon\u0000don" } });
    expect(checker.checkDecoded("shop.orders.v1.UpdateOrderRequest", update)).toEqual([{ field: "shipping_address.city", description: nul }]);
    expect(checker.check("shop.orders.v1.UpdateOrderRequest", UpdateOrderRequest.encode(update).finish())).toEqual([{ field: "shipping_address.city", description: nul }]);
    // Clean text passes; so does a NUL-free string with other control characters.
    expect(checker.checkDecoded(type, { ...order, customerId: "c\u0001", lines: [order.lines[0]], shippingAddress: address })).toEqual([]);
  });

  it("turns undecodable bytes into one violation and refuses unknown types", () => {
    expect(checker.check("shop.orders.v1.CreateOrderRequest", Uint8Array.from([0x0a, 0x05, 0x01]))).toEqual([{ field: "", description: expect.stringContaining("not a valid shop.orders.v1.CreateOrderRequest") }]);
    expect(() => checker.check("shop.nothing.v1.Nope", new Uint8Array())).toThrow(/not in the descriptor set/);
  });
});

describe("encodedSizeBound", () => {
  const bound = (typeName: string) => encodedSizeBound(checker.registry.getMessage(typeName)!);
  /** Runs `use` on the messages of `text`, added to a copy of the product service's contract. */
  const withMessages = (text: string, use: (message: (name: string) => DescMessage) => void): void => {
    const dir = createTempDir();
    try {
      const { edited, filesOf } = contractEditor(dir.path);
      const files = filesOf(edited({ "shop/products/v1/product_service.proto": (t) => `${t}\n${text}` }));
      use((name) => files.flatMap((f) => f.messages).find((m) => m.name === name)!);
    } finally {
      dir.remove();
    }
  };

  it("bounds a message from its rules and leaves unbounded ones open", () => {
    expect(bound("shop.products.v1.GetProductRequest")).toBe(38);
    // 50 lines, an address and the rest: a few KiB.
    expect(bound("shop.orders.v1.CreateOrderRequest")).toBeGreaterThan(2_000);
    expect(bound("shop.orders.v1.CreateOrderRequest")).toBeLessThan(8_000);
    // A FieldMask's paths, as its CEL rule bounds their count and lists their names: 3 of "description" at most.
    expect(bound("shop.products.v1.UpdateProductRequest")).toBeLessThan(10_000);
    expect(bound("shop.products.v1.UpdateProductRequest") - bound("shop.products.v1.GetProductRequest")).toBeGreaterThan(3 * (2 + "description".length));
    // A list with no max_items leaves it open.
    expect(bound("shop.orders.v1.ListOrdersResponse")).toBe(Number.POSITIVE_INFINITY);
  });

  it("is never below the size of a valid message", () => {
    const largest = CreateOrderRequest.encode({
      customerId: "c".repeat(64),
      lines: Array.from({ length: 50 }, (_, i) => ({ productId: uuid(i), quantity: 1000 })),
      shippingAddress: { recipient: "é".repeat(200), line1: "l".repeat(200), line2: "l".repeat(200), city: "c".repeat(100), postalCode: "p".repeat(20), countryCode: "GB" },
      requestId: uuid(99),
    }).finish();
    expect(checker.check("shop.orders.v1.CreateOrderRequest", largest)).toEqual([]);
    expect(largest.byteLength).toBeLessThanOrEqual(bound("shop.orders.v1.CreateOrderRequest"));
  });

  it("counts a map with max_pairs as a list of its entries, each its key and its value as their rules bound them, and leaves it open without either", () => {
    const maps = [
      "// Labels.",
      "message Labels {",
      "  // Four at most.",
      "  map<string, int32> labels = 1 [(buf.validate.field).map = {max_pairs: 4, keys: {string: {max_len: 10}}}];",
      "}",
      "// Prices.",
      "message Prices {",
      "  // Two at most, of messages.",
      "  map<string, shop.common.v1.Money> prices = 1 [(buf.validate.field).map = {max_pairs: 2, keys: {string: {len: 3}}}];",
      "}",
      "// No max_pairs.",
      "message Unpaired {",
      "  // Any number.",
      "  map<string, int32> labels = 1 [(buf.validate.field).map.keys.string.max_len = 10];",
      "}",
      "// Keys of any length.",
      "message OpenKeys {",
      "  // Four at most.",
      "  map<string, int32> labels = 1 [(buf.validate.field).map.max_pairs = 4];",
      "}",
      "",
    ].join("\n");
    withMessages(maps, (message) => {
      // Each entry: its tag and length (2), its key (a tag, a length and 40 bytes: 42) and its value (a tag and a varint: 11).
      expect(encodedSizeBound(message("Labels"))).toBe(4 * (2 + 42 + 11));
      // A key of 3 characters (12 bytes at most) and a Money of 25 bytes at most, behind a tag and a length.
      const prices = message("Prices");
      expect(encodedSizeBound(prices)).toBe(2 * (2 + (1 + 1 + 12) + (1 + 1 + 25)));
      const largest = toBinary(prices, create(prices, { prices: { "😀😀😀": { currencyCode: "EUR", amountMinor: 100_000_000_000_000n }, "ÿÿÿ": { currencyCode: "GBP", amountMinor: 100_000_000_000_000n } } } as never));
      expect(largest.byteLength).toBeLessThanOrEqual(encodedSizeBound(prices));
      expect(encodedSizeBound(message("Unpaired"))).toBe(Number.POSITIVE_INFINITY);
      expect(encodedSizeBound(message("OpenKeys"))).toBe(Number.POSITIVE_INFINITY);
    });
  });

  it("counts a list of at most 0 items as no bytes, whatever its items could hold", () => {
    const none = ["// None.", "message NoNotes {", "  // Never any.", "  repeated string notes = 1 [(buf.validate.field).repeated.max_items = 0];", "}", ""].join("\n");
    withMessages(none, (message) => expect(encodedSizeBound(message("NoNotes"))).toBe(0));
  });

  it("leaves open what rules bound that the checks always ignore (IGNORE_ALWAYS), where it counted them", () => {
    const ignored = [
      "// A note whose limit is never checked.",
      "message IgnoredNote {",
      "  // Any length.",
      '  string note = 1 [(buf.validate.field).ignore = IGNORE_ALWAYS, (buf.validate.field).string.max_len = 10];',
      "}",
      "// Tags of unchecked length.",
      "message IgnoredTags {",
      "  // Four at most, each of any length.",
      '  repeated string tags = 1 [(buf.validate.field).repeated = {max_items: 4, items: {ignore: IGNORE_ALWAYS, string: {max_len: 10}}}];',
      "}",
      "// Checked tags.",
      "message CheckedTags {",
      "  // Four at most, of 10 characters.",
      '  repeated string tags = 1 [(buf.validate.field).repeated = {max_items: 4, items: {string: {max_len: 10}}}];',
      "}",
      "",
    ].join("\n");
    withMessages(ignored, (message) => {
      expect(encodedSizeBound(message("IgnoredNote"))).toBe(Number.POSITIVE_INFINITY);
      expect(encodedSizeBound(message("IgnoredTags"))).toBe(Number.POSITIVE_INFINITY);
      // Each: its tag and length, at most 5, and 40 bytes behind their length (41).
      expect(encodedSizeBound(message("CheckedTags"))).toBe(4 * (1 + 5 + 41));
    });
  });

  it("counts a string's in and const by their longest value in UTF-8, the least bound where a string has several rules, and bytes' in and const", () => {
    const listed = [
      "// Values from lists.",
      "message Listed {",
      "  // Three at most, each one of three.",
      '  repeated string names = 1 [(buf.validate.field).repeated = {max_items: 3, items: {string: {in: ["a", "é", "😀😀"]}}}];',
      "  // One value.",
      '  string kind = 2 [(buf.validate.field).string.const = "€uro"];',
      "  // A length and a list.",
      '  string code = 3 [(buf.validate.field).string = {max_len: 100, in: ["ab", "cd"]}];',
      "  // Raw bytes from a list.",
      '  bytes magic = 4 [(buf.validate.field).bytes = {in: ["\\001\\002", "\\003"]}];',
      "  // Raw bytes of one value.",
      '  bytes fixed = 5 [(buf.validate.field).bytes.const = "abc"];',
      "}",
      "// Values not from a list.",
      "message Unlisted {",
      "  // Anything but x.",
      '  string note = 1 [(buf.validate.field).string = {not_in: ["x"]}];',
      "}",
      "",
    ].join("\n");
    withMessages(listed, (message) => {
      const type = message("Listed");
      // names: each item behind its tag and length (at most 5), its longest value 8 bytes behind its own length;
      // kind: "€uro", 6 bytes; code: 2 bytes, not max_len's 400; magic: 2 bytes; fixed: 3.
      expect(encodedSizeBound(type)).toBe(3 * (1 + 5 + 9) + (1 + 1 + 6) + (1 + 1 + 2) + (1 + 1 + 2) + (1 + 1 + 3));
      const largest = toBinary(type, create(type, { names: ["😀😀", "😀😀", "😀😀"], kind: "€uro", code: "ab", magic: Uint8Array.of(1, 2), fixed: new TextEncoder().encode("abc") } as never));
      expect(largest.byteLength).toBeLessThanOrEqual(encodedSizeBound(type));
      expect(encodedSizeBound(message("Unlisted"))).toBe(Number.POSITIVE_INFINITY);
    });
    // OrderUpdated's changed_fields (two of "shipping_address" and "lines") left it, and SHOP_ORDERS, without a limit.
    expect(bound("shop.orders.v1.OrderUpdated")).toBe(38 + (1 + 3 + bound("shop.orders.v1.Order")) + 2 * (1 + 5 + 1 + "shipping_address".length) + 11);
    expect(bound("shop.products.v1.ProductUpdated")).toBeLessThan(10_000);
  });

  it("reads the length of simple whole-string patterns", () => {
    expect(patternMaxLength("^[A-Z]{2}$")).toBe(2);
    expect(patternMaxLength("^v[0-9]{1,3}$")).toBe(4);
    expect(patternMaxLength("^a+$")).toBe(Number.POSITIVE_INFINITY);
    expect(patternMaxLength("[A-Z]")).toBe(Number.POSITIVE_INFINITY);
  });

  it("gives each method a receive limit: twice its bound plus 1 KiB, at least 4 KiB, capped", () => {
    expect(sizeLimit(38, 262_144)).toBe(4_096);
    expect(sizeLimit(5_000, 262_144)).toBe(11_024);
    expect(sizeLimit(Number.POSITIVE_INFINITY, 262_144)).toBe(262_144);
    expect(sizeLimit(500_000, 262_144)).toBe(262_144);
  });

  it("gives each type its size limit from the checker, as gRPC methods and consumers apply it: capped, none where the contract leaves the size open or lacks the type", () => {
    const placed = checker.registry.getMessage("shop.orders.v1.OrderPlaced")!;
    expect(checker.sizeLimitOf("shop.orders.v1.OrderPlaced")).toBe(sizeLimit(encodedSizeBound(placed), Number.POSITIVE_INFINITY));
    expect(checker.sizeLimitOf("shop.orders.v1.OrderPlaced", 4_096)).toBe(4_096);
    expect(checker.sizeLimitOf("shop.products.v1.GetProductRequest", 262_144)).toBe(4_096);
    // A page of orders has no bound on its count in the contract (the server bounds it by size).
    expect(checker.sizeLimitOf("shop.orders.v1.ListOrdersResponse")).toBe(Number.POSITIVE_INFINITY);
    expect(checker.sizeLimitOf("shop.orders.v1.ListOrdersResponse", 262_144)).toBe(262_144);
    expect(checker.sizeLimitOf("shop.orders.v1.NoSuchEvent")).toBe(Number.POSITIVE_INFINITY);
  });
});
