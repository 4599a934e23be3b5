import { join } from "node:path";
import type { DescFile } from "@bufbuild/protobuf";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../../test/support/shop.js";
import { repoRoot } from "../repo-root.js";
import { breakingAdvice, breakingChanges } from "./checks.js";
import { contractEditor, lineOf, protoText } from "../../test/support/edited-contracts.js";
import { tightenAdvice, tighterValidationRules, unsetAdvice } from "./rule-changes.js";

const orderEvents = "shop/orders/v1/order_events.proto";
const orderService = "shop/orders/v1/order_service.proto";
const money = "shop/common/v1/money.proto";

const refusedRequest = "a request an older client sends could be refused with INVALID_ARGUMENT";
const deadLettered = "an event an older producer sends, or its stream holds, could be dead-lettered";

describe("tighterValidationRules", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const editor = contractEditor(dir.path);
  const { filesOf } = editor;
  /** The contracts of proto/ with each file of `edits` edited. */
  const edited = (edits: Record<string, (text: string) => string>): DescFile[] => filesOf(editor.edited(edits));
  const original = filesOf(join(repoRoot, "proto"));
  /** The findings of `after` against `before`, and none the other way round (the same change undone loosens). */
  const tighter = (before: DescFile[], after: DescFile[]): string[] => {
    expect(tighterValidationRules(before, after), "the change undone").toEqual([]);
    return tighterValidationRules(after, before);
  };

  const pageToken = "string page_token = 3 [(buf.validate.field).string.max_len = 200];";
  /** ListOrdersRequest's page_token (a request's field) with `rules` in place of its own. */
  const pageTokenWith = (rules: string) => edited({ [orderService]: (t) => t.replace(pageToken, `string page_token = 3 [${rules}];`) });
  const pageTokenAt = `${orderService}:${lineOf(orderService, pageToken)}:3:Field "page_token" of message "shop.orders.v1.ListOrdersRequest"`;
  const both = `${deadLettered}, and ${refusedRequest}`;

  it("refuses, in npm run breaking, a rule made tighter on an event, naming where and what to do instead", () => {
    const shorter = editor.edited({ [orderEvents]: (t) => t.replace("string reason = 3 [(buf.validate.field).string.max_len = 200];\n}\n\n// The product service", "string reason = 3 [(buf.validate.field).string.max_len = 100];\n}\n\n// The product service") });
    const result = breakingChanges(shorter, join(repoRoot, "proto"));
    expect(result.ok).toBe(false);
    expect(result.output).toBe(
      `${join(shorter, orderEvents)}:${lineOf(orderEvents, "string reason = 3 [(buf.validate.field).string.max_len = 200];")}:3:Field "reason" of message "shop.orders.v1.OrderCancelled": (buf.validate.field).string.max_len was lowered from 200 to 100; ${deadLettered}. ${tightenAdvice}\n\n${breakingAdvice}`,
    );
    expect(breakingChanges(join(repoRoot, "proto"), shorter), "the change undone").toMatchObject({ ok: true });
  });

  it("refuses each kind of tightening of a request's or an event's rules with its file:line, and lets the same change undone through", () => {
    expect(tighter(original, pageTokenWith("(buf.validate.field).string = {\n    min_len: 1\n    max_len: 200\n  }"))).toEqual([
      `${pageTokenAt}: (buf.validate.field).string.min_len = 1 was added; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    expect(tighter(original, pageTokenWith("(buf.validate.field).string = {\n    max_len: 200\n    uuid: true\n  }"))).toEqual([
      `${pageTokenAt}: (buf.validate.field).string.uuid was set; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    expect(tighter(original, edited({ [orderService]: (t) => t.replace("  Address shipping_address = 4;", "  Address shipping_address = 4 [(buf.validate.field).required = true];") }))).toEqual([
      `${orderService}:${lineOf(orderService, "Address shipping_address = 4;")}:3:Field "shipping_address" of message "shop.orders.v1.UpdateOrderRequest": (buf.validate.field).required was set; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    expect(tighter(original, edited({ [orderService]: (t) => t.replace("  int32 quantity = 2 [(buf.validate.field).int32 = {\n    gt: 0", "  int32 quantity = 2 [(buf.validate.field).int32 = {\n    gt: 1") }))).toEqual([
      `${orderService}:${lineOf(orderService, "int32 quantity = 2 [")}:3:Field "quantity" of message "shop.orders.v1.LineItem": (buf.validate.field).int32 bound narrowed from gt 0 to gt 1; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    expect(tighter(original, edited({ [money]: (t) => t.replace("lte: 100000000000000", "lt: 100000000000000") }))).toEqual([
      `${money}:${lineOf(money, "int64 amount_minor = 2 [")}:3:Field "amount_minor" of message "shop.common.v1.Money": (buf.validate.field).int64 bound narrowed from lte 100000000000000 to lt 100000000000000; ${both}. ${tightenAdvice}`,
    ]);
    expect(tighter(original, edited({ [orderService]: (t) => t.replace("  repeated LineItem lines = 2 [\n    (buf.validate.field).repeated = {\n      min_items: 1", "  repeated LineItem lines = 2 [\n    (buf.validate.field).repeated = {\n      min_items: 2") }))).toEqual([
      `${orderService}:${lineOf(orderService, "repeated LineItem lines = 2 [")}:3:Field "lines" of message "shop.orders.v1.CreateOrderRequest": (buf.validate.field).repeated.min_items was raised from 1 to 2; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    expect(tighter(original, edited({ [orderService]: (t) => t.replace("(buf.validate.field).repeated.max_items = 50,", "(buf.validate.field).repeated.max_items = 40,") }))).toEqual([
      `${orderService}:${lineOf(orderService, "repeated LineItem lines = 5 [")}:3:Field "lines" of message "shop.orders.v1.UpdateOrderRequest": (buf.validate.field).repeated.max_items was lowered from 50 to 40; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    const stateIn = (values: string) =>
      edited({ [orderService]: (t) => t.replace("OrderState state = 3 [(buf.validate.field).enum.defined_only = true];", `OrderState state = 3 [(buf.validate.field).enum = {\n    defined_only: true\n    in: [${values}]\n  }];`) });
    const stateAt = `${orderService}:${lineOf(orderService, "OrderState state = 3 [")}:3:Field "state" of message "shop.orders.v1.Order"`;
    expect(tighter(original, stateIn("1, 2, 3, 4"))).toEqual([`${stateAt}: (buf.validate.field).enum.in = [1 (ORDER_STATE_PENDING), 2 (ORDER_STATE_CONFIRMED), 3 (ORDER_STATE_REJECTED), 4 (ORDER_STATE_CANCELLED)] was added; ${deadLettered}. ${tightenAdvice}`]);
    expect(tighter(stateIn("1, 2, 3, 4"), stateIn("1, 2, 4"))).toEqual([`${stateAt}: (buf.validate.field).enum.in no longer holds 3 (ORDER_STATE_REJECTED); ${deadLettered}. ${tightenAdvice}`]);
    const notIn = (values: string) => pageTokenWith(`(buf.validate.field).string = {not_in: [${values}]}`);
    expect(tighter(notIn('"a"'), notIn('"a", "b"'))).toEqual([`${pageTokenAt}: (buf.validate.field).string.not_in now also holds "b"; ${refusedRequest}. ${tightenAdvice}`]);
    expect(tighter(original, edited({ [money]: (t) => t.replace('[(buf.validate.field).string.pattern = "^[A-Z]{3}$"]', '[(buf.validate.field).string = {\n    pattern: "^[A-Z]{3}$"\n    const: "EUR"\n  }]') }))).toEqual([
      `${money}:${lineOf(money, "string currency_code = 1 [")}:3:Field "currency_code" of message "shop.common.v1.Money": (buf.validate.field).string.const = "EUR" was added; ${both}. ${tightenAdvice}`,
    ]);
    expect(tighter(original, pageTokenWith('(buf.validate.field).string.max_len = 200,\n    (buf.validate.field).cel = {\n      id: "page_token.short"\n      message: "short"\n      expression: "size(this) < 100"\n    }'))).toEqual([
      `${pageTokenAt}: (buf.validate.field).cel "page_token.short" was added or its expression changed ("size(this) < 100"), which cannot be proved looser; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    const headerValue = (strict: string) => pageTokenWith(`(buf.validate.field).string = {\n    well_known_regex: KNOWN_REGEX_HTTP_HEADER_VALUE${strict}\n  }`);
    expect(tighter(headerValue("\n    strict: false"), headerValue(""))).toEqual([`${pageTokenAt}: (buf.validate.field).string.strict was set to true or unset (true); ${refusedRequest}. ${tightenAdvice}`]);
    const ignoring = (ignore: string) => pageTokenWith(`(buf.validate.field).string.min_len = 4,\n    (buf.validate.field).ignore = ${ignore}`);
    expect(tighter(ignoring("IGNORE_IF_ZERO_VALUE"), ignoring("IGNORE_UNSPECIFIED"))).toEqual([
      `${pageTokenAt}: (buf.validate.field).ignore changed from IGNORE_IF_ZERO_VALUE to IGNORE_UNSPECIFIED, so its rules check values they skipped; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    expect(tighter(ignoring("IGNORE_ALWAYS"), ignoring("IGNORE_IF_ZERO_VALUE"))).toEqual([
      `${pageTokenAt}: (buf.validate.field).ignore changed from IGNORE_ALWAYS to IGNORE_IF_ZERO_VALUE, so its rules check values they skipped; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    const updateOneof = (rule: string) => edited({ [orderService]: (t) => t.replace("message UpdateOrderRequest {\n", `message UpdateOrderRequest {\n  option (buf.validate.message).oneof = ${rule};\n`) });
    const updateAt = `${orderService}:${lineOf(orderService, "message UpdateOrderRequest {")}:1:Message "shop.orders.v1.UpdateOrderRequest"`;
    expect(tighter(original, updateOneof('{fields: ["shipping_address", "lines"]}'))).toEqual([
      `${updateAt}: (buf.validate.message).oneof {fields: [shipping_address, lines]} was added or made stricter; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    expect(tighter(updateOneof('{fields: ["shipping_address", "lines"]}'), updateOneof('{fields: ["shipping_address", "lines"], required: true}'))).toEqual([
      `${updateAt}: (buf.validate.message).oneof {fields: [shipping_address, lines], required: true} was added or made stricter; ${refusedRequest}. ${tightenAdvice}`,
    ]);
  });

  it("refuses a pattern or a CEL expression changed either way, which cannot be proved looser", () => {
    const wider = edited({ [money]: (t) => t.replace('pattern = "^[A-Z]{3}$"', 'pattern = "^[A-Z]{3,4}$"') });
    expect(tighterValidationRules(wider, original)).toEqual([
      `${money}:${lineOf(money, "string currency_code = 1 [")}:3:Field "currency_code" of message "shop.common.v1.Money": (buf.validate.field).string.pattern changed from "^[A-Z]{3}$" to "^[A-Z]{3,4}$", which cannot be proved looser; ${both}. ${tightenAdvice}`,
    ]);
    expect(tighterValidationRules(original, wider)).toHaveLength(1);
    const celChanged = edited({ [orderService]: (t) => t.replace("|| size(this.lines) > 0\"", "|| size(this.lines) > 1\"") });
    expect(tighterValidationRules(celChanged, original)).toEqual([
      `${orderService}:${lineOf(orderService, "message UpdateOrderRequest {")}:1:Message "shop.orders.v1.UpdateOrderRequest": (buf.validate.message).cel "lines" was added or its expression changed ("size(this.update_mask.paths) > 2 || !('lines' in this.update_mask.paths) || size(this.lines) > 1"), which cannot be proved looser; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    expect(tighterValidationRules(original, celChanged)).toHaveLength(1);
  });

  it("refuses a new field only when its rules refuse the zero value an older sender leaves in it", () => {
    const addFields = (t: string) => t.replace(pageToken, `${pageToken}\n  // New.\n  string cursor = 4 [(buf.validate.field).string.uuid = true];\n  // New.\n  string note = 5 [(buf.validate.field).string.max_len = 10];`);
    const added = edited({ [orderService]: addFields });
    expect(tighterValidationRules(added, original)).toEqual([
      `${orderService}:${lineOf(addFields(protoText(orderService)), "string cursor = 4")}:3:Field "cursor" of message "shop.orders.v1.ListOrdersRequest": a new field whose rules refuse its zero value (unset, "", 0), which is what an older sender leaves in it; ${refusedRequest}. ${unsetAdvice}`,
    ]);
  });

  it("refuses a field made no longer optional when its rules refuse the zero value it then has unset", () => {
    const required = edited({ [orderService]: (t) => t.replace("  optional string request_id = 4", "  string request_id = 4") });
    expect(tighter(original, required)).toEqual([
      `${orderService}:${lineOf(orderService, "optional string request_id = 4")}:3:Field "request_id" of message "shop.orders.v1.CreateOrderRequest": no longer optional (nor in a oneof), so its rules check it when unset, and refuse the zero value ("", 0) it has then, which an older sender that leaves it unset sends; ${refusedRequest}. ${unsetAdvice}`,
    ]);
  });

  it("passes the contracts against themselves, a rule rewritten to the same (gt 0 as gte 1, min_len 0), rules on answers, and skips the paths buf.yaml ignores", () => {
    expect(tighterValidationRules(original, filesOf(join(repoRoot, "proto")))).toEqual([]);
    expect(tighter(original, edited({ [orderService]: (t) => t.replace("  int32 quantity = 2 [(buf.validate.field).int32 = {\n    gt: 0", "  int32 quantity = 2 [(buf.validate.field).int32 = {\n    gte: 1") }))).toEqual([]);
    expect(tighter(original, pageTokenWith("(buf.validate.field).string = {\n    min_len: 0\n    max_len: 200\n  }"))).toEqual([]);
    // ListOrdersResponse is an answer only: no client of this project checks it.
    expect(tighter(original, edited({ [orderService]: (t) => t.replace("  string next_page_token = 2;", "  string next_page_token = 2 [(buf.validate.field).string.min_len = 5];") }))).toEqual([]);
    const shorter = edited({ [money]: (t) => t.replace("lte: 100000000000000", "lt: 100000000000000") });
    expect(tighterValidationRules(shorter, original, [money])).toEqual([]);
    expect(tighterValidationRules(shorter, original, ["shop/common/"])).toEqual([]);
    expect(tighterValidationRules(shorter, original, ["shop/orders"])).toHaveLength(1);
  });

  it("refuses a value taken out of an enum that a field holds under defined_only, its number reserved, which buf passes", () => {
    const withoutCancelled = edited({
      [orderService]: (t) => t.replace("  // Withdrawn by the customer; any reserved stock is released.\n  ORDER_STATE_CANCELLED = 4;\n", '  reserved 4;\n  reserved "ORDER_STATE_CANCELLED";\n'),
    });
    expect(tighter(original, withoutCancelled)).toEqual([
      `${orderService}:${lineOf(orderService, "OrderState state = 3 [")}:3:Field "state" of message "shop.orders.v1.Order": (buf.validate.field).enum.defined_only now refuses 4 (ORDER_STATE_CANCELLED), taken out of enum shop.orders.v1.OrderState; ${deadLettered}. ${tightenAdvice}`,
    ]);
  });

  it("leaves a field's type change to buf, whose one finding it is, and reads the rules of an interchangeable type (int32, uint32) as the same rules", () => {
    const pageSize = "int32 page_size = 2 [(buf.validate.field).int32 = {\n    gte: 0";
    const pageSizeAs = (declared: string) => editor.edited({ [orderService]: (t) => t.replace(pageSize, declared) });
    const at = `${orderService}:${lineOf(orderService, pageSize)}:3:`;
    const wider = pageSizeAs("int64 page_size = 2 [(buf.validate.field).int64 = {\n    gte: 0");
    const result = breakingChanges(wider, join(repoRoot, "proto"));
    expect(result.output.split("\n").filter((line) => line.startsWith(join(wider, at)))).toEqual([expect.stringContaining('Field "2" with name "page_size" on message "ListOrdersRequest" changed type from "int32" to "int64".')]);
    expect(tighterValidationRules(filesOf(wider), original)).toEqual([]);
    const listed = pageSizeAs("repeated int32 page_size = 2 [(buf.validate.field).repeated.items.int32 = {\n    gte: 0");
    expect(tighterValidationRules(filesOf(listed), original), "a cardinality change, buf's too").toEqual([]);
    expect(tighter(original, filesOf(pageSizeAs("uint32 page_size = 2 [(buf.validate.field).uint32 = {\n    gte: 0"))), "uint32, which buf passes, with the same rules").toEqual([]);
    expect(tighterValidationRules(filesOf(pageSizeAs("uint32 page_size = 2 [(buf.validate.field).uint32 = {\n    gte: 1")), original)).toEqual([
      `${at}Field "page_size" of message "shop.orders.v1.ListOrdersRequest": (buf.validate.field).uint32 bound narrowed from gte 0 to gte 1; ${refusedRequest}. ${tightenAdvice}`,
    ]);
  });

  it("compares rules held deeper and on every kind of value: a list's items, a map's values, doubles, durations, a range outside its bounds, a oneof", () => {
    /** ListOrdersRequest with `fields` (numbers from 9) after its own. */
    const withFields = (fields: string) => (t: string) =>
      t.replace('import "google/protobuf/field_mask.proto";', 'import "google/protobuf/duration.proto";\nimport "google/protobuf/field_mask.proto";').replace(pageToken, `${pageToken}\n${fields}`);
    const listOrders = (fields: string) => edited({ [orderService]: withFields(fields) });
    /** The line of ListOrdersRequest's first added field, past the added import. */
    const at = `${orderService}:${lineOf(withFields("")(protoText(orderService)), pageToken) + 1}:3`;
    const cases: [string, string, string][] = [
      [
        "  repeated string tags = 9 [(buf.validate.field).repeated.items.string.max_len = 10];",
        "  repeated string tags = 9 [(buf.validate.field).repeated.items.string.max_len = 5];",
        `${at}:Field "tags" of message "shop.orders.v1.ListOrdersRequest": (buf.validate.field).repeated.items.string.max_len was lowered from 10 to 5`,
      ],
      [
        "  map<string, int32> counts = 9 [(buf.validate.field).map.values.int32.lt = 10];",
        "  map<string, int32> counts = 9 [(buf.validate.field).map.values.int32.lt = 5];",
        `${at}:Field "counts" of message "shop.orders.v1.ListOrdersRequest": (buf.validate.field).map.values.int32 bound narrowed from lt 10 to lt 5`,
      ],
      [
        "  double weight = 9 [(buf.validate.field).double.gte = 0];",
        "  double weight = 9 [(buf.validate.field).double.gt = 0];",
        `${at}:Field "weight" of message "shop.orders.v1.ListOrdersRequest": (buf.validate.field).double bound narrowed from gte 0 to gt 0`,
      ],
      [
        "  google.protobuf.Duration wait = 9 [(buf.validate.field).duration.lte = {seconds: 60}];",
        "  google.protobuf.Duration wait = 9 [(buf.validate.field).duration.lte = {seconds: 30}];",
        `${at}:Field "wait" of message "shop.orders.v1.ListOrdersRequest": (buf.validate.field).duration bound narrowed from lte 60s to lte 30s`,
      ],
      [
        "  oneof filter {\n    // A.\n    string status = 9;\n    // B.\n    string sku = 10;\n  }",
        "  oneof filter {\n    option (buf.validate.oneof).required = true;\n    // A.\n    string status = 9;\n    // B.\n    string sku = 10;\n  }",
        `${at}:Oneof "filter" of message "shop.orders.v1.ListOrdersRequest": (buf.validate.oneof).required was set`,
      ],
    ];
    for (const [before, after, finding] of cases) expect(tighter(listOrders(before), listOrders(after))).toEqual([`${finding}; ${refusedRequest}. ${tightenAdvice}`]);
    // A member taken out of a required oneof, its number reserved (two lines above the oneof): an older client that sets it alone sends the oneof unset.
    const required = "  oneof filter {\n    option (buf.validate.oneof).required = true;\n    // A.\n    string status = 9;\n";
    const withoutSku = `  reserved 10;\n  reserved "sku";\n${required}  }`;
    expect(tighter(listOrders(`${required}    // B.\n    string sku = 10;\n  }`), listOrders(withoutSku))).toEqual([
      `${orderService}:${lineOf(withFields(withoutSku)(protoText(orderService)), "oneof filter {")}:3:Oneof "filter" of message "shop.orders.v1.ListOrdersRequest": (buf.validate.oneof).required, and sku (10) taken out of it, which an older sender may set alone; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    // gt above lt keeps the values outside them: compared only as a whole, either way.
    const outside = (gt: number) => listOrders(`  int32 size = 9 [(buf.validate.field).int32 = {\n    gt: ${gt}\n    lt: 5\n  }];`);
    expect(tighterValidationRules(outside(11), outside(10))).toEqual([
      `${at}:Field "size" of message "shop.orders.v1.ListOrdersRequest": (buf.validate.field).int32 bounds changed from gt 10 and lt 5 to gt 11 and lt 5, a range outside its bounds, which cannot be proved looser; ${refusedRequest}. ${tightenAdvice}`,
    ]);
    expect(tighterValidationRules(outside(10), outside(11))).toHaveLength(1);
  });
});
