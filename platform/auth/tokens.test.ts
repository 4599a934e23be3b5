import { chmodSync, chownSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createTempDir } from "../../test/support/temp-dir.js";
import { readTokenSecret } from "./tokens.js";

describe("readTokenSecret", () => {
  const dir = createTempDir("concord-token-key-");
  afterAll(() => dir.remove());
  const keyFile = (name: string, mode: number) => {
    const file = join(dir.path, name);
    writeFileSync(file, `${"ab".repeat(32)}\n`, { mode });
    chmodSync(file, mode);
    return file;
  };

  it("reads a key of mode 0600 that this user owns", () => {
    expect(readTokenSecret(keyFile("own.key", 0o600)).export().toString("hex")).toBe("ab".repeat(32));
  });

  it("refuses a key others may read, naming it", () => {
    const file = keyFile("readable.key", 0o640);
    expect(() => readTokenSecret(file)).toThrow(`the token key ${file} is readable by others (mode 640); chmod 600 it`);
  });

  it.skipIf(process.getuid?.() !== 0)("refuses, as root, a key of mode 0600 another user owns: its owner may know it, and sign itself any role's tokens", () => {
    const file = keyFile("theirs.key", 0o600);
    chownSync(file, 12345, 12345);
    expect(() => readTokenSecret(file)).toThrow(`the token key ${file} is owned by uid 12345, not by this user (uid 0) or root: its owner may know it; make a key of this user's own`);
  });
});
