import { describe, expect, it } from "vitest";
import { filterSubjectOf, parseSubjectTemplate, subjectIsWithin, subjectProblem, subjectsOverlap } from "./subjects.js";

describe("parseSubjectTemplate", () => {
  it("splits a template into literal and field tokens and derives the filter subject", () => {
    const parsed = parseSubjectTemplate("shop.orders.v1.order.{order_id}.placed");
    expect(parsed).toEqual({
      ok: true,
      tokens: [{ literal: "shop" }, { literal: "orders" }, { literal: "v1" }, { literal: "order" }, { field: "order_id" }, { literal: "placed" }],
    });
    if (parsed.ok) expect(filterSubjectOf(parsed.tokens)).toBe("shop.orders.v1.order.*.placed");
  });

  it.each(["", "a..b", "a.{x}y.b", "a.*.b", "a.>", "a.{}.b", "a.{x-y}.b", "a. b"])("refuses %j", (template) => {
    expect(parseSubjectTemplate(template).ok).toBe(false);
  });
});

describe("subjectProblem", () => {
  it("accepts subjects and filters", () => {
    for (const s of ["a", "a.b", "a.*", "a.>", "*.b.>"]) expect(subjectProblem(s)).toBeUndefined();
  });

  it("names what is wrong with an invalid subject", () => {
    expect(subjectProblem("a.>.b")).toMatch(/">" is not the last token/);
    expect(subjectProblem("a.b*")).toMatch(/mixes a wildcard/);
    expect(subjectProblem("a..b")).toMatch(/is empty/);
  });
});

describe("subjectIsWithin", () => {
  it.each([
    ["a.*.c", "a.>", true],
    ["a.*.c", "a.*.c", true],
    ["a.*.c", "a.*.*", true],
    ["a.b", "a.b.>", false],
    ["a.*.c", "a.b.c", false],
    ["a.b.c", "a.*", false],
    ["a.>", "a.*", false],
    ["b.x", "a.>", false],
  ])("%s within %s is %s", (filter, pattern, expected) => {
    expect(subjectIsWithin(filter, pattern)).toBe(expected);
  });
});

describe("subjectsOverlap", () => {
  it.each([
    ["a.*.c", "a.b.*", true],
    ["a.*.c", "a.*.d", false],
    ["a.*", "a.*.c", false],
    ["a.>", "a.b.c", true],
    ["a.>", "a", false],
    ["x.>", "*.y", true],
  ])("%s and %s overlap: %s", (a, b, expected) => {
    expect(subjectsOverlap(a, b)).toBe(expected);
    expect(subjectsOverlap(b, a)).toBe(expected);
  });
});
