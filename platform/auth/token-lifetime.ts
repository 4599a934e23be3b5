/**
 * How long a bearer token may live. Without a bound, a token signed to
 * expire in ten years is good for ten years, and a leaked one is contained
 * only by rotating the key; with one, a leak is over within the bound.
 */

/** The longest a token may live unless configured otherwise: a day, an identity provider's longest default (Auth0's). */
export const defaultMaxTokenTtlMs = 86_400_000;

/** The least maximum that may be configured: a token must outlive its way to the server and the services' renewal margin. */
export const leastMaxTokenTtlMs = 60_000;

/** How far the clocks of the host that signs a token and the one that checks it may disagree. */
export const clockSkewSeconds = 60;

/**
 * Why a token's times break the maximum lifetime `maxSeconds`, in words a
 * caller can act on, or undefined when they keep it (times in whole seconds,
 * as JWTs give them). An `exp` further than the maximum (plus the clock
 * skew) beyond `nowSeconds` is refused whatever else the token says. `iat`
 * is optional in JWTs and checked only when present: not in the future
 * (beyond the skew), and no more than the maximum before `exp`, so a token
 * made to live too long stays refused in the last part of its life too.
 */
export function lifetimeProblem(exp: number, iat: number | undefined, nowSeconds: number, maxSeconds: number): string | undefined {
  const advice = `get one valid for at most ${spanOf(maxSeconds)}`;
  if (exp - nowSeconds > maxSeconds + clockSkewSeconds) return `the bearer token expires in ${spanOf(exp - nowSeconds)}, later than tokens may live here; ${advice}`;
  if (iat === undefined) return undefined;
  if (iat - nowSeconds > clockSkewSeconds) return `the bearer token's iat claim is not valid: it is ${spanOf(iat - nowSeconds)} in the future`;
  if (exp - iat > maxSeconds) return `the bearer token was issued to live ${spanOf(exp - iat)}, longer than tokens may live here; ${advice}`;
  return undefined;
}

/** The refusal of a token whose `nbf` lies beyond the clock skew ahead of `nowSeconds`. */
export function notYetValid(nbf: number, nowSeconds: number): string {
  return `the bearer token is not valid yet: its nbf claim is ${spanOf(nbf - nowSeconds)} ahead of this server's clock`;
}

/**
 * A source of tokens from `sign`, each living `ttlSeconds`: it hands out the
 * current one until a minute (or half its life, if shorter) is left, then
 * signs the next, so a call never leaves with a token about to expire. A
 * signing that fails is tried again at the next call.
 */
export function renewingToken(sign: (ttlSeconds: number) => Promise<string>, ttlSeconds: number): () => Promise<string> {
  if (!(ttlSeconds > 0)) throw new Error(`renewingToken: ttlSeconds must be positive, got ${ttlSeconds}`);
  const renewAfterMs = (ttlSeconds - Math.min(60, ttlSeconds / 2)) * 1000;
  let current: { token: Promise<string>; renewAtMs: number } | undefined;
  return () => {
    if (!current || Date.now() >= current.renewAtMs) {
      const token = sign(ttlSeconds);
      const made = { token, renewAtMs: Date.now() + renewAfterMs };
      current = made;
      token.catch(() => {
        if (current === made) current = undefined;
      });
    }
    return current.token;
  };
}

const centurySeconds = 100 * 365 * 86_400;

/**
 * A span of seconds in days (from two on), hours, minutes and seconds, the
 * parts that are not 0: 3650d, 24h, 1h 2m, 45s; past a hundred years, only
 * that it is. From an hour on it is rounded up to the minute: a token
 * checked a second after it was made expires in 2h, not in 1h 59m 59s, and
 * one a little too long never reads as the maximum.
 */
function spanOf(seconds: number): string {
  // A token may say it expires in 10^300 seconds: said in days, that read 1.1574074074074075e+295d 17h 36m.
  if (seconds > centurySeconds) return "more than 100 years";
  const whole = Math.max(0, Math.ceil(seconds));
  let rest = whole >= 3_600 ? Math.ceil(whole / 60) * 60 : whole;
  const parts: string[] = [];
  for (const [unit, size] of [["d", 86_400], ["h", 3_600], ["m", 60]] as const) {
    if (rest < (unit === "d" ? 2 * size : size)) continue;
    parts.push(`${Math.floor(rest / size)}${unit}`);
    rest %= size;
  }
  if (rest > 0 || parts.length === 0) parts.push(`${rest}s`);
  return parts.join(" ");
}
