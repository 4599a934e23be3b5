import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { readSettingFile, settingFileExposure } from "./setting-file.js";

const dir = tempDirForSuite("concord-setting-file-");

describe("readSettingFile", () => {
  it("reads a regular file of at most its bound", () => {
    const file = join(dir, "seed.nk");
    writeFileSync(file, "SUAB\n");
    expect(readSettingFile(file, 5).toString()).toBe("SUAB\n");
    expect(() => readSettingFile(file, 4)).toThrow("it holds 5 bytes, more than such a file does (at most 4)");
  });

  it("refuses a FIFO at once, where it waited for ever for a writer, and a device, where /dev/zero was read until memory ran out, saying which it is", () => {
    const fifo = join(dir, "seed.fifo");
    execFileSync("mkfifo", [fifo]);
    expect(() => readSettingFile(fifo, 4096)).toThrow(/^it is a FIFO, not a regular file$/);
    for (const path of ["/dev/zero", "/dev/null"]) expect(() => readSettingFile(path, 4096), path).toThrow(/^it is a character device, not a regular file$/);
  });

  it("throws what opening throws for a file that is not there, and says a directory is one", () => {
    expect(() => readSettingFile(join(dir, "none.nk"), 4096)).toThrow("ENOENT");
    mkdirSync(join(dir, "a-dir"));
    expect(() => readSettingFile(join(dir, "a-dir"), 4096)).toThrow(/^it is a directory, not a regular file$/);
  });
});

describe("settingFileExposure", () => {
  const file = (name: string, mode: number) => {
    const path = join(dir, name);
    writeFileSync(path, "x\n", { mode });
    chmodSync(path, mode);
    return path;
  };

  it("takes a secret only its owner may read or write, and a public file others may read but not write", () => {
    expect(settingFileExposure(file("own.key", 0o600), "the TLS key", "secret", "pose as its holder")).toBeUndefined();
    expect(settingFileExposure(file("own-read-only.key", 0o400), "the TLS key", "secret", "pose as its holder")).toBeUndefined();
    expect(settingFileExposure(file("ca.pem", 0o644), "the TLS CA certificate", "public", "add a CA of theirs")).toBeUndefined();
    expect(settingFileExposure(join(dir, "not-there.key"), "the TLS key", "secret", "pose as its holder")).toBeUndefined();
  });

  it("refuses a secret others may read or write, and a public file others may write, in one line naming the file and the fix", () => {
    const readable = file("readable.nk", 0o644);
    expect(settingFileExposure(readable, "the NATS nkey seed file", "secret", "connect as its user")).toBe(
      `the NATS nkey seed file ${readable} is readable by others (mode 644), who could connect as its user with it; chmod 600 it`,
    );
    const writable = file("writable.nk", 0o602);
    expect(settingFileExposure(writable, "the NATS nkey seed file", "secret", "connect as its user")).toBe(
      `the NATS nkey seed file ${writable} is writable by others (mode 602), who could connect as its user with it; chmod 600 it`,
    );
    for (const mode of [0o664, 0o646]) {
      const ca = file(`ca-${mode.toString(8)}.pem`, mode);
      expect(settingFileExposure(ca, "the TLS CA certificate", "public", "add a CA of theirs")).toBe(
        `the TLS CA certificate ${ca} may be written by others (mode ${mode.toString(8)}), who could add a CA of theirs; chmod go-w it`,
      );
    }
  });

  it.skipIf(process.getuid?.() !== 0)("takes a secret its group may read, as Kubernetes mounts one with fsGroup (root:fsGroup, mode 0440), only when root owns it and the group is one of this process's", () => {
    const own = process.getegid!();
    const stranger = [12345, 12346].find((gid) => !process.getgroups!().includes(gid))!;
    const secret = (name: string, mode: number, uid: number, gid: number) => {
      const path = file(name, mode);
      chownSync(path, uid, gid);
      return path;
    };
    // It was refused as "readable by others (mode 440)": a process not root, in the pod's fsGroup, could take no mounted secret.
    expect(settingFileExposure(secret("mounted.nk", 0o440, 0, own), "the NATS nkey seed file", "secret", "connect as its user")).toBeUndefined();
    expect(settingFileExposure(secret("root-group.key", 0o640, 0, own), "the TLS key", "secret", "pose as its holder")).toBeUndefined();
    for (const [path, mode] of [
      [secret("another-group.nk", 0o440, 0, stranger), "440"],
      [secret("group-writable.nk", 0o460, 0, own), "460"],
      [secret("group-and-others.nk", 0o444, 0, own), "444"],
      [secret("not-roots.nk", 0o440, 12345, own), "440"],
    ] as const) {
      expect(settingFileExposure(path, "the NATS nkey seed file", "secret", "connect as its user"), path).toBe(
        `the NATS nkey seed file ${path} is readable by others (mode ${mode}), who could connect as its user with it; chmod 600 it`,
      );
    }
  });

  it.skipIf(process.getuid?.() !== 0)("refuses, as root, a file another user owns, whatever its mode: its owner may know a secret, or change a public file", () => {
    const secret = file("theirs.key", 0o600);
    const ca = file("theirs.pem", 0o644);
    chownSync(secret, 12345, 12345);
    chownSync(ca, 12345, 12345);
    expect(settingFileExposure(secret, "the TLS key", "secret", "pose as its holder")).toBe(
      `the TLS key ${secret} is owned by uid 12345, not by this user (uid 0) or root: its owner may know it, and pose as its holder with it; make one of this user's own`,
    );
    expect(settingFileExposure(ca, "the TLS CA certificate", "public", "add a CA of theirs")).toBe(
      `the TLS CA certificate ${ca} is owned by uid 12345, not by this user (uid 0) or root, who could add a CA of theirs; give the file to this user or root`,
    );
  });
});
