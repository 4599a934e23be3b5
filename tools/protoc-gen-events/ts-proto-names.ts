/**
 * Names and paths of what ts-proto generates (with the options in
 * buf.gen.yaml: fileSuffix=_pb, importSuffix=.js, default snakeToCamel), so
 * the bindings can import the message interfaces and codecs it emits.
 */
import type { DescField, DescFile, DescMessage } from "@bufbuild/protobuf";

/** Project-relative import path of ts-proto's module for a proto file. */
export function tsProtoModule(file: DescFile): string {
  return `./${file.name}_pb.js`;
}

/** Project-relative path of the bindings this plugin writes for a proto file. */
export function bindingsFile(file: DescFile): string {
  return `${file.name}_jetstream.ts`;
}

/** Project-relative path of the method traits this plugin writes for a proto file with services. */
export function methodsFile(file: DescFile): string {
  return `${file.name}_rpc.ts`;
}

/** Import path of the bindings module for a proto file. */
export function bindingsModule(file: DescFile): string {
  return `./${file.name}_jetstream.js`;
}

/**
 * ts-proto's exported name of a message: nested names joined by `_`
 * (`Outer_Inner`), snake_case parts camel-cased, and names that clash with
 * JavaScript built-ins suffixed with `Message`.
 */
export function tsProtoMessageName(message: DescMessage): string {
  const parts: string[] = [];
  for (let m: DescMessage | undefined = message; m; m = m.parent) parts.unshift(snakeToCamel(m.name));
  const name = parts.join("_");
  return name === "Date" || name === "Function" ? `${name}Message` : name;
}

/** ts-proto's property name of a field (`order_id` becomes `orderId`). */
export function tsProtoPropertyName(field: DescField): string {
  return snakeToCamel(field.name);
}

/** ts-proto's snake_case to camelCase rule, kept word for word. */
function snakeToCamel(name: string): string {
  if (!name.includes("_")) return name;
  const hasLowerCase = /[a-z]/.test(name);
  return name
    .split("_")
    .map((word, i) => {
      const w = hasLowerCase ? word : word.toLowerCase();
      return i === 0 ? w : w.charAt(0).toUpperCase() + w.slice(1);
    })
    .join("");
}

/** `OrderPlaced` becomes `orderPlaced`: the handler method for an event. */
export function lowerCamel(name: string): string {
  return name.charAt(0).toLowerCase() + name.slice(1);
}

/** `SHOP_ORDERS` becomes `ShopOrders`: the prefix of a stream's exports. */
export function streamConstPrefix(streamName: string): string {
  return streamName
    .toLowerCase()
    .split(/[_-]+/)
    .filter((w) => w !== "")
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join("");
}
