import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { readSettingFile } from "./setting-file.js";

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
