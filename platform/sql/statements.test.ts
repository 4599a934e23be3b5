import { describe, expect, it } from "vitest";
import { placeholderRows, sqlByRowCount } from "./statements.js";

describe("statements by row count", () => {
  it("numbers the placeholders of a multi-row VALUES row by row", () => {
    expect(placeholderRows(1, 3)).toBe("($1, $2, $3)");
    expect(placeholderRows(2, 2)).toBe("($1, $2), ($3, $4)");
  });

  it("builds each count's text once and hands out the same string after", () => {
    let built = 0;
    const sql = sqlByRowCount((n) => {
      built++;
      return `INSERT INTO t (a) VALUES ${placeholderRows(n, 1)}`;
    });
    expect(sql(2)).toBe("INSERT INTO t (a) VALUES ($1), ($2)");
    expect(sql(2)).toBe(sql(2));
    expect(sql(1)).toBe("INSERT INTO t (a) VALUES ($1)");
    expect(built).toBe(2);
  });
});
