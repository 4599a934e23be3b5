import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { createTokenVerifier, readTokenSecret, signToken, TokenError } from "../auth/index.js";
import { createMessageChecker } from "../contracts/index.js";
import { methodAccess } from "./access.js";
import { createTempDir } from "../../test/support/temp-dir.js";

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
  const dir = createTempDir("concord-tokens-");
  const keyFile = (name: string, text: string, mode: number) => {
    const path = join(dir.path, name);
    writeFileSync(path, text, { mode });
    chmodSync(path, mode);
    return path;
  };
  const hex = "ab".repeat(32);

  it("refuses a key file others can read, or one shorter than 32 bytes", () => {
    expect(() => readTokenSecret(keyFile("open.key", hex, 0o644))).toThrow(/readable by others \(mode 644\); chmod 600 it/);
    expect(() => readTokenSecret(keyFile("short.key", "ab".repeat(16), 0o600))).toThrow(/at least 32 bytes as hex/);
    expect(() => readTokenSecret(join(dir.path, "missing.key"))).toThrow(/cannot read the token key/);
  });

  it("verifies a token it signed, and refuses one without roles or with another audience", async () => {
    const key = readTokenSecret(keyFile("good.key", hex, 0o600));
    const verify = createTokenVerifier(key);
    expect(await verify(await signToken(key, { subject: "c-1", roles: ["customer"] }, 60))).toEqual({ subject: "c-1", roles: ["customer"] });
    const { SignJWT } = await import("jose");
    const base = () => new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject("x").setIssuer("concord").setExpirationTime("1m");
    await expect(verify(await base().setAudience("concord").sign(key))).rejects.toThrow(new TokenError("the bearer token has no roles claim (a list of strings)"));
    await expect(verify(await base().setAudience("elsewhere").sign(key))).rejects.toThrow(/aud claim is not valid/);
  });
});
