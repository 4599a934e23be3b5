import { createHmac, generateKeyPairSync, type KeyObject } from "node:crypto";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { createTokenVerifier, readTokenPublicKeys, readTokenSecret, signToken, TokenError } from "../auth/index.js";
import { createMessageChecker } from "../contracts/index.js";
import { methodAccess } from "./access.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";

describe("methodAccess", () => {
  const { registry } = createMessageChecker(descriptorSet);
  const access = (service: string, method: string) => methodAccess(registry, registry.getService(service)!.methods.find((m) => m.name === method)!);

  it("reads each method's concord.v1.access from the descriptor set, with the owner field as the request's property", () => {
    expect(access("shop.products.v1.ProductService", "AdjustStock")).toEqual({ roles: ["admin"], ownerRoles: [], ownerProperty: undefined, ownerField: undefined });
    expect(access("shop.products.v1.ProductService", "BatchGetProducts")?.roles).toEqual(["admin", "service", "customer"]);
    expect(access("shop.orders.v1.OrderService", "ListOrders")).toEqual({ roles: ["admin"], ownerRoles: ["customer"], ownerProperty: "customerId", ownerField: "customer_id" });
    expect(access("shop.orders.v1.OrderService", "CancelOrder")).toEqual({ roles: ["admin"], ownerRoles: ["customer"], ownerProperty: undefined, ownerField: undefined });
  });

  it("gives every method of the shop's services a rule", () => {
    for (const name of ["shop.products.v1.ProductService", "shop.orders.v1.OrderService"]) {
      for (const method of registry.getService(name)!.methods) expect(methodAccess(registry, method), `${name}.${method.name}`).toBeDefined();
    }
  });
});

