import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../../test/support/shop.js";
import { contractEditor, lineOf } from "../../test/support/edited-contracts.js";
import { repoRoot } from "../repo-root.js";
import { unboundedInputFields } from "./request-bounds.js";

const productService = "shop/products/v1/product_service.proto";
const productEvents = "shop/products/v1/product_events.proto";
const orderEvents = "shop/orders/v1/order_events.proto";

describe("bounds on what a service takes in", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const { edited, filesOf } = contractEditor(dir.path);
  /** proto/ with `messages` added to the product service's file and a `Filter filter = 3` in ListProductsRequest; and that file's text. */
  const withFilter = (messages: string) => {
    const proto = edited({
      [productService]: (t) =>
        t
          .replace("  string page_token = 2 [(buf.validate.field).string.max_len = 200];\n}\n", "  string page_token = 2 [(buf.validate.field).string.max_len = 200];\n  // Which products.\n  Filter filter = 3;\n}\n")
          .replace("// Output of ListProducts.", `${messages}\n// Output of ListProducts.`),
    });
    return { proto, service: readFileSync(join(proto, productService), "utf8") };
  };

  it("finds nothing open in the shop's contracts, its requests and the events its services consume", () => {
    expect(unboundedInputFields(filesOf(join(repoRoot, "proto")))).toEqual([]);
  });

  it("names a list in a message held at any depth of a request, through a cycle of messages, by its path from the method", () => {
    const filter = [
      "// Products to list.",
      "message Filter {",
      "  // Any of these.",
      "  repeated Filter any_of = 1 [(buf.validate.field).repeated.max_items = 4];",
      "  // A price range.",
      "  Range range = 2;",
      "}",
      "",
      "// A range of prices.",
      "message Range {",
      "  // Currencies the range is in.",
      "  repeated string currencies = 1;",
      "  // Back to a filter: a cycle of three messages.",
      "  Filter within = 2;",
      "  // By name.",
      "  map<string, Filter> named = 3;",
      "}",
      "",
    ].join("\n");
    const { proto, service } = withFilter(filter);
    // any_of and named lead back to their own message as well, each on a line of its own (the next test).
    const found = unboundedInputFields(filesOf(proto)).filter((finding) => !finding.includes("lead back to its own message"));
    expect(found).toHaveLength(2);
    expect(found[0]).toBe(
      `${productService}:${lineOf(service, "repeated string currencies = 1;")}:3:Field "currencies" of message "shop.products.v1.Range", at filter.range.currencies in the request of shop.products.v1.ProductService.ListProducts: ` +
        "a repeated field with no max_items; a request could hold any number of items, each checked by the contract's rules before it is refused. " +
        "Bound it: (buf.validate.field).repeated.max_items = <the most a caller needs>",
    );
    expect(found[1]).toMatch(new RegExp(`^${productService}:${lineOf(service, "map<string, Filter> named = 3;")}:3:Field "named" of message "shop\\.products\\.v1\\.Range", at filter\\.range\\.named in the request of shop\\.products\\.v1\\.ProductService\\.ListProducts: a map with no max_pairs;`));
  });

  it("refuses a list or a map whose items lead back to its own message, however small its max_items or max_pairs, and leaves a cycle of single message fields alone", () => {
    // Passed before: with at most 4 in each any_of, a ListProductsRequest of 176 KB held 87,381 Filters, each checked.
    const filter = [
      "// Products to list.",
      "message Filter {",
      "  // Any of these.",
      "  repeated Filter any_of = 1 [(buf.validate.field).repeated.max_items = 4];",
      "  // None of this: a single field, nested at most 100 deep by the wire format's check.",
      "  Filter not = 2;",
      "  // Ranges by name.",
      "  map<string, Range> ranges = 3 [(buf.validate.field).map.max_pairs = 2];",
      "  // Words, which hold no Filter.",
      "  repeated Word words = 4 [(buf.validate.field).repeated.max_items = 8];",
      "}",
      "",
      "// A range of prices.",
      "message Range {",
      "  // Back to a filter: a cycle of two messages through a map.",
      "  Filter within = 1;",
      "}",
      "",
      "// A word.",
      "message Word {",
      "  // The word.",
      "  string text = 1 [(buf.validate.field).string.max_len = 20];",
      "}",
      "",
    ].join("\n");
    const { proto, service } = withFilter(filter);
    expect(unboundedInputFields(filesOf(proto))).toEqual([
      `${productService}:${lineOf(service, "repeated Filter any_of = 1")}:3:Field "any_of" of message "shop.products.v1.Filter", at filter.any_of in the request of shop.products.v1.ProductService.ListProducts: ` +
        "a repeated field whose items lead back to its own message, shop.products.v1.Filter (at any_of), so a request could nest them level within level: " +
        "max_items bounds each level, not their total, which only a request's size limits, and each is checked by the contract's rules before it is refused. " +
        "Give it items of a message that does not lead back to shop.products.v1.Filter: a message of its own for each level a caller needs, or a flat list whose items refer to each other by id",
      `${productService}:${lineOf(service, "map<string, Range> ranges = 3")}:3:Field "ranges" of message "shop.products.v1.Filter", at filter.ranges in the request of shop.products.v1.ProductService.ListProducts: ` +
        "a map whose values lead back to its own message, shop.products.v1.Filter (at ranges.within), so a request could nest them level within level: " +
        "max_pairs bounds each level, not their total, which only a request's size limits, and each is checked by the contract's rules before it is refused. " +
        "Give it values of a message that does not lead back to shop.products.v1.Filter: a message of its own for each level a caller needs, or a flat list whose items refer to each other by id",
    ]);
  });

  it("holds the events a service consumes to the same rule, naming the path from the event and who consumes it, and leaves an event nobody consumes alone", () => {
    const proto = edited({
      // ReservedLine is in StockReserved, which the order service consumes, and in StockReleased, which nobody does.
      [productEvents]: (t) =>
        t
          .replace("    lte: 1000\n  }];\n}\n\n// Stock for every line", "    lte: 1000\n  }];\n  // Notes.\n  repeated string notes = 3 [(buf.validate.field).repeated.items.string.max_len = 10];\n  // Parts.\n  repeated ReservedLine parts = 4 [(buf.validate.field).repeated.max_items = 2];\n}\n\n// Stock for every line")
          // StockAdjusted is consumed by no service.
          .replace("  // Why, as given to AdjustStock.\n  string reason = 3", "  // Tags.\n  repeated string tags = 7;\n  // Why, as given to AdjustStock.\n  string reason = 3"),
      [orderEvents]: (t) => t.replace("message OrderUnknown {\n", "message OrderUnknown {\n  // Labels.\n  map<string, string> labels = 3;\n"),
    });
    const text = (file: string) => readFileSync(join(proto, file), "utf8");
    const found = unboundedInputFields(filesOf(proto));
    expect(found).toEqual([
      expect.stringMatching(
        new RegExp(
          `^${productEvents}:${lineOf(text(productEvents), "repeated string notes = 3")}:3:Field "notes" of message "shop\\.products\\.v1\\.ReservedLine", at lines\\.notes in the event shop\\.products\\.v1\\.StockReserved, which shop\\.orders\\.v1\\.OrderService consumes: ` +
            "a repeated field with no max_items; an event could hold any number of items, each checked by the contract's rules before it is refused\\. " +
            "Bound it: \\(buf\\.validate\\.field\\)\\.repeated\\.max_items = <the most its publisher sends>$",
        ),
      ),
      `${productEvents}:${lineOf(text(productEvents), "repeated ReservedLine parts = 4")}:3:Field "parts" of message "shop.products.v1.ReservedLine", at lines.parts in the event shop.products.v1.StockReserved, which shop.orders.v1.OrderService consumes: ` +
        "a repeated field whose items lead back to its own message, shop.products.v1.ReservedLine (at parts), so an event could nest them level within level: " +
        "max_items bounds each level, not their total, which only an event's size limits, and each is checked by the contract's rules before it is refused. " +
        "Give it items of a message that does not lead back to shop.products.v1.ReservedLine: a message of its own for each level its publisher sends, or a flat list whose items refer to each other by id",
      expect.stringMatching(new RegExp(`^${orderEvents}:${lineOf(text(orderEvents), "map<string, string> labels = 3;")}:3:Field "labels" of message "shop\\.orders\\.v1\\.OrderUnknown", at labels in the event shop\\.orders\\.v1\\.OrderUnknown, which shop\\.products\\.v1\\.ProductService consumes: a map with no max_pairs; an event could hold`)),
    ]);
  });
});
