import { describe, expect, it } from "vitest";
import { readmeProse } from "../../test/support/readme.js";
import { helps, usage } from "./help.js";

/** The commands of concord's usage, each as its group and name (`dlq list`), or its name alone (`status`). */
const commands = new Set([...usage.matchAll(/^ {2}([a-z]+(?: [a-z]+)?)(?=\s)/gm)].map((m) => m[1]));
const groups = new Set([...commands].map((c) => c.split(" ")[0]));

/**
 * The `concord ...` code spans of `prose` that name no command of concord's:
 * a group alone is one only where the README says what it does alone, or
 * with --help.
 */
function unknownCommands(prose: string): string[] {
  const unknown: string[] = [];
  for (const m of prose.matchAll(/`(?:npx )?concord ([^`]*)`/g)) {
    // A line a command prints begins with its name and a colon: `concord dlq list: unknown option --limt`.
    const [first, second] = m[1].split(" ").map((word) => word.replace(/:$/, ""));
    if (commands.has(first) || commands.has(`${first} ${second}`) || first === "<command>") continue;
    const alone = second === undefined && prose.startsWith(" alone", m.index + m[0].length);
    if (groups.has(first) && (alone || second === "--help")) continue;
    unknown.push(m[0]);
  }
  return unknown;
}

describe("concord's usage", () => {
  it("has every concord command README names in its code spans (`concord outbox` named none)", () => {
    expect(commands).toContain("outbox parked");
    expect(unknownCommands(readmeProse())).toEqual([]);
    expect(unknownCommands("stay: `concord outbox`, `concord dlq list` and `concord dlq replay` take them")).toEqual(["`concord outbox`"]);
    expect(unknownCommands("`npx concord dlq` alone, or `npx concord dlq --help`, lists them; `npx concord dlqs list`")).toEqual(["`npx concord dlqs list`"]);
    expect(unknownCommands("it says ``concord dlq list: unknown option --limt`` and ``concord dlqs list: ...``")).toEqual(["`concord dlqs list: ...`"]);
  });
});

describe("a command's usage line", () => {
  it("names no placeholder its text leaves undefined: dlq list and dlq replay name the filter's options, not FILTER", () => {
    for (const command of ["dlq list", "dlq replay"]) {
      const [usageLine, ...rest] = helps[command]!.split("\n");
      expect(usageLine).not.toMatch(/\bFILTER\b/);
      for (const option of ["--consumer DURABLE", "--subject PATTERN", "--type TYPE"]) {
        expect(usageLine).toContain(`[${option}]`);
        expect(rest).toContainEqual(expect.stringMatching(new RegExp(`^  ${option} `)));
      }
    }
    // Where the commands' list still says FILTER, it says what FILTER is.
    expect(usage.replace(/\s+/g, " ")).toContain("(FILTER: --consumer, --subject, --type, one or more, as dlq list takes)");
  });
});
