/** Bearer tokens (JWT, HS256): who a caller is and what roles it has. */
export { createTokenVerifier, readTokenSecret, signToken, TokenError, type TokenClaims, type TokenVerifier } from "./tokens.js";
