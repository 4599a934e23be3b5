import { createSecretKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { SignJWT } from "jose";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createTokenVerifier, renewingToken, signToken, TokenError } from "./index.js";

const day = 86_400;
const now = () => Math.floor(Date.now() / 1000);
const secret = createSecretKey(Buffer.alloc(32, 9));
const issuer = generateKeyPairSync("ec", { namedCurve: "P-256" });

/** A token as an outside issuer might sign it (ES256), with the times given in seconds from now; iat left out when undefined. */
const issued = (expIn: number, iatIn?: number, key: KeyObject = issuer.privateKey) => {
  const jwt = new SignJWT({ roles: ["admin"] }).setProtectedHeader({ alg: "ES256", typ: "JWT" }).setSubject("ops").setIssuer("concord").setAudience("concord").setExpirationTime(now() + expIn);
  return (iatIn === undefined ? jwt : jwt.setIssuedAt(now() + iatIn)).sign(key);
};

// The clock stands still unless a test moves it, so a second ticking between signing and checking changes nothing.
beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"], now: Date.UTC(2030, 0, 1, 12, 0, 0, 400) });
});
afterEach(() => {
  vi.useRealTimers();
});

describe("createTokenVerifier's maximum token lifetime", () => {
  it("refuses a token of the services' own key (HS256) that expires further ahead than a day, saying how to get one it takes", async () => {
    const verify = createTokenVerifier(secret);
    const tenYears = await signToken(secret, { subject: "ops", roles: ["admin"] }, 3650 * day);
    await expect(verify(tenYears)).rejects.toThrow(new TokenError("the bearer token expires in 3650d, later than tokens may live here; get one valid for at most 24h"));
    // Refused again, not remembered: the second call says the same.
    await expect(verify(tenYears)).rejects.toThrow(/expires in 3650d/);
    expect(await verify(await signToken(secret, { subject: "ops", roles: ["admin"] }, day))).toEqual({ subject: "ops", roles: ["admin"] });
    // An exp no clock reaches is said as such, not as 1.1574074074074075e+295d 17h 36m.
    const never = await new SignJWT({ roles: ["admin"] }).setProtectedHeader({ alg: "HS256" }).setSubject("ops").setIssuer("concord").setAudience("concord").setExpirationTime(1e300).sign(secret);
    await expect(verify(never)).rejects.toThrow(new TokenError("the bearer token expires in more than 100 years, later than tokens may live here; get one valid for at most 24h"));
  });

  it("takes the maximum it is given, and a minute of clock skew for a token without iat", async () => {
    const verify = createTokenVerifier(undefined, [issuer.publicKey], { maxTtlMs: 3_600_000 });
    expect(await verify(await issued(3_600 + 50))).toEqual({ subject: "ops", roles: ["admin"] });
    await expect(verify(await issued(3_600 + 120))).rejects.toThrow(new TokenError("the bearer token expires in 1h 2m, later than tokens may live here; get one valid for at most 1h"));
    // Rounded up to the minute: a second gone between signing and checking does not show.
    const signed = await issued(3_600 + 120);
    vi.setSystemTime(Date.now() + 1_000);
    await expect(verify(signed)).rejects.toThrow(/expires in 1h 2m, later than tokens may live here/);
    await expect(verify(await issued(2 * 3_600))).rejects.toThrow(/expires in 2h, later than tokens may live here/);
  });

  it("takes a minute of clock skew for nbf, as for iat, and says how far ahead an nbf beyond it is; exp has none", async () => {
    const verify = createTokenVerifier(secret, [issuer.publicKey]);
    const notBefore = (nbfIn: number, expIn = 600) =>
      new SignJWT({ roles: ["admin"] }).setProtectedHeader({ alg: "ES256" }).setSubject("ops").setIssuer("concord").setAudience("concord").setNotBefore(now() + nbfIn).setExpirationTime(now() + expIn).sign(issuer.privateKey);
    // An issuer whose clock runs 30 s ahead sets nbf (and iat) 30 s after this server's now: it was refused for those 30 s.
    expect(await verify(await notBefore(30))).toEqual({ subject: "ops", roles: ["admin"] });
    await expect(verify(await notBefore(3_600, 7_200))).rejects.toThrow(new TokenError("the bearer token is not valid yet: its nbf claim is 1h ahead of this server's clock"));
    // The skew does not stretch a token's end: expired a second ago is expired.
    await expect(verify(await issued(-1))).rejects.toThrow(new TokenError("the bearer token has expired; get a new one"));
    await expect(verify(await issued(0))).rejects.toThrow(new TokenError("the bearer token has expired; get a new one"));
    expect(await verify(await issued(1))).toEqual({ subject: "ops", roles: ["admin"] });
  });

  it("checks an issuer's iat when there is one: issued to live longer than the maximum, or in the future, is refused", async () => {
    const verify = createTokenVerifier(secret, [issuer.publicKey], { maxTtlMs: 3_600_000 });
    // Made ten days ago to live ten days and a few minutes: near its end now, and still refused.
    await expect(verify(await issued(300, -10 * day))).rejects.toThrow(new TokenError("the bearer token was issued to live 10d 5m, longer than tokens may live here; get one valid for at most 1h"));
    await expect(verify(await issued(900, 300))).rejects.toThrow(new TokenError("the bearer token's iat claim is not valid: it is 5m in the future"));
    // Within the clock skew, a signer's clock a little ahead of this one's.
    expect(await verify(await issued(900, 30))).toEqual({ subject: "ops", roles: ["admin"] });
    expect(await verify(await issued(1_800, -1_800))).toEqual({ subject: "ops", roles: ["admin"] });
    // Exactly the maximum, as tools/token.ts makes it with --ttl equal to it.
    expect(await verify(await signToken(secret, { subject: "orders", roles: ["service"] }, 3_600))).toEqual({ subject: "orders", roles: ["service"] });
    await expect(verify(await signToken(secret, { subject: "orders", roles: ["service"] }, 3_601))).rejects.toThrow(/issued to live 1h 1m, longer than tokens may live here/);
    const odd = await new SignJWT({ roles: ["admin"], iat: "yesterday" } as never).setProtectedHeader({ alg: "ES256" }).setSubject("ops").setIssuer("concord").setAudience("concord").setExpirationTime("5m").sign(issuer.privateKey);
    await expect(verify(odd)).rejects.toThrow(/the bearer token's iat claim is not valid/);
  });

  it("does not let a remembered token outlive the rule: a clock set back makes it too long-lived, and it is refused", async () => {
    const verify = createTokenVerifier(undefined, [issuer.publicKey]);
    const token = await issued(23 * 3_600);
    expect(await verify(token)).toEqual({ subject: "ops", roles: ["admin"] });
    vi.setSystemTime(Date.now() - 2 * 3_600_000);
    await expect(verify(token)).rejects.toThrow(new TokenError("the bearer token expires in 25h, later than tokens may live here; get one valid for at most 24h"));
    vi.setSystemTime(Date.now() + 2 * 3_600_000 + 1_000);
    expect(await verify(token)).toEqual({ subject: "ops", roles: ["admin"] });
    vi.setSystemTime(Date.now() + 23 * 3_600_000);
    await expect(verify(token)).rejects.toThrow(/has expired/);
  });

  it("refuses a maximum under a minute, and an option it does not know", () => {
    expect(() => createTokenVerifier(secret, [], { maxTtlMs: 30_000 })).toThrow("createTokenVerifier: invalid maxTtlMs: 30000 (a whole number of at least 60000)");
    expect(() => createTokenVerifier(secret, [], { maxTtl: 60_000 } as never)).toThrow("createTokenVerifier: unknown option maxTtl (it takes maxTtlMs)");
  });
});

describe("renewingToken", () => {
  it("hands out one token until a minute of it is left, or half of it for a short one, then signs the next", async () => {
    for (const [ttl, renewAfterSeconds] of [
      [600, 540],
      [60, 30],
    ]) {
      const signed: number[] = [];
      const token = renewingToken(async (seconds) => `t${signed.push(seconds)}`, ttl!);
      expect(await token()).toBe("t1");
      vi.setSystemTime(Date.now() + renewAfterSeconds! * 1000 - 1);
      expect(await token(), `${ttl}s`).toBe("t1");
      vi.setSystemTime(Date.now() + 1);
      expect(await token(), `${ttl}s`).toBe("t2");
      expect(signed).toEqual([ttl, ttl]);
    }
  });

  it("signs again at the next call after a signing failed", async () => {
    let fail = true;
    const token = renewingToken(async () => {
      if (fail) throw new Error("no key");
      return "t";
    }, 600);
    await expect(token()).rejects.toThrow("no key");
    fail = false;
    expect(await token()).toBe("t");
  });
});
