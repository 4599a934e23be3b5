import { ScalarType, create, createFileRegistry } from "@bufbuild/protobuf";
import { FieldDescriptorProto_Label as Label, FieldDescriptorProto_Type as Type, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { CreateOrderRequest } from "../../gen/ts/shop/orders/v1/order_service_pb.js";
import { createMessageChecker } from "./message-checker.js";
import { createWireChecks, fixedWidth } from "./wire-shape.js";

const checker = createMessageChecker(descriptorSet);
const problem = (typeName: string, bytes: number[] | Uint8Array) => checker.wireProblem(typeName, Uint8Array.from(bytes));

describe("wireProblem", () => {
  it("takes what ts-proto and the other languages encode: nested messages, lists, unknown fields and groups", () => {
    const order = CreateOrderRequest.encode({
      customerId: "c-1",
      lines: [{ productId: "01890a5d-ac96-774b-bcce-b302099a8057", quantity: 2 }],
      shippingAddress: { recipient: "A", line1: "1", line2: "", city: "L", postalCode: "1", countryCode: "GB" },
      requestId: "01890a5d-ac96-774b-bcce-b302099a8058",
    }).finish();
    expect(problem("shop.orders.v1.CreateOrderRequest", order)).toBeUndefined();
    expect(problem("shop.orders.v1.CreateOrderRequest", [])).toBeUndefined();
    // Unknown: a varint, a fixed64, a group holding a group, a length-delimited field.
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x50, 1, 0x59, 1, 2, 3, 4, 5, 6, 7, 8, 0x5b, 0x63, 0x68, 1, 0x64, 0x5c, 0x6a, 2, 0, 0])).toBeUndefined();
    // A 10-byte varint holding the 64th bit (-1 as an int64) is within 64 bits.
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x50, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])).toBeUndefined();
  });

  it("names what breaks the format, in a nested message too", () => {
    const lines = (...inner: number[]) => [0x12, inner.length, ...inner];
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x0a, 1, 0x41, 0x00])).toBe("a tag names field number 0, which no field has");
    expect(problem("shop.orders.v1.CreateOrderRequest", lines(0x10, 2, 0x00, 0x0a, 0))).toBe("a tag names field number 0, which no field has");
    expect(problem("shop.orders.v1.CreateOrderRequest", lines(0x10, 2, 0x0c))).toBe("an end-group tag (field 1) ends no group");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x5b, 0x50, 1])).toBe("group 11 has no end-group tag");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x5b, 0x64])).toBe("group 11 is ended by field 12's end-group tag");
    expect(problem("shop.orders.v1.CreateOrderRequest", lines(0x0a, 5, 0x41))).toBe("field 1's length, 5 bytes, runs past the end of its message");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x59, 1, 2, 3])).toBe("field 11's 8 bytes run past the end of its message");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x5d, 1])).toBe("field 11's 4 bytes run past the end of its message");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x50, 0x80])).toBe("a varint runs past the end of its message");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x50, ...Array(10).fill(0x80), 0])).toBe("a varint is longer than 10 bytes");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x50, ...Array(9).fill(0xff), 0x02])).toBe("a varint does not fit in 64 bits");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0xf8, 0xff, 0xff, 0xff, 0x1f, 0])).toBe("a tag's varint does not fit in 32 bits");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x80])).toBe("a tag runs past the end of its message");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x56, 0])).toBe("field 10 has wire type 6, which is not one");
    // A length of 5 bytes that does not fit in 32 bits runs past any message.
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x0a, 0xff, 0xff, 0xff, 0xff, 0x7f])).toMatch(/^field 1's length, \d+ bytes, runs past the end/);
  });

  it("refuses a group on a field the message declares, which ts-proto skips as if the field were not sent and protobuf-es reads as its value", () => {
    const lines = (...inner: number[]) => [0x12, inner.length, ...inner];
    // LineItem.quantity (2, an int32) as an empty group, and as one holding a record.
    expect(problem("shop.orders.v1.CreateOrderRequest", lines(0x13, 0x14))).toBe("field 2 (shop.orders.v1.LineItem.quantity) comes as a group (wire type 3), which it is not");
    expect(problem("shop.orders.v1.CreateOrderRequest", lines(0x13, 0x08, 0xe8, 0x07, 0x14))).toBe("field 2 (shop.orders.v1.LineItem.quantity) comes as a group (wire type 3), which it is not");
    // A string, a list of messages and a message, at the top.
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x0b, 0x0c])).toBe("field 1 (shop.orders.v1.CreateOrderRequest.customer_id) comes as a group (wire type 3), which it is not");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x13, 0x14])).toBe("field 2 (shop.orders.v1.CreateOrderRequest.lines) comes as a group (wire type 3), which it is not");
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x1b, 0x1c])).toBe("field 3 (shop.orders.v1.CreateOrderRequest.shipping_address) comes as a group (wire type 3), which it is not");
    // Inside a group of an unknown field, the fields are unknown too: taken, as before.
    expect(problem("shop.orders.v1.CreateOrderRequest", [0x5b, 0x13, 0x14, 0x5c])).toBeUndefined();
  });

  it("takes a group on a message field written delimited (a proto2 group), and names a map entry's key or value that comes as one", () => {
    const file = create(FileDescriptorProtoSchema, {
      name: "wire_test.proto",
      package: "wiretest",
      syntax: "proto2",
      messageType: [
        {
          name: "Outer",
          field: [
            { name: "count", number: 1, type: Type.INT32, label: Label.OPTIONAL },
            { name: "inner", number: 2, type: Type.GROUP, typeName: ".wiretest.Outer.Inner", label: Label.OPTIONAL },
            { name: "labels", number: 3, type: Type.MESSAGE, typeName: ".wiretest.Outer.LabelsEntry", label: Label.REPEATED },
          ],
          nestedType: [
            { name: "Inner", field: [{ name: "n", number: 1, type: Type.INT32, label: Label.OPTIONAL }] },
            { name: "LabelsEntry", field: [{ name: "key", number: 1, type: Type.STRING, label: Label.OPTIONAL }, { name: "value", number: 2, type: Type.INT32, label: Label.OPTIONAL }], options: { mapEntry: true } },
          ],
        },
      ],
    });
    const check = createWireChecks()(createFileRegistry(file, () => undefined).getMessage("wiretest.Outer")!);
    expect(check(Uint8Array.from([0x13, 0x08, 0x01, 0x14]))).toBeUndefined();
    expect(check(Uint8Array.from([0x0b, 0x0c]))).toBe("field 1 (wiretest.Outer.count) comes as a group (wire type 3), which it is not");
    expect(check(Uint8Array.from([0x1a, 3, 0x0a, 1, 0x41]))).toBeUndefined();
    expect(check(Uint8Array.from([0x1a, 2, 0x13, 0x14]))).toBe("field 2 (wiretest.Outer.labels's value) comes as a group (wire type 3), which it is not");
    expect(check(Uint8Array.from([0x1a, 2, 0x0b, 0x0c]))).toBe("field 1 (wiretest.Outer.labels's key) comes as a group (wire type 3), which it is not");
  });

  it("refuses a packed list whose last element is cut off, which ts-proto's decoder reads on into the next field", () => {
    // buf.validate.Int32Rules: repeated int32 in = 6; FloatRules: repeated float in = 6 (any repeated number may come packed).
    const packedInts = new BinaryWriter().uint32((6 << 3) | 2).uint32(3).int32(1).int32(300).finish();
    expect(problem("buf.validate.Int32Rules", packedInts)).toBeUndefined();
    expect(problem("buf.validate.Int32Rules", [0x32, 2, 1, 0x80, 0x08, 1])).toBe("packed field 6: a varint runs past the end of its message");
    expect(problem("buf.validate.FloatRules", [0x32, 8, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40])).toBeUndefined();
    expect(problem("buf.validate.FloatRules", [0x32, 6, 0, 0, 0x80, 0x3f, 0, 0, 0x40, 0])).toBe("packed field 6's 6 bytes are not whole 4-byte elements");
  });

  it("refuses nesting deeper than 100, and goes through a megabyte of small fields without recursing", () => {
    const deep = [...Array(101).fill(0x5b), ...Array(101).fill(0x5c)];
    expect(problem("shop.orders.v1.CreateOrderRequest", deep)).toBe("messages and groups are nested more than 100 deep");
    expect(problem("shop.orders.v1.CreateOrderRequest", [...Array(100).fill(0x5b), ...Array(100).fill(0x5c)])).toBeUndefined();
    const many = new Uint8Array(1 << 20);
    for (let i = 0; i < many.length; i += 2) many[i] = 0x50;
    expect(problem("shop.orders.v1.CreateOrderRequest", many)).toBeUndefined();
  });
});

describe("fixedWidth", () => {
  it("is the bytes a fixed-width scalar takes as the wire writes it, and undefined for varints, strings and bytes", () => {
    const written = (write: (w: BinaryWriter) => BinaryWriter) => write(new BinaryWriter()).finish().length;
    expect([ScalarType.FLOAT, ScalarType.FIXED32, ScalarType.SFIXED32, ScalarType.DOUBLE, ScalarType.FIXED64, ScalarType.SFIXED64].map(fixedWidth)).toEqual([
      written((w) => w.float(1)),
      written((w) => w.fixed32(1)),
      written((w) => w.sfixed32(-1)),
      written((w) => w.double(1)),
      written((w) => w.fixed64(1)),
      written((w) => w.sfixed64(-1)),
    ]);
    for (const other of [ScalarType.INT32, ScalarType.INT64, ScalarType.UINT32, ScalarType.UINT64, ScalarType.SINT32, ScalarType.SINT64, ScalarType.BOOL, ScalarType.STRING, ScalarType.BYTES]) {
      expect(fixedWidth(other), ScalarType[other]).toBeUndefined();
    }
  });
});
