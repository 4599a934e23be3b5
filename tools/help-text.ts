/**
 * Help texts that name the services from their list (tools/services.ts):
 * written with today's line breaks, which a longer list must not push past
 * the text's width.
 */

/** `text` with its last space a line break: "the product service and the order\nservice". */
export function lastWordOnNextLine(text: string): string {
  const at = text.lastIndexOf(" ");
  return at < 0 ? text : `${text.slice(0, at)}\n${text.slice(at + 1)}`;
}

/**
 * A list as `listed` or `eitherOf` says it, broken into two lines at its last
 * `word` ("and", "or"): before it or after it, the second line after
 * `indent` spaces; one item as it is.
 */
export function brokenAtLast(listedText: string, word: "and" | "or", side: "before" | "after", indent: number): string {
  const at = listedText.lastIndexOf(` ${word} `);
  if (at < 0) return listedText;
  const [head, tail] = [listedText.slice(0, at), listedText.slice(at + word.length + 2)];
  return side === "before" ? `${head}\n${" ".repeat(indent)}${word} ${tail}` : `${head} ${word}\n${" ".repeat(indent)}${tail}`;
}

/**
 * `text` with each paragraph that has a line longer than `width` filled
 * again from that line on, a word at a time, to `width`: its lines are those
 * after it as deep as its continuation (the next line's indent when it is
 * deeper, else an option's description column, "  NAME   description",
 * else the line's own indent). A text whose lines all fit is returned as it
 * is, with its lines broken where they were written.
 */
export function refilledWhereTooWide(text: string, width: number): string {
  const lines = text.split("\n");
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.length <= width) {
      out.push(line);
      continue;
    }
    const own = indentOf(line);
    const next = lines[i + 1];
    const column = /^(\s*\S+ {2,})\S/.exec(line)?.[1]?.length;
    const deeper = next !== undefined && next.trim() !== "" && indentOf(next) > own;
    const continuation = deeper ? indentOf(next) : (column ?? own);
    const start = column ?? own;
    const words = [line.slice(start)];
    while (i + 1 < lines.length && lines[i + 1]!.trim() !== "" && indentOf(lines[i + 1]!) === continuation) {
      words.push(lines[++i]!.trim());
    }
    let current = line.slice(0, start);
    let empty = true;
    for (const word of words.join(" ").split(" ")) {
      if (!empty && current.length + 1 + word.length > width) {
        out.push(current);
        current = " ".repeat(continuation);
        empty = true;
      }
      current += empty ? word : ` ${word}`;
      empty = false;
    }
    out.push(current);
  }
  return out.join("\n");
}

function indentOf(line: string): number {
  return line.length - line.trimStart().length;
}
