/**
 * The access side of `npm run breaking`: buf compares an RPC's messages, not
 * who may call it. A role taken out of a method's `(concord.v1.access)`, or
 * let in only on what it owns where it reached everything, or an
 * `owner_field` added for its owner_roles, makes the new
 * build's server refuse, with PERMISSION_DENIED, a call the running callers
 * with that role make; so does the option removed, which closes the method
 * to everyone while tokens are checked.
 */
import { createRegistry, type DescFile } from "@bufbuild/protobuf";
import { methodAccess, type MethodAccess } from "../../platform/grpc/access.js";
import { isIgnoredPath, locateMethod } from "./source-locations.js";

/** What to do instead of access narrowed, after each such finding. */
export const accessAdvice = "Instead: first move every caller with that role off the method, then narrow its access in a commit of its own that lists its file under breaking: ignore.";

/** What to do instead of an owner_field added, after such a finding. */
export const ownerFieldAdvice =
  "Instead: first ship every caller with that role sending its own id (its token's subject) in the field, then add owner_field in a commit of its own that lists its file under breaking: ignore.";

/**
 * One line per method of both `previous` and `current` that a role could
 * call before and may not now, or now only on what it owns; and per method
 * whose owner_field changed to another field, or was added where its
 * owner_roles had none. Lines start
 * `file:line:column:`, as buf's own; a method whose file is under one of the
 * `ignored` paths (buf.yaml's `breaking.ignore`) is left out.
 */
export function narrowerAccess(current: readonly DescFile[], previous: readonly DescFile[], ignored: readonly string[] = []): string[] {
  const [now, then] = [createRegistry(...current), createRegistry(...previous)];
  const before = new Map(previous.flatMap((f) => f.services).map((s) => [s.typeName, s]));
  const found: string[] = [];
  for (const service of current.flatMap((f) => f.services)) {
    if (isIgnoredPath(`${service.file.name}.proto`, ignored)) continue;
    for (const method of service.methods) {
      const old = before.get(service.typeName)?.methods.find((m) => m.name === method.name);
      const was = old && methodAccess(then, old);
      if (!was) continue;
      const is: MethodAccess = methodAccess(now, method) ?? { roles: [], ownerRoles: [], ownerProperty: undefined, ownerField: undefined };
      const changes: { what: string; advice: string }[] = [];
      const narrowed = (what: string, advice = accessAdvice) => changes.push({ what, advice });
      const callers = [...new Set([...was.roles, ...was.ownerRoles])];
      const gone = callers.filter((r) => !is.roles.includes(r) && !is.ownerRoles.includes(r));
      const ownerOnly = was.roles.filter((r) => !is.roles.includes(r) && is.ownerRoles.includes(r));
      if (gone.length === callers.length && is.roles.length + is.ownerRoles.length === 0) narrowed("its (concord.v1.access) option is gone, so no one may call it");
      else if (gone.length > 0) narrowed(`role ${gone.map((r) => `"${r}"`).join(", ")} may no longer call it`);
      if (ownerOnly.length > 0) narrowed(`role ${ownerOnly.map((r) => `"${r}"`).join(", ")} may now call it only on what it owns`);
      if (is.ownerField !== undefined && was.ownerField !== undefined && is.ownerField !== was.ownerField && is.ownerRoles.length > 0) {
        narrowed(`owner_field changed from "${was.ownerField}" to "${is.ownerField}", which cannot be proved looser`);
      }
      // Without owner_field the handler judged ownership from stored data; with it the server refuses, before the
      // handler runs, a call whose field is not the caller's own id, as an older caller may leave it unset.
      const nowChecked = was.ownerRoles.filter((r) => is.ownerRoles.includes(r));
      if (is.ownerField !== undefined && was.ownerField === undefined && nowChecked.length > 0) {
        narrowed(`owner_field "${is.ownerField}" was added, so role ${nowChecked.map((r) => `"${r}"`).join(", ")} may call it only with its own id in that field`, ownerFieldAdvice);
      }
      for (const { what, advice } of changes) {
        found.push(`${locateMethod(method)}:RPC "${service.typeName}.${method.name}": ${what}; a running caller's call could be refused with PERMISSION_DENIED. ${advice}`);
      }
    }
  }
  return found;
}
