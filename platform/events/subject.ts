import type { EventDescriptor } from "./types.js";

const placeholder = /\{([^{}]*)\}/g;
// A value holding one of these would split the subject or turn it into a wildcard.
const forbidden = /[.*>\s]/;

/**
 * The subject an event is published on: the descriptor's template with each
 * `{token}` filled from the event. Throws, naming the event type, the token and
 * the value, when a value is missing, empty, or holds ".", "*", ">" or white
 * space, so a bad value never reaches the wrong subscribers.
 */
export function subjectFor<T>(descriptor: EventDescriptor<T>, event: T): string {
  const values = descriptor.subjectTokens(event);
  return descriptor.subjectTemplate.replace(placeholder, (_, token: string) => {
    const raw = Object.prototype.hasOwnProperty.call(values, token) ? values[token] : undefined;
    if (raw === undefined || raw === null) {
      throw new Error(`cannot build the subject of ${descriptor.typeName}: no value for token {${token}} of "${descriptor.subjectTemplate}"`);
    }
    const value = String(raw);
    if (value === "" || forbidden.test(value)) {
      const problem = value === "" ? "is empty" : `holds ${describe(value.match(forbidden)![0])}`;
      throw new Error(
        `cannot build the subject of ${descriptor.typeName}: the value ${JSON.stringify(value)} of token {${token}} ${problem}; ` +
          `subject token values may not be empty or hold ".", "*", ">" or white space`,
      );
    }
    return value;
  });
}

function describe(char: string): string {
  return /\s/.test(char) ? "white space" : `"${char}"`;
}
