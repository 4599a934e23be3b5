/**
 * Where a contract element is declared, as buf prints it in its findings
 * (`file.proto:line:column`), and whether buf.yaml's `breaking.ignore`
 * leaves a file out: shared by the checks of `npm run breaking` that buf
 * does not make itself.
 */
import type { DescField, DescFile, DescMessage, DescMethod, DescOneof, DescService } from "@bufbuild/protobuf";

/** `file.proto:line:column` of a message's declaration, 1-based, as buf prints it. */
export function locateMessage(message: DescMessage): string {
  return locate(message.file, messagePath(message));
}

/** locateMessage for a field of a message. */
export function locateField(field: DescField): string {
  return locate(field.parent.file, [...messagePath(field.parent), 2, field.parent.proto.field.indexOf(field.proto)]);
}

/** locateMessage for a oneof of a message. */
export function locateOneof(oneof: DescOneof): string {
  return locate(oneof.parent.file, [...messagePath(oneof.parent), 8, oneof.parent.oneofs.indexOf(oneof)]);
}

/** locateMessage for a service. */
export function locateService(service: DescService): string {
  return locate(service.file, [6, service.file.services.indexOf(service)]);
}

/** locateMessage for a method of a service. */
export function locateMethod(method: DescMethod): string {
  const service = method.parent;
  return locate(service.file, [6, service.file.services.indexOf(service), 2, service.methods.indexOf(method)]);
}

/** locateMessage for a file's option statement, `option (ext) = ...;`, by the extension's number. */
export function locateFileOption(file: DescFile, extension: number): string {
  return locate(file, [8, extension]);
}

/** Whether `file` (relative to proto/) is one of the `ignored` paths or below one, as buf.yaml's `breaking.ignore` means them. */
export function isIgnoredPath(file: string, ignored: readonly string[]): boolean {
  return ignored.some((path) => file === path || file.startsWith(`${path.replace(/\/+$/, "")}/`));
}

/** The SourceCodeInfo path of a message's declaration. */
function messagePath(message: DescMessage): number[] {
  const path: number[] = [];
  for (let m: DescMessage | undefined = message; m; m = m.parent) {
    const siblings = m.parent ? m.parent.proto.nestedType : m.file.proto.messageType;
    path.unshift(m.parent ? 3 : 4, siblings.indexOf(m.proto));
  }
  return path;
}

/** Where the element at a SourceCodeInfo `path` of `file` begins. */
function locate(file: DescFile, path: readonly number[]): string {
  const location = file.proto.sourceCodeInfo?.location.find((l) => l.path.length === path.length && l.path.every((p, i) => p === path[i]));
  const [line, column] = location ? [location.span[0] + 1, location.span[1] + 1] : [1, 1];
  return `${file.name}.proto:${line}:${column}`;
}
