import type { EventDescriptor } from "./types.js";

// A value holding one of these would split the subject or turn it into a wildcard; a control character
// (a NUL, which PostgreSQL text refuses) would make the event impossible to store or read back.
const forbidden = /[.*>\s\u0000-\u001f\u007f]/;

/** A subject template split once: `literals[i]`, then the value of `tokens[i]`, ..., then the last literal. */
interface CompiledTemplate {
  readonly literals: readonly string[];
  readonly tokens: readonly string[];
}

/**
 * Templates split at their `{token}` placeholders, by template. Every
 * publish and every consumed event builds a subject; splitting the template
 * once spares each of them a regular expression's replace and its callback.
 */
const compiled = new Map<string, CompiledTemplate>();

function compile(template: string): CompiledTemplate {
  const literals: string[] = [];
  const tokens: string[] = [];
  const placeholder = /\{([^{}]*)\}/g;
  let from = 0;
  for (let match = placeholder.exec(template); match !== null; match = placeholder.exec(template)) {
    literals.push(template.slice(from, match.index));
    tokens.push(match[1]);
    from = match.index + match[0].length;
  }
  literals.push(template.slice(from));
  const split = { literals, tokens };
  compiled.set(template, split);
  return split;
}

/**
 * The subject an event is published on: the descriptor's template with each
 * `{token}` filled from the event. Throws, naming the event type, the token and
 * the value, when a value is missing, empty, or holds ".", "*", ">", white
 * space or a control character, so a bad value never reaches the wrong
 * subscribers nor the outbox.
 */
export function subjectFor<T>(descriptor: EventDescriptor<T>, event: T): string {
  const template = descriptor.subjectTemplate;
  const { literals, tokens } = compiled.get(template) ?? compile(template);
  if (tokens.length === 0) return template;
  const values = descriptor.subjectTokens(event);
  let subject = literals[0];
  for (let i = 0; i < tokens.length; i++) subject += tokenValue(descriptor, values, tokens[i]) + literals[i + 1];
  return subject;
}

function tokenValue<T>(descriptor: EventDescriptor<T>, values: Record<string, unknown>, token: string): string {
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
}

function describe(char: string): string {
  if (/\s/.test(char)) return "white space";
  return /[\u0000-\u001f\u007f]/.test(char) ? `the control character U+${char.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}` : `"${char}"`;
}
