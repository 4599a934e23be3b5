import { describe, expect, it } from "vitest";
import { givenGhzProblem } from "./ghz.js";

describe("givenGhzProblem", () => {
  it("refuses a GHZ that names no file, where the bench passed it over for another ghz, saying nothing", () => {
    expect(givenGhzProblem({ GHZ: "/nonexistent/ghz" })).toBe('GHZ="/nonexistent/ghz" names no file; set it to a ghz binary, or unset it to use .tools/bin\'s or PATH\'s (installed when missing)');
    expect(givenGhzProblem({ GHZ: "/tmp" })).toContain('GHZ="/tmp" names no file');
  });

  it("takes a GHZ that names a file, and an unset or empty one", () => {
    expect(givenGhzProblem({ GHZ: process.execPath })).toBeUndefined();
    expect(givenGhzProblem({})).toBeUndefined();
    expect(givenGhzProblem({ GHZ: "" })).toBeUndefined();
  });
});
