/**
 * A statement that fails inside a transaction whose work catches the error
 * and goes on: PostgreSQL aborts the transaction (its COMMIT would be a
 * ROLLBACK that reports success), so neither store lets such work commit,
 * and a savepoint with such a statement rolls back alone.
 */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { usePostgresServer } from "../../test/support/postgres.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { CaughtStatementError, openDatabase, type Database } from "./index.js";

const dir = tempDirForSuite("concord-caught-");
const migrations = [{ id: "0001_notes", sql: "CREATE TABLE notes (text TEXT NOT NULL)" }];
const notes = async (db: Database) => (await db.query<{ text: string }>("SELECT text FROM notes ORDER BY text")).map((r) => r.text);
const fails = (db: Database | Parameters<Parameters<Database["transaction"]>[0]>[0]) => db.run("INSERT INTO no_such_table (x) VALUES (1)").catch(() => undefined);

async function refusesCaughtFailures(db: Database): Promise<void> {
  const refused = await db
    .transaction(async (tx) => {
      await tx.run("INSERT INTO notes (text) VALUES ($1)", ["lost"]);
      await fails(tx);
    })
    .catch((err: unknown) => err);
  expect(refused).toBeInstanceOf(CaughtStatementError);
  expect((refused as Error).message).toMatch(/a statement failed and its error was caught without being rethrown, so the transaction cannot commit: .*no_such_table/);
  expect(await notes(db)).toEqual([]);

  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO notes (text) VALUES ($1)", ["kept"]);
    const inner = await tx
      .savepoint(async (sp) => {
        await sp.run("INSERT INTO notes (text) VALUES ($1)", ["rolled back"]);
        await fails(sp);
      })
      .catch((err: unknown) => err);
    expect(inner).toBeInstanceOf(CaughtStatementError);
    // The savepoint rolled back alone: the transaction goes on and commits.
    await tx.run("INSERT INTO notes (text) VALUES ($1)", ["after"]);
  });
  expect(await notes(db)).toEqual(["after", "kept"]);
}

describe("a statement whose error the transaction's work caught", () => {
  it("keeps the transaction from committing on SQLite, and rolls back only the savepoint it was in", async () => {
    const db = await openDatabase({ path: join(dir, "caught.db"), migrations });
    try {
      await refusesCaughtFailures(db);
    } finally {
      await db.close();
    }
  });

  describe("on PostgreSQL", () => {
    const postgres = usePostgresServer();

    it("keeps the transaction from committing (PostgreSQL would roll it back and report success), and rolls back only the savepoint it was in", async () => {
      const db = await openDatabase({ path: await postgres().createDatabase("caught"), migrations });
      try {
        await refusesCaughtFailures(db);
      } finally {
        await db.close();
      }
    });
  });
});
