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
/** A call with a request of `digest`; `subject` is its token's, none on a server that checks no tokens. */
const call = (digest: number, subject?: string) => ({ method: "/shop.test.v1.Things/MakeThing", requestDigest: Uint8Array.of(digest), principal: { subject } });

describe("request ids", () => {
  let db: Database;
  afterEach(() => db?.close());

  it("runs the work once per id, returns the first response to a repeat, and refuses the id for another request", async () => {
    db = await openDatabase({ path: join(dir, "once.db"), migrations: requestIdMigrations });
    const ids = createRequestIds();
    let runs = 0;
    const make = (digest: number, id: string | undefined, result: number) => db.transaction((tx) => ids.once(tx, call(digest), id, codec, async () => (runs++, result)));
    expect(await make(1, "a", 7)).toBe(7);
    expect(await make(1, "a", 8)).toBe(7);
    expect(runs).toBe(1);
    await expect(make(2, "a", 9)).rejects.toMatchObject({ code: 6, violations: [expect.objectContaining({ field: "request_id" })] });
    // No id: no memory.
    expect(await make(1, undefined, 3)).toBe(3);
    expect(await make(1, "", 4)).toBe(4);
    // A rolled-back transaction keeps no id.
    await expect(db.transaction((tx) => ids.once(tx, call(1), "b", codec, async () => { throw new Error("the change failed"); }))).rejects.toThrow("the change failed");
    expect(await make(1, "b", 5)).toBe(5);
  });

  it("takes an id in any letter case as the same id, keeping it in lower case", async () => {
    db = await openDatabase({ path: join(dir, "case.db"), migrations: requestIdMigrations });
    const ids = createRequestIds();
    let runs = 0;
    const make = (digest: number, id: string, result: number) => db.transaction((tx) => ids.once(tx, call(digest), id, codec, async () => (runs++, result)));
    const id = "01890a5d-ac96-774b-bcce-b302099a8057";
    expect(await make(1, id, 7)).toBe(7);
    expect(await make(1, id.toUpperCase(), 8)).toBe(7);
    expect(await make(1, "01890A5D-ac96-774B-bcce-B302099A8057", 9)).toBe(7);
    expect(runs).toBe(1);
    await expect(make(2, id.toUpperCase(), 9)).rejects.toMatchObject({ code: 6, message: expect.stringContaining(id.toUpperCase()) });
    // An id first sent in upper case is kept in lower case, as ids stored earlier (sent so by every client library) are.
    expect(await make(1, "01890A5D-AC96-774B-BCCE-B302099A8058", 5)).toBe(5);
    expect(await make(1, "01890a5d-ac96-774b-bcce-b302099a8058", 6)).toBe(5);
    expect((await db.query<{ request_id: string }>("SELECT request_id FROM request_ids ORDER BY request_id")).map((r) => r.request_id)).toEqual([id, "01890a5d-ac96-774b-bcce-b302099a8058"]);
  });

  it("finds, after the upgrade, an id stored in upper case before ids were compared in lower case, and never runs its work again", async () => {
    const path = join(dir, "upgrade.db");
    const before = await openDatabase({ path, migrations: requestIdMigrations.slice(0, 1) });
    const stored = (id: string) => before.run("INSERT INTO request_ids (method, request_id, digest, response, created_at) VALUES ('m', $1, $2, $3, $4)", [id, Buffer.from([1]), Buffer.from(codec.encode(7).finish()), Date.now()]);
    await stored("01890A5D-AC96-774B-BCCE-B302099A8057");
    // The same id twice, in both cases (two calls before the upgrade): the lower-case row stays.
    await stored("01890A5D-AC96-774B-BCCE-B302099A8058");
    await stored("01890a5d-ac96-774b-bcce-b302099a8058");
    await before.close();
    db = await openDatabase({ path, migrations: requestIdMigrations });
    const ids = createRequestIds();
    let runs = 0;
    const make = (id: string) => db.transaction((tx) => ids.once(tx, { method: "m", requestDigest: new Uint8Array([1]), principal: { subject: undefined } }, id, codec, async () => (runs++, 9)));
    expect(await make("01890A5D-AC96-774B-BCCE-B302099A8057")).toBe(7);
    expect(await make("01890a5d-ac96-774b-bcce-b302099a8057")).toBe(7);
    expect(await make("01890a5d-ac96-774b-bcce-b302099a8058")).toBe(7);
    expect(runs).toBe(0);
  });

  it("keeps each caller's ids apart: two callers with one id both run, each retry gets its caller's response, and only its caller's other request is refused", async () => {
    db = await openDatabase({ path: join(dir, "callers.db"), migrations: requestIdMigrations });
    const ids = createRequestIds();
    const runs: string[] = [];
    const make = (subject: string | undefined, digest: number, id: string, result: number) =>
      db.transaction((tx) => ids.once(tx, call(digest, subject), id, codec, async () => (runs.push(`${subject}:${result}`), result)));
    const id = "01890a5d-ac96-774b-bcce-b302099a8057";
    expect(await make("alice", 1, id, 7)).toBe(7);
    // Another caller's request under the same id, and the very same request: each is that caller's own.
    expect(await make("bob", 2, id, 8)).toBe(8);
    expect(await make("ops", 1, id, 9)).toBe(9);
    expect(await make("alice", 1, id.toUpperCase(), 10)).toBe(7);
    expect(await make("bob", 2, id, 11)).toBe(8);
    expect(await make("ops", 1, id, 12)).toBe(9);
    expect(runs).toEqual(["alice:7", "bob:8", "ops:9"]);
    await expect(make("alice", 2, id, 13)).rejects.toMatchObject({ code: 6, violations: [expect.objectContaining({ field: "request_id" })] });
    await expect(make("bob", 1, id, 14)).rejects.toMatchObject({ code: 6 });
    // A server that checks no tokens keeps its ids as a caller of its own (''), apart from those with a subject.
    expect(await make(undefined, 3, id, 15)).toBe(15);
    expect(await make(undefined, 3, id, 16)).toBe(15);
    await expect(make(undefined, 1, id, 17)).rejects.toMatchObject({ code: 6 });
    expect(runs).toEqual(["alice:7", "bob:8", "ops:9", "undefined:15"]);
    expect(await db.query("SELECT caller FROM request_ids ORDER BY caller")).toEqual([{ caller: "" }, { caller: "alice" }, { caller: "bob" }, { caller: "ops" }]);
  });

  it("finds a call's row, and a row of the same id that names no caller, with one search of the primary key", async () => {
    db = await openDatabase({ path: join(dir, "plan.db"), migrations: requestIdMigrations });
    const plan = await db.query<{ detail: string }>("EXPLAIN QUERY PLAN SELECT caller, digest, response FROM request_ids WHERE method = $1 AND request_id = $2 AND caller IN ($3, '')", ["m", "r", "alice"]);
    expect(plan.map((p) => p.detail)).toEqual(["SEARCH request_ids USING PRIMARY KEY (method=? AND request_id=? AND caller=?)"]);
  });

  it("after ids became their callers', finds a call stored before by its retry with a token, runs nothing twice, and lets another caller's request with that id run", async () => {
    const path = join(dir, "by-caller.db");
    const before = await openDatabase({ path, migrations: requestIdMigrations.slice(0, 2) });
    const id = "01890a5d-ac96-774b-bcce-b302099a8057";
    await before.run("INSERT INTO request_ids (method, request_id, digest, response, created_at) VALUES ($1, $2, $3, $4, $5)", [
      call(1).method,
      id,
      Buffer.from([1]),
      Buffer.from(codec.encode(7).finish()),
      Date.now(),
    ]);
    await before.close();
    db = await openDatabase({ path, migrations: requestIdMigrations });
    expect(await db.query("SELECT caller, request_id FROM request_ids")).toEqual([{ caller: "", request_id: id }]);
    const ids = createRequestIds();
    const runs: string[] = [];
    const make = (subject: string | undefined, digest: number, result: number) =>
      db.transaction((tx) => ids.once(tx, call(digest, subject), id, codec, async () => (runs.push(`${subject}:${result}`), result)));
    // The retry, now known by its token's subject, and on a server still without token checks.
    expect(await make("alice", 1, 8)).toBe(7);
    expect(await make("alice", 1, 9)).toBe(7);
    expect(await make(undefined, 1, 10)).toBe(7);
    expect(runs).toEqual([]);
    // A different request with that id: the old row may be another caller's, so it neither refuses nor answers it.
    expect(await make("bob", 2, 11)).toBe(11);
    expect(await make("bob", 2, 12)).toBe(11);
    expect(runs).toEqual(["bob:11"]);
    // Without token checks the old rows are the server's own, as before.
    await expect(make(undefined, 2, 13)).rejects.toMatchObject({ code: 6 });
    // The table, made again, keeps the index by age the retention reads.
    expect(await db.query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'request_ids' AND sql IS NOT NULL")).toEqual([{ name: "request_ids_by_age" }]);
  });

  it("forgets ids older than their retention", async () => {
    db = await openDatabase({ path: join(dir, "retention.db"), migrations: requestIdMigrations });
    const insert = (id: string, at: number) => db.run("INSERT INTO request_ids (method, request_id, digest, response, created_at) VALUES ('m', $1, x'00', x'00', $2)", [id, at]);
    const now = Date.now();
    for (let i = 0; i < 5; i++) await insert(`old-${i}`, now - 25 * 3_600_000);
    await insert("fresh", now - 3_600_000);
    const retention = requestIdRetention({ db, logger });
    try {
      expect(await retention.prune()).toBe(5);
    } finally {
      await retention.stop();
    }
    expect(await db.query("SELECT request_id FROM request_ids")).toEqual([{ request_id: "fresh" }]);
  });
});
