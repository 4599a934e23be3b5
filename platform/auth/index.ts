/** Bearer tokens (JWT: HS256 with the services' key, or an issuer's ES256, RS256 or EdDSA): who a caller is and what roles it has. */
export { createTokenVerifier, maxSubjectBytes, readTokenPublicKeys, readTokenSecret, signToken, subjectControlCharacter, TokenError, type TokenClaims, type TokenVerifier, type TokenVerifierOptions } from "./tokens.js";
/** How long tokens may live, and tokens that renew themselves within that. */
export { clockSkewSeconds, defaultMaxTokenTtlMs, leastMaxTokenTtlMs, renewingToken } from "./token-lifetime.js";
