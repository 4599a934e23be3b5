import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { openDatabase } from "./database.js";

const dir = tempDirForSuite("concord-db-");
const migrations = [{ id: "0001_notes", sql: "CREATE TABLE notes (text TEXT NOT NULL)" }];

describe("openDatabase", () => {
  it("runs migrations once, across restarts", () => {
    const path = join(dir, "migrate.db");
    openDatabase({ path, migrations }).close();
    const db = openDatabase({ path, migrations });
    expect(db.sqlite.prepare("SELECT count(*) FROM schema_migrations").pluck().get()).toBe(1);
    db.close();
  });

  it("rolls back a nested transaction that throws without touching the outer one, and runs after-commit hooks once committed", () => {
    const db = openDatabase({ path: join(dir, "nested.db"), migrations });
    const insert = db.sqlite.prepare("INSERT INTO notes (text) VALUES (?)");
    const committed: string[] = [];
    db.transaction(() => {
      insert.run("outer");
      db.afterCommit(() => committed.push("outer"));
      expect(() =>
        db.transaction(() => {
          insert.run("inner");
          throw new Error("inner fails");
        }),
      ).toThrow("inner fails");
      db.transaction(() => insert.run("second inner"));
      expect(committed).toEqual([]);
    });
    expect(committed).toEqual(["outer"]);
    expect(db.sqlite.prepare("SELECT text FROM notes ORDER BY rowid").pluck().all()).toEqual(["outer", "second inner"]);
    expect(() => db.transaction(() => {
      insert.run("lost");
      db.afterCommit(() => committed.push("lost"));
      throw new Error("outer fails");
    })).toThrow("outer fails");
    expect(committed).toEqual(["outer"]);
    expect(db.sqlite.prepare("SELECT count(*) FROM notes").pluck().get()).toBe(2);
    db.close();
  });
});
