import { Code as status } from "../../../platform/errors/index.js";
import { describe, expect, it } from "vitest";
import { adjustedStock, editProduct, type ProductRecord } from "./product.js";

const product: ProductRecord = { id: "p-1", name: "Teapot", description: "Blue", priceMinor: 1999, currency: "EUR", stock: 3, reserved: 0, version: 4, stockVersion: 7, createdAt: 0, updatedAt: 0 };

describe("editProduct", () => {
  it("changes only the masked fields and bumps the version", () => {
    const next = editProduct(product, 4, ["price"], { name: "ignored", price: { amountMinor: 2500, currency: "EUR" } }, 10);
    expect(next).toEqual({ ...product, priceMinor: 2500, version: 5, updatedAt: 10 });
  });

  it("refuses a stale version with ABORTED", () => {
    expect(() => editProduct(product, 3, ["name"], { name: "x" }, 10)).toThrow(expect.objectContaining({ code: status.ABORTED }));
  });
});

describe("adjustedStock", () => {
  it("adds positive and negative deltas down to exactly zero", () => {
    expect(adjustedStock(product, 2)).toBe(5);
    expect(adjustedStock(product, -3)).toBe(0);
  });

  it("never goes below zero", () => {
    expect(() => adjustedStock(product, -4)).toThrow(expect.objectContaining({ code: status.FAILED_PRECONDITION }));
  });

  it("never takes stock plus held units above the limit, naming delta", () => {
    const held = { ...product, stock: 999_999_000, reserved: 900 };
    expect(adjustedStock(held, 100)).toBe(999_999_100);
    expect(() => adjustedStock(held, 101)).toThrow(expect.objectContaining({ code: status.OUT_OF_RANGE, violations: [expect.objectContaining({ field: "delta" })] }));
  });
});
