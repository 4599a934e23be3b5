import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./repo-root.js";

const setup = (...args: string[]) => spawnSync(process.execPath, ["tools/setup.mjs", ...args], { cwd: repoRoot, encoding: "utf8", timeout: 60_000 });

describe("tools/setup.mjs", () => {
  it("installs with --for-tools the grpcurl and nats CLI README's commands call, and nothing more: with them in place it has nothing to do", () => {
    // README sent a user of `npm start` who wanted grpcurl to --for-tests: PostgreSQL, PgBouncer, protoc, the SDK
    // generators, .venv and the interop tests' Go modules besides, minutes of them on a fresh machine.
    for (const tool of ["grpcurl", "nats"]) expect(existsSync(join(repoRoot, ".tools", "bin", tool)), tool).toBe(true);
    const tools = setup("--for-tools");
    expect(tools.status, tools.stderr).toBe(0);
    expect(tools.stdout + tools.stderr).toBe("");
    const usage = setup("--for-tool");
    expect(usage.status).toBe(2);
    expect(usage.stderr).toContain("setup: unknown argument --for-tool\n\nUsage: node tools/setup.mjs [--for-tests] [--for-gen] [--for-tools] [--postgres]");
    expect(usage.stderr).toContain("--for-tools, the pinned grpcurl and nats CLI (.tools/bin)");
  });
});
