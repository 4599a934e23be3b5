/**
 * Prints a bearer token for the services `npm start` runs, signed with the
 * local key, for grpcurl and other clients:
 *   grpcurl -cacert .data/tls/ca.pem -H "authorization: Bearer $(npx tsx tools/token.ts --role admin)" ...
 */
import { createFileRegistry, fromBinary, getOption, hasOption, isFieldSet, type Registry } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { StringRulesSchema, field as fieldRulesExt } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { descriptorSet } from "../gen/ts/descriptor_set.js";
import { maxSubjectBytes, subjectControlCharacter } from "../platform/auth/index.js";
import { duration } from "../platform/config/index.js";
import { methodAccess } from "../platform/grpc/index.js";
import { maxTokenTtlSetting } from "../platform/runtime/index.js";
import { localToken, maxTokenTtlMs, tokenKeyFile } from "./client-security.js";
import { toolArgs, usageProblemLine } from "./parse-args-problem.js";

/** Every role some method's concord.v1.access rule names, as the contracts say. */
function rolesInContracts(registry: Registry): Set<string> {
  const roles = new Set<string>();
  for (const type of registry) {
    if (type.kind !== "service") continue;
    for (const method of type.methods) {
      const access = methodAccess(registry, method);
      for (const role of [...(access?.roles ?? []), ...(access?.ownerRoles ?? [])]) roles.add(role);
    }
  }
  return roles;
}

/** A method that a token of some roles may call only on what its subject owns, and how long its owner field may be. */
interface OwnerLimit {
  /** The roles given that let the token in as an owner. */
  readonly roles: readonly string[];
  readonly method: string;
  readonly field: string;
  readonly maxLen: number;
}

/**
 * The methods that `roles` reach through an owner role alone and whose
 * request names the owner (owner_field), with that field's max_len: there
 * the subject must be a valid owner, so a longer one can never be used.
 */
function ownerLimits(registry: Registry, roles: readonly string[]): OwnerLimit[] {
  const limits: OwnerLimit[] = [];
  for (const type of registry) {
    if (type.kind !== "service") continue;
    for (const method of type.methods) {
      const access = methodAccess(registry, method);
      if (!access?.ownerField || !roles.some((r) => access.ownerRoles.includes(r)) || roles.some((r) => access.roles.includes(r))) continue;
      const field = method.input.fields.find((f) => f.name === access.ownerField)!;
      if (!hasOption(field, fieldRulesExt)) continue;
      const rules = getOption(field, fieldRulesExt);
      if (rules.type.case !== "string" || !isFieldSet(rules.type.value, StringRulesSchema.field.maxLen)) continue;
      limits.push({ roles: roles.filter((r) => access.ownerRoles.includes(r)), method: `${type.name}.${method.name}`, field: access.ownerField, maxLen: Number(rules.type.value.maxLen) });
    }
  }
  return limits;
}

const usage = `Usage: npx tsx tools/token.ts --role ROLE [--subject NAME] [--ttl DURATION]

Prints a bearer token (JWT, HS256) signed with the key the services check
tokens with (GRPC_AUTH_KEY_FILE, default DATA_DIR/auth/token-hs256.key, made
by the first \`npm start\`). Who may call what is each method's
concord.v1.access option in proto/ (see the README's Security section).
  --role ROLE       a role the contracts' access rules name (admin, customer or
                    service); repeat for several roles
  --subject NAME    who the token speaks for; a customer's id for the
                    customer role (default: the role's name, e.g. "admin");
                    one line of printable text (no control characters, nor
                    format ones such as the bidirectional-text U+202E), at
                    most 1024 bytes, the longest the services take, and for
                    the customer role at most 64 characters, the longest
                    customer_id the order service takes
  --ttl DURATION    how long it is valid, from 1s to GRPC_AUTH_MAX_TOKEN_TTL (the
                    longest the services take, default 24h): e.g. 15m, 1h, 8h
                    (default 1h, or GRPC_AUTH_MAX_TOKEN_TTL if that is shorter)`;

/** The command that prints the usage, named by a refusal of bad usage. */
const helpCommand = "npx tsx tools/token.ts --help";

