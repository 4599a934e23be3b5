import { createPublicKey, createSecretKey, type KeyObject } from "node:crypto";
import { readSettingFileAndStats, settingFileExposure } from "../config/index.js";
import { decodeProtectedHeader, errors as joseErrors, type JWTPayload, jwtVerify, SignJWT } from "jose";
import { checkOptions } from "../options/index.js";
import { clockSkewSeconds, defaultMaxTokenTtlMs, leastMaxTokenTtlMs, lifetimeProblem, notYetValid } from "./token-lifetime.js";

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
/** What the services' own key signs with. */
const algorithm = "HS256";
/** The longest subject taken, in UTF-8 bytes: far more than any issuer's ids or e-mail addresses take. */
export const maxSubjectBytes = 1024;
/** The role of the services' calls to each other, the only one their key signs for while an issuer's keys are configured. */
const serviceRole = "service";

/** Why a token was refused, in words a caller can act on; never the token itself. */
export class TokenError extends Error {
  override readonly name = "TokenError";
}

/**
 * The HS256 key in `path`: at least 32 bytes, written as hex (64 or more hex
 * digits). Throws, naming the file, when it is missing, too short,
 * readable by anyone but its owner, or owned by another user than this
 * process's and root (it signs every token, and its owner may know it).
 */
export function readTokenSecret(path: string): KeyObject {
  let read: ReturnType<typeof readSettingFileAndStats>;
  try {
    read = readSettingFileAndStats(path, 64 * 1024);
  } catch (err) {
    throw new Error(`cannot read the token key ${path}: ${(err as Error).message}`, { cause: err });
  }
  const text = read.bytes.toString("utf8").trim();
  const exposed = settingFileExposure(path, "the token key", "secret", "sign tokens of every role", read.stats);
  if (exposed !== undefined) throw new Error(exposed);
  if (!/^([0-9a-fA-F]{2}){32,}$/.test(text)) throw new Error(`the token key ${path} must hold at least 32 bytes as hex (64 hex digits)`);
  return createSecretKey(Buffer.from(text, "hex"));
}

