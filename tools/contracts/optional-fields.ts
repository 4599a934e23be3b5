import { createRegistry, type DescFile, type DescMessage } from "@bufbuild/protobuf";

/** Every message of `files`, nested ones included. */
function messagesOf(files: readonly DescFile[]): DescMessage[] {
  const found: DescMessage[] = [];
  const visit = (message: DescMessage): void => {
    found.push(message);
    message.nestedMessages.forEach(visit);
  };
  for (const file of files) file.messages.forEach(visit);
  return found;
}

/**
 * The fields of `now` that `then` lacks, in messages `then` already has,
 * whose TypeScript property ts-proto makes optional: a field declared
 * `optional` (explicit presence) or a member of a oneof. `npm run
 * typecheck` names the code that builds a message without any other kind
 * of new field, and none that leaves out one of these. Full names
 * (`shop.orders.v1.Order.note`), in the order of their files.
 */
export function addedOptionalFields(now: readonly DescFile[], then: readonly DescFile[]): string[] {
  const before = createRegistry(...then);
  const added: string[] = [];
  for (const message of messagesOf(now)) {
    const old = before.getMessage(message.typeName);
    if (!old) continue;
    for (const field of message.fields) {
      if (!field.proto.proto3Optional && field.oneof === undefined) continue;
      if (old.fields.some((f) => f.number === field.number)) continue;
      added.push(`${message.typeName}.${field.name}`);
    }
  }
  return added;
}
