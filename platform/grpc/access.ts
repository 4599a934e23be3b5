import { getOption, hasOption, type DescExtension, type DescMethod, type Message, type Registry } from "@bufbuild/protobuf";
import type { GenExtension } from "@bufbuild/protobuf/codegenv2";
import type { MethodOptions } from "@bufbuild/protobuf/wkt";
import type { Metadata } from "@grpc/grpc-js";
import { TokenError, type TokenVerifier } from "../auth/index.js";
import { Code, StatusError } from "../errors/index.js";

/**
 * Who made a call and how far it may reach, for handlers (`context.principal`).
 * A handler whose method declares owner roles but no owner field checks the
 * owner of what it touches with `mayAccessOwnedBy`.
 */
export interface Principal {
  /** The token's subject; undefined when the server checks no tokens. */
  readonly subject: string | undefined;
  readonly roles: readonly string[];
  /** The call was let in through one of the method's owner roles: it may touch only what `subject` owns. */
  readonly ownerOnly: boolean;
}

/** The principal of every call on a server that checks no tokens: it may do anything. */
export const unrestricted: Principal = Object.freeze({ subject: undefined, roles: Object.freeze([]), ownerOnly: false });

/** Whether `principal` may touch a resource owned by `ownerId`. */
export function mayAccessOwnedBy(principal: Principal, ownerId: string): boolean {
  return !principal.ownerOnly || principal.subject === ownerId;
}

/** PERMISSION_DENIED for a caller that reached for what another owns; `what` names it ("order 42"). */
export function notTheOwner(principal: Principal, what: string): StatusError {
  return new StatusError(Code.PERMISSION_DENIED, `${principal.subject ?? "the caller"} may only reach what it owns, and ${what} belongs to someone else`);
}

/** concord.v1.AccessOptions as declared on a method. */
export interface MethodAccess {
  readonly roles: readonly string[];
  readonly ownerRoles: readonly string[];
  /** The request property (ts-proto's camelCase) naming the owner, when the request carries it. */
  readonly ownerProperty: string | undefined;
  /** Its name in the contract, for messages. */
  readonly ownerField: string | undefined;
}

interface AccessOptionsValue extends Message<"concord.v1.AccessOptions"> {
  roles: string[];
  ownerRoles: string[];
  ownerField: string;
}

/**
 * The access rule the contract declares for `method`. Throws when the
 * descriptor set lacks concord.v1.access, or when owner_field names no
 * string field of the request: both are contract mistakes, found at start.
 */
export function methodAccess(registry: Registry, method: DescMethod): MethodAccess | undefined {
  const ext = registry.getExtension("concord.v1.access") as DescExtension | undefined;
  if (!ext) throw new Error("the descriptor set has no concord.v1.access option; run `npm run gen`");
  const typed = ext as unknown as GenExtension<MethodOptions, AccessOptionsValue>;
  if (!hasOption(method, typed)) return undefined;
  const value = getOption(method, typed);
  let ownerProperty: string | undefined;
  if (value.ownerField !== "") {
    const field = method.input.fields.find((f) => f.name === value.ownerField);
    if (!field || field.fieldKind !== "scalar" || field.scalar !== 9 /* STRING */) {
      throw new Error(`${method.parent.typeName}.${method.name}: concord.v1.access owner_field "${value.ownerField}" is not a string field of ${method.input.typeName}`);
    }
    ownerProperty = field.localName;
  }
  return { roles: value.roles, ownerRoles: value.ownerRoles, ownerProperty, ownerField: value.ownerField || undefined };
}

/** The two steps of one method's access check, run by the binder around decoding. */
export interface MethodGuard {
  /** Before decoding: the bearer token (UNAUTHENTICATED) and the roles (PERMISSION_DENIED). */
  authenticate(metadata: Metadata): Promise<Principal>;
  /** After validation: the owner the request names, for owner roles (PERMISSION_DENIED). */
  checkOwner(principal: Principal, request: unknown): void;
}

/** What a server checks tokens with: the verifier, and the descriptors that hold each method's rule. */
export interface AccessControl {
  readonly verify: TokenVerifier;
}

const bearer = /^Bearer\s+(\S+)\s*$/i;

/** The most roles a refusal names: a token may carry thousands, which went whole into the answer and the call's log line. */
const rolesShown = 5;

/** A token's roles as a refusal names them: the first few, then how many more. */
function rolesNamed(roles: readonly string[]): string {
  const shown = roles.slice(0, rolesShown).join(", ");
  return roles.length > rolesShown ? `${shown} and ${roles.length - rolesShown} more` : shown;
}

/**
 * The guard of one method. A method whose contract declares no access rule
 * cannot be called at all while tokens are checked (PERMISSION_DENIED), so
 * a new method is closed until its contract says who may call it.
 */
export function methodGuard(control: AccessControl, methodName: string, access: MethodAccess | undefined): MethodGuard {
  const needs = access ? [...access.roles, ...access.ownerRoles] : [];
  return {
    async authenticate(metadata) {
      const header = metadata.get("authorization")[0];
      if (typeof header !== "string" || header === "") {
        throw new StatusError(Code.UNAUTHENTICATED, `${methodName} needs a bearer token: send the header "authorization: Bearer <token>"`);
      }
      const token = bearer.exec(header)?.[1];
      if (token === undefined) throw new StatusError(Code.UNAUTHENTICATED, `the authorization header must be "Bearer <token>"`);
      let claims;
      try {
        claims = await control.verify(token);
      } catch (err) {
        if (err instanceof TokenError) throw new StatusError(Code.UNAUTHENTICATED, err.message, { cause: err });
        throw err;
      }
      if (!access) throw new StatusError(Code.PERMISSION_DENIED, `${methodName} is open to no one: its contract declares no concord.v1.access`);
      if (claims.roles.some((r) => access.roles.includes(r))) return { subject: claims.subject, roles: claims.roles, ownerOnly: false };
      if (claims.roles.some((r) => access.ownerRoles.includes(r))) return { subject: claims.subject, roles: claims.roles, ownerOnly: true };
      const has = claims.roles.length > 0 ? `roles ${rolesNamed(claims.roles)}` : "no role";
      throw new StatusError(Code.PERMISSION_DENIED, `${claims.subject} (${has}) may not call ${methodName}: it takes role ${needs.join(" or ")}`);
    },
    checkOwner(principal, request) {
      if (!principal.ownerOnly || access?.ownerProperty === undefined) return;
      const owner = (request as Record<string, unknown>)[access.ownerProperty];
      if (owner !== principal.subject) {
        throw new StatusError(Code.PERMISSION_DENIED, `${principal.subject} may call ${methodName} only with ${access.ownerField} "${principal.subject}", not "${String(owner)}"`);
      }
    },
  };
}
