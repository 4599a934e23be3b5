import { describe, expect, it } from "vitest";
import { outputMismatch, parseBlock, readmeBlock } from "./readme.js";

describe("README blocks", () => {
  it("splits commands as a shell would, across quoted newlines and line continuations, with their shown output", () => {
    const commands = parseBlock(["tool -d '{\"a\":1,", '  "b":"x y"}\' \\', "  host:1 svc/Method", "# {", "#   \"ok\": true", "# }", "tool list", ""].join("\n"));
    expect(commands.map((c) => c.argv)).toEqual([
      ["tool", "-d", '{"a":1,\n  "b":"x y"}', "host:1", "svc/Method"],
      ["tool", "list"],
    ]);
    expect(commands[0].output).toEqual(["{", '  "ok": true', "}"]);
    expect(commands[1].output).toEqual([]);
  });

  it("refuses shell syntax it would not run as a shell does", () => {
    expect(() => parseBlock("tool list | head")).toThrow(/shell syntax "\|"/);
    expect(() => parseBlock('tool "$HOME"')).toThrow(/expansion inside double quotes/);
    expect(() => parseBlock("tool 'open")).toThrow(/unterminated command/);
  });

  it("matches output lines with <placeholders> and ... for lines left out, ignoring spacing", () => {
    const shown = ["{", '  "id": "<uuid>",', "...", '  "total": 3', "}"];
    expect(outputMismatch(shown, '{\n  "id": "0193-ab",\n  "lines": [],\n  "x": 1,\n  "total":   3\n}\n')).toBeUndefined();
    expect(outputMismatch(shown, '{\n  "id": "0193-ab",\n  "total": 3\n}')).toBeUndefined();
    expect(outputMismatch(shown, '{\n  "id": "0193-ab",\n  "total": 4\n}')).toContain("but the command printed");
    expect(outputMismatch(shown, '{\n  "id": "",\n  "total": 3\n}')).toBeDefined();
    expect(outputMismatch(["a"], "a\nb")).toBeDefined();
  });

  it("finds a block after its marker, within the marker's section only", () => {
    const readme = ["## One", "text", "```ts", "# not a heading", "```", "```sh", "tool a", "# out", "```", "## Two", "```sh", "tool b", "```"].join("\n");
    expect(readmeBlock("## One", readme).map((c) => c.argv)).toEqual([["tool", "a"]]);
    expect(() => readmeBlock("text", ["## One", "text", "## Two", "```sh", "tool b", "```"].join("\n"))).toThrow(/no sh block/);
  });
});
