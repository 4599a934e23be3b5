import { describe, expect, it } from "vitest";
import { isUuid, uuidv7 } from "./uuid-v7.js";

describe("uuidv7", () => {
  it("makes version-7 UUIDs that sort in creation order, also within one millisecond", () => {
    const ids = Array.from({ length: 5000 }, () => uuidv7(1_700_000_000_000));
    expect(ids.every((id) => isUuid(id) && id[14] === "7" && "89ab".includes(id[19]))).toBe(true);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    expect(uuidv7(Date.now() + 10_000) > ids[ids.length - 1]).toBe(true);
  });
});
