import type { EventDescriptor } from "./types.js";

const placeholder = /\{([^{}]*)\}/g;
// A value holding one of these would split the subject or turn it into a wildcard; a control character
// (a NUL, which PostgreSQL text refuses) would make the event impossible to store or read back.
const forbidden = /[.*>\s\u0000-\u001f\u007f]/;

/**
 * The subject an event is published on: the descriptor's template with each
 * `{token}` filled from the event. Throws, naming the event type, the token and
 * the value, when a value is missing, empty, or holds ".", "*", ">", white
 * space or a control character, so a bad value never reaches the wrong
 * subscribers nor the outbox.
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
          `subject token values may not be empty or hold ".", "*", ">", white space or control characters`,
      );
    }
    return value;
  });
}

function describe(char: string): string {
  if (/\s/.test(char)) return "white space";
  return /[\u0000-\u001f\u007f]/.test(char) ? `the control character U+${char.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}` : `"${char}"`;
}
