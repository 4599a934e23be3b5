import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";

let configured = false;

/**
 * Makes every protobuf decode in this process (ts-proto's generated code and
 * @bufbuild/protobuf share the reader) refuse a string field that is not
 * valid UTF-8, as proto3 requires, instead of putting U+FFFD in its place:
 * such a request or event is undecodable, so it is refused or dead-lettered,
 * and never stored with its text changed. Idempotent.
 */
export function refuseInvalidUtf8(): void {
  if (configured) return;
  configured = true;
  const base = getTextEncoding();
  const fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  configureTextEncoding({
    ...base,
    decodeUtf8(bytes: Uint8Array): string {
      try {
        return fatal.decode(bytes);
      } catch {
        throw new Error("a string field is not valid UTF-8");
      }
    },
  });
}
