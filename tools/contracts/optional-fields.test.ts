import { afterAll, describe, expect, it } from "vitest";
import { contractEditor } from "../../test/support/edited-contracts.js";
import { tempDir } from "../../test/support/shop.js";
import { repoRoot } from "../repo-root.js";
import { nextSteps } from "../gen.js";
import { addedOptionalFields } from "./optional-fields.js";

const orders = "shop/orders/v1/order_service.proto";

describe("addedOptionalFields", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const { edited, filesOf } = contractEditor(dir.path);
  const now = filesOf(`${repoRoot}/proto`);

  it("names the fields added as optional or in a oneof, which the typecheck names no place for, and leaves out the rest", () => {
    // `npm run gen` said the typecheck would name the code to change; for `optional string note = 12;` it names none.
    const changed = edited({
      [orders]: (t) =>
        t
          .replace(/^(message Order \{\n[\s\S]*?)^\}\n/m, "$1  optional string note = 12;\n  string plain = 13;\n  oneof gift {\n    string gift_text = 14;\n    int32 gift_code = 15;\n  }\n}\n")
          .replace(/^(message CreateOrderRequest \{\n[\s\S]*?)^\}\n/m, "$1  optional string note = 12;\n}\n")
          .concat("\n// New.\nmessage Fresh {\n  // Its own.\n  optional string note = 1;\n}\n"),
    });
    expect(addedOptionalFields(filesOf(changed), now)).toEqual([
      "shop.orders.v1.Order.note",
      "shop.orders.v1.Order.gift_text",
      "shop.orders.v1.Order.gift_code",
      "shop.orders.v1.CreateOrderRequest.note",
    ]);
    expect(addedOptionalFields(now, now)).toEqual([]);
    // request_id was optional before: it is no field added.
    expect(addedOptionalFields(now, filesOf(changed))).toEqual([]);
  });

  it("has npm run gen's next: line say the typecheck names no place for them", () => {
    expect(nextSteps()).not.toContain("no place for");
    expect(nextSteps(["shop.orders.v1.Order.note", "shop.orders.v1.CreateOrderRequest.note"])).toContain(
      "and no place for shop.orders.v1.Order.note and shop.orders.v1.CreateOrderRequest.note: a field declared optional (or in a oneof) may be left out in TypeScript",
    );
  });
});
