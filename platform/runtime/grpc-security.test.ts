import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { decodeJwt } from "jose";
import { afterAll, describe, expect, it } from "vitest";
import { createTempDir } from "../../test/support/temp-dir.js";
import { defaultMaxTokenTtlMs, readTokenSecret, signToken } from "../auth/index.js";
import { ConfigError, readConfig } from "../config/index.js";
import { grpcSecurityOf, grpcSecuritySettings, serverSecurity, serviceCallSecurity } from "./grpc-security.js";

describe("GRPC_AUTH_MAX_TOKEN_TTL", () => {
  const dir = createTempDir("concord-grpc-security-");
  afterAll(() => dir.remove());
  const keyFile = join(dir.path, "token-hs256.key");
  writeFileSync(keyFile, "cd".repeat(32), { mode: 0o600 });
  const security = (env: NodeJS.ProcessEnv) => grpcSecurityOf(readConfig(grpcSecuritySettings("orders"), { GRPC_INSECURE: "1", GRPC_AUTH_KEY_FILE: keyFile, ...env }));
  const maxOf = (env: NodeJS.ProcessEnv) => {
    const { auth } = security(env);
    return auth === "none" ? undefined : auth.maxTokenTtlMs;
  };

  it("is a day unless set, and reads a duration of a minute or more", () => {
    expect(maxOf({})).toBe(defaultMaxTokenTtlMs);
    expect(defaultMaxTokenTtlMs).toBe(24 * 3_600_000);
    expect(maxOf({ GRPC_AUTH_MAX_TOKEN_TTL: "8h" })).toBe(8 * 3_600_000);
    expect(maxOf({ GRPC_AUTH_MAX_TOKEN_TTL: "1m" })).toBe(60_000);
  });

  it("refuses a duration under a minute, or none, naming the variable", () => {
    for (const [value, says] of [
      ["30s", 'GRPC_AUTH_MAX_TOKEN_TTL="30s" is invalid: expected at least 1m'],
      ["0", 'GRPC_AUTH_MAX_TOKEN_TTL="0" is invalid: expected a duration'],
      ["forever", 'GRPC_AUTH_MAX_TOKEN_TTL="forever" is invalid: expected a duration'],
    ]) {
      expect(() => maxOf({ GRPC_AUTH_MAX_TOKEN_TTL: value })).toThrow(ConfigError);
      expect(() => maxOf({ GRPC_AUTH_MAX_TOKEN_TTL: value })).toThrow(says);
    }
  });

  it("bounds the tokens the server takes", async () => {
    const { access } = serverSecurity(security({ GRPC_AUTH_MAX_TOKEN_TTL: "30m" }));
    const key = readTokenSecret(keyFile);
    expect(await access!.verify(await signToken(key, { subject: "ops", roles: ["admin"] }, 1_800))).toEqual({ subject: "ops", roles: ["admin"] });
    await expect(access!.verify(await signToken(key, { subject: "ops", roles: ["admin"] }, 3_600))).rejects.toThrow("get one valid for at most 30m");
  });

  it("keeps the services' own tokens within it: ten minutes, or the maximum if shorter, and taken by a server with that maximum", async () => {
    for (const [max, lives] of [
      [undefined, 600],
      ["2m", 120],
    ] as const) {
      const env = max === undefined ? {} : { GRPC_AUTH_MAX_TOKEN_TTL: max };
      const token = await serviceCallSecurity(security(env), "orders").token!();
      const { exp, iat } = decodeJwt(token);
      expect(exp! - iat!, String(max)).toBe(lives);
      expect(await serverSecurity(security(env)).access!.verify(token)).toEqual({ subject: "orders", roles: ["service"] });
    }
  });
});
