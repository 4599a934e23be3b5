import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "../../tools/repo-root.js";

/**
 * The README's shell examples, read at test time so that the README and the
 * code cannot drift apart. A block is a sequence of commands, each optionally
 * followed by its output as `#` comment lines. In an output line, `<words>`
 * (lower case) stands for a value that differs per run, and a line `...` for
 * any number of lines left out.
 */
export interface ReadmeCommand {
  /** The words of the command, quotes removed, as a shell would pass them. */
  readonly argv: readonly string[];
  /** The command as written, for messages. */
  readonly text: string;
  /** The output lines the README shows; empty when it shows none. */
  readonly output: readonly string[];
}

const readmePath = join(repoRoot, "README.md");

/**
 * README.md with each run of white space as one space: a message the prose
 * quotes reads as the program prints it, wherever the lines were wrapped.
 */
export function readmeProse(readme = readFileSync(readmePath, "utf8")): string {
  return readme.replace(/\s+/g, " ");
}

/**
 * The commands of the first ```sh block after `marker` in README.md, within
 * the same section. Throws when there is none, or when a command uses shell
 * syntax beyond words and quotes.
 */
export function readmeBlock(marker: string, readme = readFileSync(readmePath, "utf8")): ReadmeCommand[] {
  const start = readme.indexOf(marker);
  if (start < 0) throw new Error(`README.md has no "${marker}"`);
  const lines = readme.slice(start + marker.length).split("\n");
  let body: string[] | undefined;
  let otherFence = false;
  for (const line of lines) {
    if (body !== undefined) {
      if (line === "```") return parseBlock(body.join("\n"));
      body.push(line);
    } else if (line.startsWith("```")) {
      if (line === "```sh" && !otherFence) body = [];
      else otherFence = !otherFence;
    } else if (!otherFence && /^#{1,6} /.test(line)) break; // the next heading: the section ended
  }
  throw new Error(`README.md has no sh block after "${marker}" in its section`);
}

/** Parses one block's text into commands with their shown output. */
export function parseBlock(text: string): ReadmeCommand[] {
  const commands: { argv: string[]; text: string; output: string[] }[] = [];
  const lines = text.split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") {
      i++;
      continue;
    }
    if (line.startsWith("#")) {
      const current = commands.at(-1);
      if (!current) throw new Error(`output before any command: ${line}`);
      current.output.push(line.replace(/^# ?/, ""));
      i++;
      continue;
    }
    // A command runs on while a quote is open or a line ends in a backslash.
    let source = line;
    let words = splitWords(source);
    while (words === undefined && i + 1 < lines.length) {
      i++;
      source += `\n${lines[i]}`;
      words = splitWords(source);
    }
    if (words === undefined) throw new Error(`unterminated command: ${source}`);
    commands.push({ argv: words, text: source, output: [] });
    i++;
  }
  return commands;
}

/** Shell words of `source`; undefined while a quote is open or it ends in a line continuation. */
function splitWords(source: string): string[] | undefined {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === "'" || c === '"') {
      const end = source.indexOf(c, i + 1);
      if (end < 0) return undefined;
      const quoted = source.slice(i + 1, end);
      if (c === '"' && /[$`\\]/.test(quoted)) throw new Error(`expansion inside double quotes is not supported: ${source}`);
      word = (word ?? "") + quoted;
      i = end;
    } else if (c === "\\") {
      if (i + 1 === source.length) return undefined;
      if (source[i + 1] !== "\n") throw new Error(`a backslash only continues a line here: ${source}`);
      i++;
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (/[|&;<>()$`*?]/.test(c)) {
      throw new Error(`shell syntax "${c}" is not supported in a README command: ${source}`);
    } else word = (word ?? "") + c;
  }
  if (word !== undefined) words.push(word);
  return words;
}

/**
 * Why `actual` is not the output the README shows, or undefined when it is.
 * Lines are compared with surrounding white space trimmed and inner runs of
 * it collapsed; blank lines are ignored.
 */
export function outputMismatch(shown: readonly string[], actual: string): string | undefined {
  const normalize = (l: string) => l.trim().replace(/\s+/g, " ");
  const want = shown.map(normalize).filter((l) => l !== "");
  const got = actual.split("\n").map(normalize).filter((l) => l !== "");
  const patterns = want.map((l) => (l === "..." ? undefined : linePattern(l)));
  const matches = (w: number, g: number): boolean => {
    if (w === patterns.length) return g === got.length;
    const pattern = patterns[w];
    if (pattern === undefined) {
      for (let skip = g; skip <= got.length; skip++) if (matches(w + 1, skip)) return true;
      return false;
    }
    return g < got.length && pattern.test(got[g]) && matches(w + 1, g + 1);
  };
  if (matches(0, 0)) return undefined;
  return `the README shows:\n${want.join("\n")}\nbut the command printed:\n${got.join("\n")}`;
}

function linePattern(line: string): RegExp {
  const parts = line.split(/(<[a-z][a-z ]*>)/);
  const source = parts.map((p, i) => (i % 2 === 1 ? ".+?" : p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))).join("");
  return new RegExp(`^${source}$`);
}
