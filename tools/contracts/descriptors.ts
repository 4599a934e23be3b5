import { create, toBinary, type DescFile } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

/**
 * The compiled descriptors of the contracts' third-party imports, as a
 * FileDescriptorSet for `protoc --descriptor_set_in`. They come from the
 * @bufbuild/protovalidate npm package, so no registry is needed and no
 * third-party .proto file is kept in the repository.
 */
export function dependencyDescriptorSet(): Uint8Array {
  const files = new Map<string, FileDescriptorProto>();
  const visit = (file: DescFile): void => {
    if (files.has(file.proto.name)) return;
    for (const dep of file.dependencies) visit(dep);
    files.set(file.proto.name, file.proto);
  };
  visit(file_buf_validate_validate);
  return toBinary(FileDescriptorSetSchema, create(FileDescriptorSetSchema, { file: [...files.values()] }));
}
