import { describe, expect, it } from "vitest";
import { usePostgresServer } from "../../test/support/postgres.js";
import { limitLockWaits, openDatabase } from "./index.js";

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
