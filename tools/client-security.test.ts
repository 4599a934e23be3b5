import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { decodeJwt } from "jose";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../test/support/temp-dir.js";
import { toolClientSecurity } from "./client-security.js";

describe("toolClientSecurity", () => {
  const keyFile = join(tempDirForSuite("concord-client-security-"), "token-hs256.key");
  writeFileSync(keyFile, "ab".repeat(32), { mode: 0o600 });
  const lifeOf = async (env: NodeJS.ProcessEnv) => {
    const { exp, iat } = decodeJwt(await toolClientSecurity({ subject: "ops", roles: ["admin"] }, { GRPC_INSECURE: "1", GRPC_AUTH_KEY_FILE: keyFile, ...env }).token!());
    return exp! - iat!;
  };

  it("signs tokens of an hour, or of GRPC_AUTH_MAX_TOKEN_TTL if that is shorter, so the services take them", async () => {
    expect(await lifeOf({})).toBe(3_600);
    expect(await lifeOf({ GRPC_AUTH_MAX_TOKEN_TTL: "8h" })).toBe(3_600);
    expect(await lifeOf({ GRPC_AUTH_MAX_TOKEN_TTL: "10m" })).toBe(600);
  });

  it("fails the call that needs a token when GRPC_AUTH_MAX_TOKEN_TTL is bad, naming it", async () => {
    await expect(lifeOf({ GRPC_AUTH_MAX_TOKEN_TTL: "10s" })).rejects.toThrow('GRPC_AUTH_MAX_TOKEN_TTL="10s" is invalid: expected at least 1m');
  });

  it("refuses a GRPC_INSECURE or GRPC_AUTH the services refuse, naming it, where GRPC_INSECURE=true was taken for TLS", () => {
    const security = (env: NodeJS.ProcessEnv) => () => toolClientSecurity({ subject: "ops", roles: [] }, { GRPC_AUTH_KEY_FILE: keyFile, ...env });
    expect(security({ GRPC_INSECURE: "true" })).toThrow('GRPC_INSECURE="true" is invalid: expected one of 0, 1');
    expect(security({ GRPC_INSECURE: "1", GRPC_AUTH: "None" })).toThrow('GRPC_AUTH="None" is invalid: expected one of jwt, none');
    expect(security({ GRPC_INSECURE: "1", GRPC_AUTH: "none" })()).toEqual({});
  });
});