async function main(): Promise<void> {
  const options = { role: { type: "string", multiple: true }, subject: { type: "string" }, ttl: { type: "string" }, help: { type: "boolean" } } as const;
  const parsed = toolArgs("token", { options }, helpCommand);
  if (!parsed) return;
  const { values } = parsed;
  if (values.help) return void console.log(usage);
  const roles = values.role ?? [];
  // A role the contracts do not name (a typo, "Admin") is refused below, naming those they do.
  if (roles.length === 0) {
    console.error(usageProblemLine("token", "give at least one --role", helpCommand));
    process.exitCode = 2;
    return;
  }
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, descriptorSet));
  const known = rolesInContracts(registry);
  const unknown = roles.filter((r) => !known.has(r));
  if (unknown.length > 0) {
    console.error(`token: no method's concord.v1.access rule names the role ${unknown.map((r) => JSON.stringify(r)).join(", ")}; the contracts name ${[...known].sort().join(", ")}`);
    process.exitCode = 2;
    return;
  }
  // Whole seconds, as a token's times are, and as the services check them.
  let maxSeconds: number;
  try {
    maxSeconds = Math.ceil(maxTokenTtlMs() / 1000);
  } catch (err) {
    console.error(`token: ${(err as Error).message}`);
    process.exitCode = 2;
    return;
  }
  let ttlMs: number;
  try {
    ttlMs = values.ttl === undefined ? Math.min(3_600, maxSeconds) * 1000 : duration(values.ttl);
  } catch (err) {
    console.error(`token: --ttl: ${(err as Error).message}`);
    process.exitCode = 2;
    return;
  }
  if (ttlMs < 1000) {
    console.error(`token: --ttl: a token's expiry is in whole seconds, so it lives at least 1s; got ${JSON.stringify(values.ttl)}`);
    process.exitCode = 2;
    return;
  }
  if (Math.ceil(ttlMs / 1000) > maxSeconds) {
    const most = process.env.GRPC_AUTH_MAX_TOKEN_TTL || maxTokenTtlSetting.default;
    const source = process.env.GRPC_AUTH_MAX_TOKEN_TTL ? "GRPC_AUTH_MAX_TOKEN_TTL" : "GRPC_AUTH_MAX_TOKEN_TTL's default";
    console.error(
      `token: --ttl ${values.ttl}: the services refuse a token that lives longer than ${most} (${source}); ` +
        `ask for ${most} or less, or raise GRPC_AUTH_MAX_TOKEN_TTL for the services and for this tool alike`,
    );
    process.exitCode = 2;
    return;
  }
  const subject = values.subject ?? roles[0];
  if (subject === "") {
    console.error("token: --subject must not be empty");
    process.exitCode = 2;
    return;
  }
  // A subject is one line of plain text: it keys the caller's request ids and is named in the services' log lines and errors.
  const control = subjectControlCharacter(subject);
  if (control !== undefined) {
    console.error(`token: --subject holds the control character ${control}: give it as one line of printable text`);
    process.exitCode = 2;
    return;
  }
  if (Buffer.byteLength(subject) > maxSubjectBytes) {
    console.error(`token: --subject is ${Buffer.byteLength(subject)} bytes long: the services refuse a subject of more than ${maxSubjectBytes} (UTF-8)`);
    process.exitCode = 2;
    return;
  }
  // For an owner role the subject is the owner's id, and where a request names the owner the contract bounds it (a
  // customer's customer_id, at most 64 characters): a longer subject makes a token those methods always refuse.
  const characters = [...subject].length;
  const bounds = ownerLimits(registry, roles).filter((l) => characters > l.maxLen);
  if (bounds.length > 0) {
    const most = Math.min(...bounds.map((l) => l.maxLen));
    const tightest = bounds.filter((l) => l.maxLen === most);
    const ownerRoles = [...new Set(tightest.flatMap((l) => l.roles))];
    console.error(
      `token: --subject is ${characters} characters long: a token of role ${ownerRoles.join(" or ")} may call ${tightest.map((l) => l.method).join(" and ")} ` +
        `only with ${tightest[0].field} equal to its subject, and ${tightest[0].field} is at most ${most} characters; give a subject of at most ${most}`,
    );
    process.exitCode = 2;
    return;
  }
  try {
    console.log(await localToken({ subject, roles }, ttlMs / 1000));
  } catch (err) {
    // Without DATA_DIR the key is looked for under .data, where a start given DATA_DIR did not make it.
    const where = process.env.GRPC_AUTH_KEY_FILE
      ? "GRPC_AUTH_KEY_FILE names it"
      : process.env.DATA_DIR
        ? "`npm start` makes it on its first run on this DATA_DIR"
        : "`npm start` makes it on its first run, under its DATA_DIR (.data unless set): for a start given DATA_DIR, set the same DATA_DIR here";
    console.error(`token: ${(err as Error).message}; ${where}`);
    process.exitCode = 1;
  }
}

void main();
