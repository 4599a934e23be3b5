import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

describe("tools/token.ts", () => {
  it("refuses a role no access rule in the contracts names, before it reads any key", () => {
    const run = spawnSync(process.execPath, ["--import", "tsx", "tools/token.ts", "--role", "admin", "--role", "nonsense"], { encoding: "utf8", timeout: 30_000, env: { ...process.env, DATA_DIR: "/nonexistent" } });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('no method\'s concord.v1.access rule names the role "nonsense"; the contracts name admin, customer, service');
    expect(run.stdout).toBe("");
  });

  it("refuses a --ttl under a second as bad usage, before it reads any key", () => {
    for (const ttl of ["0s", "250ms"]) {
      const run = spawnSync(process.execPath, ["--import", "tsx", "tools/token.ts", "--role", "admin", "--ttl", ttl], { encoding: "utf8", timeout: 30_000, env: { ...process.env, DATA_DIR: "/nonexistent" } });
      expect(run.status, ttl).toBe(2);
      expect(run.stderr).toContain(`token: --ttl: a token's expiry is in whole seconds, so it lives at least 1s; got "${ttl}"`);
      expect(run.stderr).not.toContain("npm start");
      expect(run.stdout).toBe("");
    }
  });
});
