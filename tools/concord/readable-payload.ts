/**
 * Payloads cut to a readable size for a terminal: an event can be near
 * 1 MiB (NATS's max_payload), and `events tail`, `dlq list`, `dlq show` and
 * tools/watch-events.ts printed it whole, a megabyte of one string filling the screen for
 * minutes. Output to a file or a pipe, and --full, keep every byte.
 */

/** The longest string, and the most items of a list, a payload shows on a terminal. */
export const readableLimits = { characters: 200, items: 20 } as const;

/** The fields of a printed event or dead letter that hold its payload. */
const payloadFields = ["payload", "payloadBase64"] as const;

/**
 * `value` (as JSON has it) with each string past 200 characters and each
 * list past 20 items cut there, the cut marked in its place (`… (+999800
 * characters)`, a last item `… (+430 items)`); `cut` says whether any was.
 */
export function cutForReading(value: unknown): { value: unknown; cut: boolean } {
  let cut = false;
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") {
      if (v.length <= readableLimits.characters) return v;
      cut = true;
      return `${v.slice(0, readableLimits.characters)}… (+${v.length - readableLimits.characters} characters)`;
    }
    if (Array.isArray(v)) {
      const kept = v.slice(0, readableLimits.items).map(walk);
      if (v.length <= readableLimits.items) return kept;
      cut = true;
      return [...kept, `… (+${v.length - readableLimits.items} items)`];
    }
    if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, item]) => [k, walk(item)]));
    return v;
  };
  return { value: walk(value), cut };
}

/**
 * What `program` ("concord events tail", "watch-events") prints of each
 * event or dead letter: on a terminal (`terminal`) without --full
 * (`whole`), its payload and payloadBase64 cut by cutForReading, saying so
 * once through `note` with how to get them whole; else the line as it is.
 */
export function payloadPrinter(program: string, options: { terminal: boolean; whole: boolean; note: (line: string) => void }): <T extends object>(line: T) => T {
  if (!options.terminal || options.whole) return (line) => line;
  let noted = false;
  return (line) => {
    const out: Record<string, unknown> = { ...(line as Record<string, unknown>) };
    let cut = false;
    for (const field of payloadFields) {
      if (!(field in out)) continue;
      const result = cutForReading(out[field]);
      out[field] = result.value;
      cut ||= result.cut;
    }
    if (cut && !noted) {
      noted = true;
      options.note(
        `${program}: a payload is cut to a readable size (strings past ${readableLimits.characters} characters, lists past ${readableLimits.items} items, each marked where cut); --full prints payloads whole, as does output to a file or pipe`,
      );
    }
    return out as typeof line;
  };
}
