import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { staleBuild } from "./compiled.js";

describe("staleBuild", () => {
  const roots: string[] = [];
  afterEach(() => {
    for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
  });

  /** A tree of `files` (path to age in seconds) under a new temporary root. */
  const tree = (files: Record<string, number>): string => {
    const root = mkdtempSync(join(os.tmpdir(), "concord-stale-build-"));
    roots.push(root);
    const now = Date.now() / 1000;
    for (const [path, age] of Object.entries(files)) {
      mkdirSync(dirname(join(root, path)), { recursive: true });
      writeFileSync(join(root, path), "");
      utimesSync(join(root, path), now - age, now - age);
    }
    return root;
  };
  const built = { "services/orders/main.ts": 60, "platform/events/outbox.ts": 60, "gen/ts/options_pb.ts": 60, "dist/services/orders/main.js": 30, "dist/platform/events/outbox.js": 30 };

  it("passes a build newer than its sources, whatever sources no service imports (no .js of theirs) or tests say", () => {
    expect(staleBuild(tree({ ...built, "platform/events/outbox.test.ts": 0 }))).toBeUndefined();
  });

  it("names a source changed since it was compiled", () => {
    expect(staleBuild(tree({ ...built, "platform/events/outbox.ts": 10 }))).toBe("platform/events/outbox.ts changed since it was compiled to dist/platform/events/outbox.js");
  });

  it("names a service whose entry point was never compiled", () => {
    expect(staleBuild(tree({ ...built, "services/products/main.ts": 60 }))).toBe("dist/services/products/main.js is missing");
  });
});
