import { createSecretKey, type KeyObject } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";

/** Who made a call, as its verified bearer token says. */
export interface TokenClaims {
  /** The token's subject: a customer id, a service name, an operator. */
  readonly subject: string;
  /** What the subject is: "admin", "customer", "service", ... */
  readonly roles: readonly string[];
}

/** Issuer and audience of every token; a token made for something else is refused. */
const issuer = "concord";
const audience = "concord";
const algorithm = "HS256";

/** Why a token was refused, in words a caller can act on; never the token itself. */
export class TokenError extends Error {
  override readonly name = "TokenError";
}

/**
 * The HS256 key in `path`: at least 32 bytes, written as hex (64 or more hex
 * digits). Throws, naming the file, when it is missing, too short, or
 * readable by anyone but its owner (it signs every token).
 */
export function readTokenSecret(path: string): KeyObject {
  let mode: number;
  let text: string;
  try {
    mode = statSync(path).mode;
    text = readFileSync(path, "utf8").trim();
  } catch (err) {
    throw new Error(`cannot read the token key ${path}: ${(err as Error).message}`, { cause: err });
  }
  if ((mode & 0o077) !== 0) throw new Error(`the token key ${path} is readable by others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
  if (!/^([0-9a-fA-F]{2}){32,}$/.test(text)) throw new Error(`the token key ${path} must hold at least 32 bytes as hex (64 hex digits)`);
  return createSecretKey(Buffer.from(text, "hex"));
}

/** Signs a token for `claims`, valid for `ttlSeconds`. */
export function signToken(key: KeyObject, claims: TokenClaims, ttlSeconds: number): Promise<string> {
  if (!(ttlSeconds > 0)) throw new Error(`signToken: ttlSeconds must be positive, got ${ttlSeconds}`);
  return new SignJWT({ roles: [...claims.roles] })
    .setProtectedHeader({ alg: algorithm, typ: "JWT" })
    .setSubject(claims.subject)
    .setIssuer(issuer)
    .setAudience(audience)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + Math.ceil(ttlSeconds))
    .sign(key);
}

/** Checks tokens; resolves with their claims or rejects with a TokenError. */
export type TokenVerifier = (token: string) => Promise<TokenClaims>;

/** How many verified tokens are remembered, so a client's repeated token costs one map lookup. */
const cacheSize = 1024;

/**
 * A verifier for tokens signed with `key`: HS256 only, issuer and audience
 * "concord", a subject, an expiry, and roles as a list of strings. A token
 * that passed is remembered until it expires (the newest 1024), so only a
 * client's first call with it pays for the signature check.
 */
export function createTokenVerifier(key: KeyObject): TokenVerifier {
  const verified = new Map<string, { claims: TokenClaims; expiresAtMs: number }>();
  return async (token) => {
    const known = verified.get(token);
    if (known) {
      if (Date.now() < known.expiresAtMs) return known.claims;
      verified.delete(token);
    }
    let payload;
    try {
      ({ payload } = await jwtVerify(token, key, { algorithms: [algorithm], issuer, audience, requiredClaims: ["sub", "exp"] }));
    } catch (err) {
      throw new TokenError(reasonOf(err), { cause: err });
    }
    const roles = payload.roles;
    if (!Array.isArray(roles) || !roles.every((r) => typeof r === "string")) throw new TokenError("the bearer token has no roles claim (a list of strings)");
    if (typeof payload.sub !== "string" || payload.sub === "") throw new TokenError("the bearer token has an empty subject");
    const claims: TokenClaims = { subject: payload.sub, roles: Object.freeze([...roles]) };
    if (verified.size >= cacheSize) verified.delete(verified.keys().next().value!);
    verified.set(token, { claims, expiresAtMs: (payload.exp as number) * 1000 });
    return claims;
  };
}

function reasonOf(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return "the bearer token has expired; get a new one";
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return "the bearer token's signature does not match this server's key";
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `the bearer token's ${err.claim} claim is not valid: ${err.reason === "missing" ? "it is missing" : err.message}`;
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return "the bearer token is not signed with HS256";
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return "the bearer token is not a well-formed JWT";
  return "the bearer token is not valid";
}
