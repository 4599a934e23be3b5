import { generateKeyPairSync } from "node:crypto";
import { chmodSync, chownSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createTempDir } from "../../test/support/temp-dir.js";
import { readTokenPublicKeys, readTokenSecret } from "./tokens.js";

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
    const file = keyFile("readable.key", 0o644);
    expect(() => readTokenSecret(file)).toThrow(`the token key ${file} is readable by others (mode 644), who could sign tokens of every role with it; chmod 600 it`);
  });

  it.skipIf(process.getuid?.() !== 0)("refuses, as root, a key of mode 0600 another user owns: its owner may know it, and sign itself any role's tokens", () => {
    const file = keyFile("theirs.key", 0o600);
    chownSync(file, 12345, 12345);
    expect(() => readTokenSecret(file)).toThrow(`the token key ${file} is owned by uid 12345, not by this user (uid 0) or root: its owner may know it, and sign tokens of every role with it; make one of this user's own`);
  });
});

describe("readTokenPublicKeys", () => {
  const dir = createTempDir("concord-token-public-keys-");
  afterAll(() => dir.remove());
  const keysFile = (name: string, mode: number) => {
    const file = join(dir.path, name);
    writeFileSync(file, generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }), { mode });
    chmodSync(file, mode);
    return file;
  };

  it("reads a file others may read but not write", () => {
    expect(readTokenPublicKeys(keysFile("readable.pem", 0o644))).toHaveLength(1);
  });

  it("refuses a file others may write: they could add a key of theirs, and sign tokens of every role", () => {
    for (const mode of [0o664, 0o646]) {
      const file = keysFile(`writable-${mode.toString(8)}.pem`, mode);
      expect(() => readTokenPublicKeys(file)).toThrow(`the token public keys file ${file} may be written by others (mode ${mode.toString(8)}), who could add a key of theirs and sign tokens of every role; chmod go-w it`);
    }
  });

  it.skipIf(process.getuid?.() !== 0)("refuses, as root, a file another user owns", () => {
    const file = keysFile("theirs.pem", 0o644);
    chownSync(file, 12345, 12345);
    expect(() => readTokenPublicKeys(file)).toThrow(`the token public keys file ${file} is owned by uid 12345, not by this user (uid 0) or root, who could add a key of theirs and sign tokens of every role; give the file to this user or root`);
  });
});
