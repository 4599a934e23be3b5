import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { type DescriptorProto, type EnumDescriptorProto, type FieldDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";

/**
 * Compiled .proto files looked up the ways server reflection asks: by file
 * name, by the full name of any symbol a file declares, by extension. Each
 * file is kept as the exact bytes protoc wrote.
 */
export interface DescriptorIndex {
  /** Every file name, in the order the descriptor sets hold them. */
  readonly fileNames: readonly string[];
  /**
   * The encoded FileDescriptorProto of `fileName` followed by those of its
   * transitive imports not in `alreadySent` (which is updated); undefined for
   * an unknown file. The file itself is always included.
   */
  fileWithImports(fileName: string, alreadySent: Set<string>): Uint8Array[] | undefined;
  /** The file declaring a package-qualified symbol: service, method, message, enum, enum value, field, oneof or extension. */
  fileOfSymbol(fullName: string): string | undefined;
  /** The file declaring extension `number` of message `extendee`. */
  fileOfExtension(extendee: string, number: number): string | undefined;
  /** The extension numbers declared for message `typeName`, ascending; undefined when no such message is known. */
  extensionNumbersOf(typeName: string): number[] | undefined;
}

interface IndexedFile {
  readonly bytes: Uint8Array;
  readonly imports: readonly string[];
}

/**
 * Indexes serialized google.protobuf.FileDescriptorSets. A file in more than
 * one set is kept once. Throws when two sets hold different files of one name,
 * two files declare one symbol, or a file imports one no set holds: reflection
 * would then serve descriptors a client cannot link.
 */
export function createDescriptorIndex(descriptorSets: readonly Uint8Array[]): DescriptorIndex {
  const files = new Map<string, IndexedFile>();
  const symbols = new Map<string, string>();
  const messages = new Set<string>();
  const extensions = new Map<string, Map<number, string>>();

  const declare = (symbol: string, fileName: string): void => {
    const other = symbols.get(symbol);
    if (other !== undefined && other !== fileName) throw new Error(`${symbol} is declared by both ${other} and ${fileName}`);
    symbols.set(symbol, fileName);
  };
  const declareExtension = (field: FieldDescriptorProto, scope: string, fileName: string): void => {
    declare(scope + field.name, fileName);
    const extendee = field.extendee.replace(/^\./, "");
    const numbers = extensions.get(extendee) ?? new Map<number, string>();
    numbers.set(field.number, fileName);
    extensions.set(extendee, numbers);
  };
  const declareEnum = (e: EnumDescriptorProto, scope: string, fileName: string): void => {
    declare(scope + e.name, fileName);
    // Enum values are scoped like their enum, not inside it (C++ rules).
    for (const v of e.value) declare(scope + v.name, fileName);
  };
  const declareMessage = (m: DescriptorProto, scope: string, fileName: string): void => {
    const name = scope + m.name;
    declare(name, fileName);
    messages.add(name);
    for (const f of m.field) declare(`${name}.${f.name}`, fileName);
    for (const o of m.oneofDecl) declare(`${name}.${o.name}`, fileName);
    for (const x of m.extension) declareExtension(x, `${name}.`, fileName);
    for (const e of m.enumType) declareEnum(e, `${name}.`, fileName);
    for (const n of m.nestedType) declareMessage(n, `${name}.`, fileName);
  };

  for (const set of descriptorSets) {
    for (const bytes of fileDescriptorProtosOf(set)) {
      const file = fromBinary(FileDescriptorProtoSchema, bytes);
      const known = files.get(file.name);
      if (known) {
        if (!equalBytes(known.bytes, bytes)) throw new Error(`the descriptor sets hold two different files named ${file.name}`);
        continue;
      }
      files.set(file.name, { bytes, imports: file.dependency });
      const scope = file.package === "" ? "" : `${file.package}.`;
      for (const m of file.messageType) declareMessage(m, scope, file.name);
      for (const e of file.enumType) declareEnum(e, scope, file.name);
      for (const x of file.extension) declareExtension(x, scope, file.name);
      for (const s of file.service) {
        declare(scope + s.name, file.name);
        for (const m of s.method) declare(`${scope}${s.name}.${m.name}`, file.name);
      }
    }
  }
  for (const [name, file] of files) {
    const missing = file.imports.find((i) => !files.has(i));
    if (missing !== undefined) throw new Error(`${name} imports ${missing}, which no descriptor set holds`);
  }

  return {
    fileNames: [...files.keys()],
    fileWithImports(fileName, alreadySent) {
      if (!files.has(fileName)) return undefined;
      const out: Uint8Array[] = [];
      const visited = new Set<string>();
      const queue = [fileName];
      while (queue.length > 0) {
        const name = queue.shift() as string;
        if (visited.has(name)) continue;
        visited.add(name);
        const file = files.get(name) as IndexedFile;
        if (name === fileName || !alreadySent.has(name)) out.push(file.bytes);
        alreadySent.add(name);
        queue.push(...file.imports);
      }
      return out;
    },
    fileOfSymbol: (fullName) => symbols.get(fullName),
    fileOfExtension: (extendee, number) => extensions.get(extendee)?.get(number),
    extensionNumbersOf(typeName) {
      if (!messages.has(typeName)) return undefined;
      return [...(extensions.get(typeName)?.keys() ?? [])].sort((a, b) => a - b);
    },
  };
}

/** The FileDescriptorProtos of a FileDescriptorSet (field 1), as the bytes they were written with. */
function fileDescriptorProtosOf(set: Uint8Array): Uint8Array[] {
  const reader = new BinaryReader(set);
  const out: Uint8Array[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.LengthDelimited) out.push(reader.bytes());
    else reader.skip(wireType);
  }
  return out;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
