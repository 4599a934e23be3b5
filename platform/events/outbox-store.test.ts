/**
 * The relay's removal of published rows, on SQLite and on Postgres: exactly
 * the seqs it is given, however they fall into runs, and on Postgres in one
 * statement (a transaction of its own, one round trip) unless there are
 * many runs.
 */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { recordStatements } from "../../test/support/pg-statements.js";
import { usePostgresServer } from "../../test/support/postgres.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { openDatabase, type Database } from "../sql/index.js";
import { outboxMigrations } from "./index.js";
import { createOutboxStore } from "./outbox-store.js";

const dir = tempDirForSuite("concord-outbox-store-");

async function fill(db: Database, count: number): Promise<number[]> {
  await db.transaction(async (tx) => {
    for (let i = 0; i < count; i++) {
      await tx.run("INSERT INTO event_outbox (event_id, subject, type, payload, headers, created_at) VALUES ($1, 's', 't', $2, $2, 0)", [`e-${i}`, new Uint8Array([i % 256])]);
    }
  });
  return (await db.query<{ seq: number }>("SELECT seq FROM event_outbox ORDER BY seq")).map((r) => Number(r.seq));
}
const left = async (db: Database) => (await db.query<{ seq: number }>("SELECT seq FROM event_outbox ORDER BY seq")).map((r) => Number(r.seq));

async function removesExactly(db: Database): Promise<void> {
  const seqs = await fill(db, 300);
  const store = createOutboxStore(db);
  // Runs of 1, 3 and 2 rows out of order, then every other row of the rest: 100 runs, more than one statement names.
  const first = [seqs[4], seqs[0], seqs[1], seqs[2], seqs[7], seqs[6]];
  await store.remove(first);
  await store.remove([]);
  const scattered = seqs.slice(100).filter((_, i) => i % 2 === 0);
  await store.remove(scattered);
  const gone = new Set([...first, ...scattered]);
  expect(await left(db)).toEqual(seqs.filter((s) => !gone.has(s)));
}

describe("the outbox store's remove", () => {
  it("deletes exactly the given seqs on SQLite", async () => {
    const db = await openDatabase({ path: join(dir, "remove.db"), migrations: outboxMigrations });
    try {
      await removesExactly(db);
    } finally {
      await db.close();
    }
  });

  describe("on Postgres", () => {
    const postgres = usePostgresServer();

    it("deletes exactly the given seqs, with one statement and no transaction around it for up to 64 runs", async () => {
      const db = await openDatabase({ path: await postgres().createDatabase("outbox_remove"), migrations: outboxMigrations });
      try {
        await removesExactly(db);
        const seqs = await left(db);
        const sent = recordStatements(db);
        await createOutboxStore(db).remove([seqs[0], seqs[1], seqs[3], seqs[5], seqs[6]]);
        expect(sent.filter((sql) => sql !== "SELECT 1")).toEqual([expect.stringMatching(/^DELETE FROM event_outbox WHERE seq BETWEEN \$1 AND \$2( OR seq BETWEEN \$\d+ AND \$\d+)+$/)]);
        expect(await left(db)).toEqual(seqs.filter((_, i) => ![0, 1, 3, 5, 6].includes(i)));
      } finally {
        await db.close();
      }
    });
  });
});