/** The JWS algorithm a public key checks: ES256 (EC P-256), RS256 (RSA, 2048 bits or more) or EdDSA (Ed25519). */
function algorithmOf(key: KeyObject, path: string, n: number): string {
  const type = key.asymmetricKeyType;
  if (type === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1") return "ES256";
  if (type === "rsa" && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048) return "RS256";
  if (type === "ed25519") return "EdDSA";
  throw new Error(`public key ${n} in ${path} is not one tokens are checked with (EC P-256, RSA of 2048 bits or more, or Ed25519)`);
}

/**
 * The public keys in `path`, one or more PEM blocks (\`-----BEGIN PUBLIC
 * KEY-----\`): an issuer's keys, tokens signed with any of them are
 * accepted (several while a key is rotated). Throws, naming the file, when
 * it cannot be read, holds no key, or holds a key of a kind not taken, and
 * when others than its owner may write it or another user than this
 * process's and root owns it: whoever can put a key of theirs there signs
 * tokens of every role.
 */
export function readTokenPublicKeys(path: string): readonly KeyObject[] {
  let read: ReturnType<typeof readSettingFileAndStats>;
  try {
    read = readSettingFileAndStats(path, 1024 * 1024);
  } catch (err) {
    throw new Error(`cannot read the token public keys ${path}: ${(err as Error).message}`, { cause: err });
  }
  const text = read.bytes.toString("utf8");
  const exposed = settingFileExposure(path, "the token public keys file", "public", "add a key of theirs and sign tokens of every role", read.stats);
  if (exposed !== undefined) throw new Error(exposed);
  const blocks = text.match(/-----BEGIN PUBLIC KEY-----[\s\S]*?-----END PUBLIC KEY-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`${path} holds no PEM public key (-----BEGIN PUBLIC KEY-----)`);
  return blocks.map((pem, i) => {
    let key: KeyObject;
    try {
      key = createPublicKey(pem);
    } catch (err) {
      throw new Error(`public key ${i + 1} in ${path} cannot be read: ${(err as Error).message}`, { cause: err });
    }
    algorithmOf(key, path, i + 1);
    return key;
  });
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
 * How much memory the remembered tokens may take, counted by `weightOf`: a
 * token may carry thousands of roles, and 1,024 of 56 KB with 3,000 roles
 * each took the product service's heap past its 128 MiB limit, and the
 * process down.
 */
const cacheBytes = 4 * 1024 * 1024;

/** About what a remembered token holds of the heap: its text, and each role's text and its place in the list. */
function weightOf(token: string, roles: readonly string[]): number {
  let bytes = 128 + token.length;
  for (const role of roles) bytes += 32 + role.length;
  return bytes;
}

/** What else a verifier checks. */
export interface TokenVerifierOptions {
  /**
   * The longest a token may live, in milliseconds (default a day, at least
   * a minute): one whose `exp` lies further ahead, or whose `iat` lies
   * further before its `exp`, is refused.
   */
  readonly maxTtlMs?: number;
}

/**
 * A verifier for tokens signed with `key` (HS256), or with the private key
 * of any of `publicKeys` (an issuer's: ES256, RS256 or EdDSA, as the key
 * is), and nothing else: issuer and audience "concord", a subject, an
 * expiry no further ahead than `maxTtlMs` (see `lifetimeProblem`), a
 * subject of at most 1,024 bytes without control characters
 * (subjectControlCharacter), and roles as a list of strings. A token
 * that passed is remembered until it expires (the newest 1024, within
 * 4 MiB; one of over 256 KiB with its roles is not), so only a client's
 * first call with it pays for the signature check; its times are checked
 * again at every call. Throws
 * when given no key or a bad option.
 */
export function createTokenVerifier(key: KeyObject | undefined, publicKeys: readonly KeyObject[] = [], options: TokenVerifierOptions = {}): TokenVerifier {
  if (!key && publicKeys.length === 0) throw new Error("createTokenVerifier: give a key, public keys, or both");
  checkOptions("createTokenVerifier", options, ["maxTtlMs"]);
  const maxTtlMs = options.maxTtlMs ?? defaultMaxTokenTtlMs;
  if (!Number.isSafeInteger(maxTtlMs) || maxTtlMs < leastMaxTokenTtlMs) {
    throw new Error(`createTokenVerifier: invalid maxTtlMs: ${String(maxTtlMs)} (a whole number of at least ${leastMaxTokenTtlMs})`);
  }
  // Whole seconds, as a token gives its times: a maximum of 90500ms takes the token of 91s that `signToken` makes for it.
  const maxSeconds = Math.ceil(maxTtlMs / 1000);
  const verified = new Map<string, { claims: TokenClaims; exp: number; iat: number | undefined; weight: number }>();
  let verifiedBytes = 0;
  const forget = (token: string): void => {
    verifiedBytes -= verified.get(token)?.weight ?? 0;
    verified.delete(token);
  };
  const issuerKeys = publicKeys.map((k, i) => ({ key: k, alg: algorithmOf(k, "the public keys", i + 1) }));
  const algorithms = [...(key ? [algorithm] : []), ...new Set(issuerKeys.map((k) => k.alg))];
  // The clock skew is for nbf, as for iat (lifetimeProblem): a token whose issuer's clock runs a few seconds ahead was refused
  // until this server's clock caught up. It would stretch exp as much, so exp is checked again without it below.
  const jwtOptions = { algorithms, issuer, audience, requiredClaims: ["sub", "exp"], clockTolerance: clockSkewSeconds };
  /** The keys a token of this alg may be signed with; each is tried until one fits (several while a key is rotated). */
  const candidates = (alg: unknown): KeyObject[] => (alg === algorithm ? (key ? [key] : []) : issuerKeys.filter((k) => k.alg === alg).map((k) => k.key));
  const check = async (token: string): Promise<{ payload: JWTPayload; alg: unknown }> => {
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch (err) {
      throw new joseErrors.JWSInvalid("not a JWS", { cause: err });
    }
    const keys = candidates(alg);
    if (keys.length === 0) throw new joseErrors.JOSEAlgNotAllowed(`"${String(alg)}" is not allowed`);
    for (const [i, k] of keys.entries()) {
      try {
        return { payload: (await jwtVerify(token, k, jwtOptions)).payload, alg };
      } catch (err) {
        if (!(err instanceof joseErrors.JWSSignatureVerificationFailed) || i === keys.length - 1) throw err;
      }
    }
    throw new joseErrors.JWSSignatureVerificationFailed();
  };
  return async (token) => {
    const known = verified.get(token);
    if (known) {
      // Times are checked again, not only the expiry: a clock set back after the first check must not stretch a token's life.
      const nowMs = Date.now();
      if (nowMs < known.exp * 1000 && lifetimeProblem(known.exp, known.iat, Math.floor(nowMs / 1000), maxSeconds) === undefined) return known.claims;
      forget(token);
    }
    let payload: JWTPayload;
    let alg: unknown;
    try {
      ({ payload, alg } = await check(token));
    } catch (err) {
      throw new TokenError(reasonOf(err, algorithms, token), { cause: err });
    }
    // jose has checked that exp is a number, and iat too where there is one.
    const exp = payload.exp as number;
    if (exp <= Math.floor(Date.now() / 1000)) throw new TokenError(expired);
    const tooLong = lifetimeProblem(exp, payload.iat, Math.floor(Date.now() / 1000), maxSeconds);
    if (tooLong !== undefined) throw new TokenError(tooLong);
    const roles = payload.roles;
    if (!Array.isArray(roles) || !roles.every((r) => typeof r === "string")) throw new TokenError("the bearer token has no roles claim (a list of strings)");
    // Every service holds the HS256 key. With an issuer for people, that key signs the services' own calls and
    // nothing more: a service that could mint an admin's token with it would hold every role of every service.
    if (alg === algorithm && issuerKeys.length > 0 && !roles.every((r) => r === serviceRole)) {
      throw new TokenError(`a token signed with the services' own key (HS256) may carry only the role "${serviceRole}" while an issuer's keys are configured; get one from the issuer`);
    }
    if (typeof payload.sub !== "string") throw new TokenError("the bearer token's subject (sub) is not a string");
    if (payload.sub === "") throw new TokenError("the bearer token has an empty subject");
    // The subject keys the caller's request ids (PostgreSQL's text cannot hold NUL: the call failed there as INTERNAL)
    // and is named in log lines and errors, where a line feed would start a line of its own and a bidirectional-text control
    // reorder what follows: one line of plain text, as tools/token.ts signs.
    const control = subjectControlCharacter(payload.sub);
    if (control !== undefined) throw new TokenError(`the bearer token's subject holds the control character ${control}`);
    // The subject is part of the request ids' key, and PostgreSQL indexes at most 2,704 bytes a row: an admin's
    // CreateProduct with a request_id under a subject of 3,000 random characters failed there as INTERNAL.
    const subjectBytes = Buffer.byteLength(payload.sub);
    if (subjectBytes > maxSubjectBytes) throw new TokenError(`the bearer token's subject is ${subjectBytes} bytes long; it may be at most ${maxSubjectBytes} (UTF-8)`);
    const claims: TokenClaims = { subject: payload.sub, roles: Object.freeze([...roles]) };
    const weight = weightOf(token, claims.roles);
    if (weight > cacheBytes / 16) return claims;
    while (verified.size >= cacheSize || verifiedBytes + weight > cacheBytes) forget(verified.keys().next().value!);
    verified.set(token, { claims, exp, iat: payload.iat, weight });
    verifiedBytes += weight;
    return claims;
  };
}

/**
 * Characters a subject may not hold: controls (U+0000 to U+001F, U+007F to
 * U+009F), format characters (Unicode's Cf: the bidirectional-text controls
 * U+202A to U+202E and U+2066 to U+2069, zero-width ones, U+FEFF, tags) and
 * the line and paragraph separators U+2028 and U+2029. Each makes a log
 * line that names the subject read other than it is: what follows U+202E
 * is shown reversed, and "adm\u200Bin" looks like "admin".
 */
const notPlainText = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

/**
 * The first control or format character of a token's subject (see
 * notPlainText), as "U+000A", or undefined for one line of plain text:
 * what the services take and tools/token.ts signs.
 */
export function subjectControlCharacter(subject: string): string | undefined {
  const char = notPlainText.exec(subject)?.[0];
  return char === undefined ? undefined : `U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** A shell variable's reference (`${ADMIN_TOKEN}`, `$TOKEN`), sent as the token by a client that did not expand it: no secret, so it can be named. */
const variableReference = /^\$(\{\w+\}|\w+)$/;

const expired = "the bearer token has expired; get a new one";

function reasonOf(err: unknown, algorithms: readonly string[], token: string): string {
  if (err instanceof joseErrors.JWTExpired) return expired;
  if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === "nbf" && typeof err.payload.nbf === "number") {
    return notYetValid(err.payload.nbf, Math.floor(Date.now() / 1000));
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return "the bearer token's signature does not match this server's keys";
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    // jose's words for a wrong issuer or audience, 'unexpected "aud" claim value', leave out what it should be.
    const should = err.claim === "iss" ? `it must be "${issuer}"` : err.claim === "aud" ? `it must name "${audience}"` : err.message;
    return `the bearer token's ${err.claim} claim is not valid: ${err.reason === "missing" ? "it is missing" : should}`;
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return `the bearer token is not signed with ${algorithms.join(" or ")}`;
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) {
    if (variableReference.test(token)) {
      return `the bearer token is ${JSON.stringify(token)}, a variable's name, not a JWT: the client sent it unexpanded (grpcurl expands -H values only with -expand-headers)`;
    }
    return "the bearer token is not a well-formed JWT";
  }
  return "the bearer token is not valid";
}
