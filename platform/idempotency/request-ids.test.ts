import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { createLogger } from "../log/index.js";
import { openDatabase, type Database } from "../sql/index.js";
import { createRequestIds, requestIdMigrations, requestIdRetention } from "./request-ids.js";

const dir = tempDirForSuite("concord-request-ids-");
const logger = createLogger({ service: "request-ids-test", level: "silent" });
const codec = {
  encode: (n: number) => ({ finish: () => Uint8Array.of(n) }),
  decode: (bytes: Uint8Array) => bytes[0],
};
const call = (digest: number) => ({ method: "/shop.test.v1.Things/MakeThing", requestDigest: Uint8Array.of(digest) });

describe("request ids", () => {
  let db: Database;
  afterEach(() => db?.close());

  it("runs the work once per id, returns the first response to a repeat, and refuses the id for another request", () => {
    db = openDatabase({ path: join(dir, "once.db"), migrations: requestIdMigrations });
    const ids = createRequestIds(db);
    let runs = 0;
    const make = (digest: number, id: string | undefined, result: number) => db.transaction(() => ids.once(call(digest), id, codec, () => (runs++, result)));
    expect(make(1, "a", 7)).toBe(7);
    expect(make(1, "a", 8)).toBe(7);
    expect(runs).toBe(1);
    expect(() => make(2, "a", 9)).toThrow(expect.objectContaining({ code: 6, violations: [expect.objectContaining({ field: "request_id" })] }));
    // No id: no memory.
    expect(make(1, undefined, 3)).toBe(3);
    expect(make(1, "", 4)).toBe(4);
    // A rolled-back transaction keeps no id.
    expect(() => db.transaction(() => ids.once(call(1), "b", codec, () => { throw new Error("the change failed"); }))).toThrow("the change failed");
    expect(make(1, "b", 5)).toBe(5);
    expect(() => ids.once(call(1), "c", codec, () => 1)).toThrow(/inside db\.transaction/);
  });

  it("forgets ids older than their retention", async () => {
    db = openDatabase({ path: join(dir, "retention.db"), migrations: requestIdMigrations });
    const insert = db.sqlite.prepare("INSERT INTO request_ids (method, request_id, digest, response, created_at) VALUES ('m', ?, x'00', x'00', ?)");
    const now = Date.now();
    for (let i = 0; i < 5; i++) insert.run(`old-${i}`, now - 25 * 3_600_000);
    insert.run("fresh", now - 3_600_000);
    const retention = requestIdRetention({ db, logger });
    try {
      expect(await retention.prune()).toBe(5);
    } finally {
      await retention.stop();
    }
    expect(db.sqlite.prepare("SELECT request_id FROM request_ids").pluck().all()).toEqual(["fresh"]);
  });
});
