/**
 * The NATS credentials of a server Concord manages: an nkey per user of
 * gen/ts/concord_nats.ts (each service and the observer), its seed in a file
 * of its own under the data directory, created on first use and kept
 * (mode 0600, never logged); the server's configuration gets only the
 * public keys, with each user's permissions, in an `authorization` block.
 */
import { chmodSync, existsSync, mkdirSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { nkeys } from "nats";
import { natsAuthorization } from "../../gen/ts/concord_nats.js";
import { SeedFileError, seedFileText, userSeedOf } from "../../platform/events/index.js";
import { replaceOwnerFile } from "./server-config.js";

/** A user of the authorization: name, permissions, and where its seed is. */
export interface NatsCredential {
  readonly name: string;
  readonly seedFile: string;
  readonly publicKey: string;
}

interface UserPermissions {
  readonly publish: { readonly allow: readonly string[]; readonly deny: readonly string[] };
  readonly subscribe: { readonly allow: readonly string[] };
}

/** Every user the contracts call for, with its permissions. */
export function natsUsers(): ReadonlyArray<{ readonly name: string; readonly permissions: UserPermissions }> {
  return [...natsAuthorization.services, natsAuthorization.observer, natsAuthorization.operator];
}

/** Where a user's seed lives in `dir`. */
export function seedFileOf(dir: string, user: string): string {
  return join(dir, `${user}.nk`);
}

/**
 * Makes sure `dir` (mode 0700) holds a seed file (mode 0600) for every user,
 * creating the missing ones, and returns each user's public key. A seed file
 * that does not hold a user seed is an error naming the file (delete it to
 * have a new one made).
 */
export function ensureNatsCredentials(dir: string): NatsCredential[] {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  return natsUsers().map(({ name }) => {
    const seedFile = seedFileOf(dir, name);
    if (!existsSync(seedFile)) {
      const seed = nkeys.createUser().getSeed();
      // Written under another name first: a crash never leaves a half-written seed.
      const partial = `${seedFile}.${process.pid}.tmp`;
      writeFileSync(partial, `${new TextDecoder().decode(seed)}\n`, { mode: 0o600 });
      renameSync(partial, seedFile);
    }
    if ((statSync(seedFile).mode & 0o077) !== 0) chmodSync(seedFile, 0o600);
    return { name, seedFile, publicKey: publicKeyOf(seedFile) };
  });
}

/**
 * Reads the seed files `dir` already holds, writing nothing: throws a
 * SeedFileError naming the first that holds no user seed, as
 * `ensureNatsCredentials` would once it had made what is missing. For a
 * start that is to refuse such a file before it makes anything.
 */
export function checkNatsSeedFiles(dir: string): void {
  for (const { name } of natsUsers()) {
    const seedFile = seedFileOf(dir, name);
    if (existsSync(seedFile)) publicKeyOf(seedFile);
  }
}

/** The public key of the user seed in `seedFile`; throws, naming the file, when it holds none. */
export function publicKeyOf(seedFile: string): string {
  let text: string;
  try {
    text = seedFileText(seedFile);
  } catch (err) {
    throw new SeedFileError(`reading the NATS nkey seed file ${seedFile} failed: ${(err as Error).message}`, { cause: err });
  }
  if (!/^SU[A-Z2-7]+$/.test(text)) throw new SeedFileError(`${seedFile} does not hold a NATS user nkey seed (a line starting with SU); delete it and start again to have a new one made`);
  // A seed of that form with a character changed: said to be damaged, as the services and tools say it.
  return nkeys.fromSeed(userSeedOf(seedFile, text)).getPublicKey();
}

/** The `authorization` block giving each user its public key and permissions; the seeds stay out of it. */
export function authorizationConfigText(credentials: readonly NatsCredential[]): string {
  const q = (s: string) => JSON.stringify(s);
  const list = (items: readonly string[]) => `[${items.map(q).join(", ")}]`;
  const byName = new Map(natsUsers().map((u) => [u.name, u.permissions]));
  const users = credentials.map(({ name, publicKey }) => {
    const p = byName.get(name);
    if (!p) throw new Error(`no permissions are generated for NATS user ${name}`);
    const deny = p.publish.deny.length > 0 ? `, deny: ${list(p.publish.deny)}` : "";
    return [
      `    # ${name}`,
      `    { nkey: ${q(publicKey)}, permissions: {`,
      `        publish: { allow: ${list(p.publish.allow)}${deny} }`,
      `        subscribe: { allow: ${list(p.subscribe.allow)} }`,
      "    } }",
    ].join("\n");
  });
  return [
    "# Written by Concord at every start from gen/ts/concord_nats.ts and the public keys of the seeds next to it.",
    "authorization {",
    "  users = [",
    ...users,
    "  ]",
    "}",
    "",
  ].join("\n");
}

/** Writes the authorization block for `credentials` to `path` (the server's configuration includes it). */
export function writeAuthorizationConfig(path: string, credentials: readonly NatsCredential[]): void {
  replaceOwnerFile(path, authorizationConfigText(credentials));
}
