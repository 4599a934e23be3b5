/**
 * Statements whose text depends on how many rows they write (a multi-row
 * INSERT, a DELETE of several ranges): built once per count and kept, so a
 * commit does not rebuild the same text, and the SQLite statement cache,
 * keyed by text, hashes a string it has seen.
 */

/** `($1, $2), ($3, $4)` for rows = 2, columns = 2: the VALUES of a multi-row INSERT. */
export function placeholderRows(rows: number, columns: number): string {
  const out: string[] = [];
  for (let r = 0; r < rows; r++) out.push(`(${Array.from({ length: columns }, (_, c) => `$${r * columns + c + 1}`).join(", ")})`);
  return out.join(", ");
}

/** `build(count)`, made once for each count and remembered (callers bound the count). */
export function sqlByRowCount(build: (count: number) => string): (count: number) => string {
  const made = new Map<number, string>();
  return (count) => {
    let sql = made.get(count);
    if (sql === undefined) made.set(count, (sql = build(count)));
    return sql;
  };
}
