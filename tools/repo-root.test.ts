import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./repo-root.js";

describe("repoRoot", () => {
  it("is the absolute directory of Concord's package.json, without a trailing slash", () => {
    expect(repoRoot.startsWith("/")).toBe(true);
    expect(repoRoot.endsWith("/")).toBe(false);
    expect(JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")).name).toBe("concord");
    expect(existsSync(join(repoRoot, "proto", "concord", "v1", "options.proto"))).toBe(true);
  });
});
