/**
 * NATS subjects as the contracts use them: event subject templates such as
 * `shop.orders.v1.order.{order_id}.placed`, the filter subjects derived from
 * them, and the matching rules of `*` and `>` that decide whether a subject
 * falls under a stream or overlaps another one.
 */

export { subjectIsWithin, subjectsOverlap } from "../../platform/events/subject-match.js";

/** One dot-separated token of a subject template: fixed text or a field name. */
export type TemplateToken = { readonly literal: string } | { readonly field: string };

/** A parsed subject template, or the reason it is malformed. */
export type ParsedTemplate = { readonly ok: true; readonly tokens: readonly TemplateToken[] } | { readonly ok: false; readonly reason: string };

const fieldToken = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;
const forbiddenInLiteral = /[\s*>{}]/;

/**
 * Splits a template into tokens. Every placeholder must be a whole token
 * (`a.{x}.b`, never `a.x{y}.b`), literal tokens hold no wildcard, brace or
 * white space, and no token is empty.
 */
export function parseSubjectTemplate(template: string): ParsedTemplate {
  if (template === "") return { ok: false, reason: "the subject template is empty" };
  const tokens: TemplateToken[] = [];
  for (const [index, token] of template.split(".").entries()) {
    if (token === "") return { ok: false, reason: `token ${index + 1} of "${template}" is empty` };
    const field = fieldToken.exec(token);
    if (field) tokens.push({ field: field[1] });
    else if (forbiddenInLiteral.test(token)) {
      return {
        ok: false,
        reason: `token "${token}" of "${template}" is neither literal text nor a whole {field} placeholder (no wildcards, braces or white space inside a token)`,
      };
    } else tokens.push({ literal: token });
  }
  return { ok: true, tokens };
}

/** The filter subject of a template: every placeholder becomes `*`. */
export function filterSubjectOf(tokens: readonly TemplateToken[]): string {
  return tokens.map((t) => ("field" in t ? "*" : t.literal)).join(".");
}

/**
 * Why `subject` is not a valid NATS subject or subject filter, or undefined
 * when it is: tokens are non-empty, hold no white space, `*` and `>` stand
 * alone, and `>` comes last.
 */
export function subjectProblem(subject: string): string | undefined {
  if (subject === "") return "the subject is empty";
  const tokens = subject.split(".");
  for (const [index, token] of tokens.entries()) {
    if (token === "") return `token ${index + 1} of "${subject}" is empty`;
    if (/\s/.test(token)) return `token "${token}" of "${subject}" holds white space`;
    if (token !== "*" && token !== ">" && /[*>]/.test(token)) return `token "${token}" of "${subject}" mixes a wildcard with text`;
    if (token === ">" && index !== tokens.length - 1) return `">" is not the last token of "${subject}"`;
  }
  return undefined;
}
