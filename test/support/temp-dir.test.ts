import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "./temp-dir.js";

describe("tempDirForSuite", () => {
  const forTheFile = tempDirForSuite("concord-temp-dir-");
  let forOneTest = "";

  it("gives a directory while tests are collected and inside a test", () => {
    forOneTest = tempDirForSuite("concord-temp-dir-");
    expect(existsSync(forTheFile)).toBe(true);
    expect(existsSync(forOneTest)).toBe(true);
  });

  it("removes one made inside a test once that test has finished, and keeps the file's until the file is done", () => {
    expect(existsSync(forOneTest)).toBe(false);
    expect(existsSync(forTheFile)).toBe(true);
  });
});