describe("token keys and tokens", () => {
  const dir = tempDirForSuite("concord-tokens-");
  const keyFile = (name: string, text: string, mode: number) => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode });
    chmodSync(path, mode);
    return path;
  };
  const hex = "ab".repeat(32);

  it("refuses a key file others can read, or one shorter than 32 bytes", () => {
    expect(() => readTokenSecret(keyFile("open.key", hex, 0o644))).toThrow(/readable by others \(mode 644\), who could sign tokens of every role with it; chmod 600 it/);
    expect(() => readTokenSecret(keyFile("short.key", "ab".repeat(16), 0o600))).toThrow(/at least 32 bytes as hex/);
    expect(() => readTokenSecret(join(dir, "missing.key"))).toThrow(/cannot read the token key/);
  });

  it("verifies a token it signed, and refuses one without roles or with another audience", async () => {
    const key = readTokenSecret(keyFile("good.key", hex, 0o600));
    const verify = createTokenVerifier(key);
    expect(await verify(await signToken(key, { subject: "c-1", roles: ["customer"] }, 60))).toEqual({ subject: "c-1", roles: ["customer"] });
    const { SignJWT } = await import("jose");
    const base = () => new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject("x").setIssuer("concord").setExpirationTime("1m");
    await expect(verify(await base().setAudience("concord").sign(key))).rejects.toThrow(new TokenError("the bearer token has no roles claim (a list of strings)"));
    await expect(verify(await base().setAudience("elsewhere").sign(key))).rejects.toThrow(new TokenError(`the bearer token's aud claim is not valid: it must name "concord"`));
    await expect(verify(await base().setAudience("concord").setIssuer("elsewhere").sign(key))).rejects.toThrow(new TokenError(`the bearer token's iss claim is not valid: it must be "concord"`));
    await expect(verify(await new SignJWT({ roles: [] }).setProtectedHeader({ alg: "HS256" }).setSubject("x").setIssuer("concord").setExpirationTime("1m").sign(key))).rejects.toThrow(
      new TokenError("the bearer token's aud claim is not valid: it is missing"),
    );
  });

  it("refuses, with no issuer's keys configured, a token of the services' key (HS256) whose iss is missing, another, or not the string \"concord\"", async () => {
    const key = readTokenSecret(keyFile("issuers.key", hex, 0o600));
    const verify = createTokenVerifier(key);
    const { SignJWT } = await import("jose");
    const withIssuer = (iss: unknown) =>
      new SignJWT({ roles: ["admin"], ...(iss !== undefined && { iss }) } as never).setProtectedHeader({ alg: "HS256" }).setSubject("ops").setAudience("concord").setExpirationTime("1m").sign(key);
    await expect(verify(await withIssuer(undefined))).rejects.toThrow(new TokenError("the bearer token's iss claim is not valid: it is missing"));
    for (const iss of ["elsewhere", "", "Concord", ["concord"], null, 1]) {
      await expect(verify(await withIssuer(iss)), JSON.stringify(iss)).rejects.toThrow(new TokenError(`the bearer token's iss claim is not valid: it must be "concord"`));
    }
    expect(await verify(await withIssuer("concord"))).toEqual({ subject: "ops", roles: ["admin"] });
  });

  it("refuses a subject that is not a string, or holds a control or format character (NUL reached PostgreSQL as the caller of a request id and failed there as INTERNAL), as tools/token.ts refuses to sign it", async () => {
    const key = readTokenSecret(keyFile("subjects.key", hex, 0o600));
    const verify = createTokenVerifier(key);
    const { SignJWT } = await import("jose");
    const withSubject = (sub: unknown) => new SignJWT({ roles: ["admin"], sub } as never).setProtectedHeader({ alg: "HS256" }).setIssuer("concord").setAudience("concord").setExpirationTime("1m").sign(key);
    // Only NUL was refused: a line feed, which splits a log line, and the other C0 and C1 controls passed.
    for (const [char, code] of [["\u0000", "U+0000"], ["\n", "U+000A"], ["\u001b", "U+001B"], ["\u007f", "U+007F"], ["\u0085", "U+0085"], ["\u009f", "U+009F"]]) {
      await expect(verify(await withSubject(`op${char}s`))).rejects.toThrow(new TokenError(`the bearer token's subject holds the control character ${code}`));
    }
    await expect(verify(await withSubject(42))).rejects.toThrow(new TokenError("the bearer token's subject (sub) is not a string"));
    await expect(verify(await withSubject(""))).rejects.toThrow(new TokenError("the bearer token has an empty subject"));
    // Bidirectional-text controls, zero-width and other format characters, and line separators passed: each makes a log line read other than it is.
    for (const [char, code] of [["\u202e", "U+202E"], ["\u2066", "U+2066"], ["\u200b", "U+200B"], ["\ufeff", "U+FEFF"], ["\u2028", "U+2028"], ["\u{e0041}", "U+E0041"]]) {
      await expect(verify(await withSubject(`op${char}s`))).rejects.toThrow(new TokenError(`the bearer token's subject holds the control character ${code}`));
    }
    expect(await verify(await withSubject("Jürgen Groß, 名前 👍🏽"))).toEqual({ subject: "Jürgen Groß, 名前 👍🏽", roles: ["admin"] });
  });

  it("refuses a subject of more than 1,024 bytes, which as the caller of a request id passed what PostgreSQL indexes and failed there as INTERNAL", async () => {
    const key = readTokenSecret(keyFile("long-subjects.key", hex, 0o600));
    const verify = createTokenVerifier(key);
    const signed = (subject: string) => signToken(key, { subject, roles: ["admin"] }, 60);
    expect(await verify(await signed("s".repeat(1024)))).toEqual({ subject: "s".repeat(1024), roles: ["admin"] });
    expect(await verify(await signed("\u00e9".repeat(512)))).toEqual({ subject: "\u00e9".repeat(512), roles: ["admin"] });
    await expect(verify(await signed("s".repeat(1025)))).rejects.toThrow(new TokenError("the bearer token's subject is 1025 bytes long; it may be at most 1024 (UTF-8)"));
    await expect(verify(await signed("\u00e9".repeat(513)))).rejects.toThrow(new TokenError("the bearer token's subject is 1026 bytes long; it may be at most 1024 (UTF-8)"));
  });

  it("remembers verified tokens within a few MiB, however many roles each carries: 1,024 tokens of 3,000 roles had taken a service's heap past its limit", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const key = readTokenSecret(keyFile("big.key", hex, 0o600));
    const verify = createTokenVerifier(key);
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 600; i++) {
      const roles = Array.from({ length: 3_000 }, (_, r) => `group-${i}-${r}`);
      const claims = await verify(await signToken(key, { subject: `user-${i}`, roles }, 300));
      expect(claims.roles.length).toBe(3_000);
    }
    gc();
    const grownMiB = (process.memoryUsage().heapUsed - before) / 2 ** 20;
    // Each such token held about 180 KB remembered: the heap grew 107 MiB for 600 of them.
    expect(grownMiB).toBeLessThan(16);
    // A small token is still remembered and answered from memory, its times checked again.
    const small = await signToken(key, { subject: "c-1", roles: ["customer"] }, 300);
    expect(await verify(small)).toEqual(await verify(small));
  }, 60_000);

  describe("an issuer's public keys", () => {
    const pem = (key: KeyObject) => key.export({ type: "spki", format: "pem" }) as string;
    const ec = () => generateKeyPairSync("ec", { namedCurve: "P-256" });
    const issuerToken = async (alg: string, privateKey: KeyObject, roles: string[] = ["admin"]) => {
      const { SignJWT } = await import("jose");
      return new SignJWT({ roles }).setProtectedHeader({ alg, typ: "JWT" }).setSubject("ops").setIssuer("concord").setAudience("concord").setExpirationTime("5m").sign(privateKey);
    };

    it("accepts tokens signed with any of them (ES256, RS256, EdDSA; two at once while one is rotated) besides the services' own", async () => {
      const [current, next] = [ec(), ec()];
      const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
      const ed = generateKeyPairSync("ed25519");
      const keys = readTokenPublicKeys(keyFile("issuer.pem", [current, next, rsa, ed].map((k) => pem(k.publicKey)).join(""), 0o644));
      expect(keys).toHaveLength(4);
      const secret = readTokenSecret(keyFile("own.key", hex, 0o600));
      const verify = createTokenVerifier(secret, keys);
      for (const [alg, pair] of [["ES256", current], ["ES256", next], ["RS256", rsa], ["EdDSA", ed]] as const) {
        expect(await verify(await issuerToken(alg, pair.privateKey)), alg).toEqual({ subject: "ops", roles: ["admin"] });
      }
      expect(await verify(await signToken(secret, { subject: "orders", roles: ["service"] }, 60))).toEqual({ subject: "orders", roles: ["service"] });
    });

    it("takes the services' own key (HS256) for the service role only: a service holding it cannot mint an admin's token", async () => {
      const issuer = ec();
      const secret = readTokenSecret(keyFile("own-only.key", hex, 0o600));
      const verify = createTokenVerifier(secret, readTokenPublicKeys(keyFile("issuer-only.pem", pem(issuer.publicKey), 0o644)));
      expect(await verify(await signToken(secret, { subject: "orders", roles: ["service"] }, 60))).toEqual({ subject: "orders", roles: ["service"] });
      const refused = new TokenError(`a token signed with the services' own key (HS256) may carry only the role "service" while an issuer's keys are configured; get one from the issuer`);
      await expect(verify(await signToken(secret, { subject: "orders", roles: ["admin"] }, 60))).rejects.toThrow(refused);
      await expect(verify(await signToken(secret, { subject: "orders", roles: ["service", "admin"] }, 60))).rejects.toThrow(refused);
      await expect(verify(await signToken(secret, { subject: "c-1", roles: ["customer"] }, 60))).rejects.toThrow(refused);
      expect(await verify(await issuerToken("ES256", issuer.privateKey))).toEqual({ subject: "ops", roles: ["admin"] });
      // Without an issuer, the key is all there is: it signs every role, as tools/token.ts does.
      expect(await createTokenVerifier(secret)(await signToken(secret, { subject: "admin", roles: ["admin"] }, 60))).toEqual({ subject: "admin", roles: ["admin"] });
    });

    it("refuses a token of another key, of an algorithm none of its keys has, or one MACed with a public key as the secret", async () => {
      const issuer = ec();
      const verify = createTokenVerifier(undefined, readTokenPublicKeys(keyFile("one.pem", pem(issuer.publicKey), 0o644)));
      await expect(verify(await issuerToken("ES256", ec().privateKey))).rejects.toThrow(new TokenError("the bearer token's signature does not match this server's keys"));
      const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
      await expect(verify(await issuerToken("RS256", rsa.privateKey))).rejects.toThrow(new TokenError("the bearer token is not signed with ES256"));
      // The old confusion: HS256 with the (public) PEM as the MAC key.
      const b64 = (v: object | Buffer) => Buffer.from(v instanceof Buffer ? v : JSON.stringify(v)).toString("base64url");
      const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "ops", roles: ["admin"], iss: "concord", aud: "concord", exp: Math.floor(Date.now() / 1000) + 300 })}`;
      const forged = `${unsigned}.${b64(createHmac("sha256", pem(issuer.publicKey)).update(unsigned).digest())}`;
      await expect(verify(forged)).rejects.toThrow(new TokenError("the bearer token is not signed with ES256"));
    });

    it("refuses a file without a PEM public key, or with a key of a kind tokens are not checked with", () => {
      expect(() => readTokenPublicKeys(keyFile("none.pem", "not a key", 0o644))).toThrow(/holds no PEM public key/);
      const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" });
      expect(() => readTokenPublicKeys(keyFile("p384.pem", pem(p384.publicKey), 0o644))).toThrow(/public key 1 in .* is not one tokens are checked with/);
      const small = generateKeyPairSync("rsa", { modulusLength: 1024 });
      expect(() => readTokenPublicKeys(keyFile("small.pem", pem(ec().publicKey) + pem(small.publicKey), 0o644))).toThrow(/public key 2 in/);
      expect(() => readTokenPublicKeys(join(dir, "missing.pem"))).toThrow(/cannot read the token public keys/);
    });
  });
});
