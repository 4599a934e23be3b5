import { describe, expect, it } from "vitest";
import { usePostgresServer } from "../../test/support/postgres.js";
import { limitLockWaits, openDatabase } from "./index.js";
import { Code, StatusError } from "../errors/index.js";

describe("limitLockWaits on PostgreSQL", () => {
  const postgres = usePostgresServer();

  it("limits a transaction's lock waits, then puts back the limit the database was given, not none", async () => {
    const url = await postgres().createDatabase("lock_waits");
    const admin = await openDatabase({ path: url, migrations: [] });
    await admin.run("ALTER DATABASE lock_waits SET lock_timeout = '3s'");
    await admin.close();
    const db = await openDatabase({ path: url, migrations: [] });
    try {
      const shown = async (tx: Parameters<Parameters<typeof db.transaction>[0]>[0]) => (await tx.query<{ lock_timeout: string }>("SHOW lock_timeout"))[0].lock_timeout;
      await db.transaction(async (tx) => {
        expect(await shown(tx)).toBe("3s");
        await limitLockWaits(tx, 50);
        expect(await shown(tx)).toBe("50ms");
        await limitLockWaits(tx, undefined);
        expect(await shown(tx)).toBe("3s");
      });
    } finally {
      await db.close();
    }
  });
});

describe("a PostgreSQL transaction that keeps losing to concurrent ones", () => {
  const postgres = usePostgresServer();

  it("is tried again from the start, then fails with ABORTED (a caller may try again), not an error of the server's", async () => {
    const db = await openDatabase({ path: await postgres().createDatabase("conflicts"), migrations: [] });
    let attempts = 0;
    try {
      const failed = await db
        .transaction(async (tx) => {
          attempts++;
          await tx.query("SELECT 1");
          // What pg reports for a serialization failure.
          throw Object.assign(new Error("could not serialize access due to concurrent update"), { code: "40001" });
        })
        .catch((err: unknown) => err);
      expect(failed).toBeInstanceOf(StatusError);
      expect((failed as StatusError).code).toBe(Code.ABORTED);
      expect((failed as StatusError).message).toMatch(/lost to concurrent ones 4 times in a row; nothing was changed, try again/);
      expect(attempts).toBe(4);
    } finally {
      await db.close();
    }
  });
});
