import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordStatements } from "../../test/support/pg-statements.js";
import { usePostgresServer } from "../../test/support/postgres.js";
import type pg from "pg";
import { aheadMark, CaughtStatementError, isLockTimeout, isSentAheadFailure, limitLockWaits, openDatabase, sendAhead, type Database, type SqlValue } from "./index.js";

/**
 * Statements whose results nobody reads (BEGIN, SET LOCAL, SAVEPOINT, an
 * advisory lock) go with the next statement, in its round trip.
 */
describe("a PostgreSQL transaction's round trips", () => {
  const postgres = usePostgresServer();
  let db: Database;
  beforeAll(async () => {
    db = await openDatabase({ path: await postgres().createDatabase("round_trips"), migrations: [] });
    await db.run("CREATE TABLE notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL)");
    await db.run("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BYTEA NOT NULL, tags TEXT[])");
  });
  afterAll(async () => {
    await db?.close();
  });

  it("sends BEGIN with the first statement, and nothing at all for a transaction that has no statement", async () => {
    const sent = recordStatements(db);
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [1, "one"]);
      await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [2, "two"]);
    });
    expect(sent.roundTrips).toEqual([["BEGIN", "INSERT INTO notes (id, note) VALUES ($1, $2)"], ["INSERT INTO notes (id, note) VALUES ($1, $2)"], ["COMMIT"]]);
    sent.roundTrips.length = 0;
    expect(await db.transaction(async () => "nothing to do")).toBe("nothing to do");
    await expect(
      db.transaction(async () => {
        throw new Error("refused before any statement");
      }),
    ).rejects.toThrow("refused before any statement");
    expect(sent.roundTrips).toEqual([]);
    expect(await db.query("SELECT id, note FROM notes ORDER BY id")).toEqual([
      { id: 1, note: "one" },
      { id: 2, note: "two" },
    ]);
  });

  it("returns the result of the statement itself, and rolls back when it fails, the connection fit to use again", async () => {
    const rows = await db.transaction(async (tx) => {
      await tx.lock("notes");
      return await tx.query<{ n: number }>("SELECT count(*)::int AS n FROM notes");
    });
    expect(rows).toEqual([{ n: expect.any(Number) }]);
    const sent = recordStatements(db);
    await expect(
      db.transaction(async (tx) => {
        await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [10, "kept only if committed"]);
        await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [10, "the same id again"]);
      }),
    ).rejects.toMatchObject({ code: "23505" });
    expect(sent.roundTrips.at(-1)).toEqual(["ROLLBACK"]);
    expect(await db.query("SELECT id FROM notes WHERE id = 10")).toEqual([]);
    // Every pooled connection is still fit to use (none was left in a transaction).
    await Promise.all(Array.from({ length: 12 }, (_, i) => db.transaction((tx) => tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [100 + i, "after"]))));
    expect((await db.query<{ n: number }>("SELECT count(*)::int AS n FROM notes WHERE id >= 100"))[0].n).toBe(12);
  });

  it("takes a keyed lock with the next statement: that statement waits until the holder commits, and sees its writes", async () => {
    const sent = recordStatements(db);
    let letGo!: () => void;
    const holding = new Promise<void>((resolve) => (letGo = resolve));
    let locked!: () => void;
    const lockedNow = new Promise<void>((resolve) => (locked = resolve));
    const first = db.transaction(async (tx) => {
      await tx.lock("note 20");
      await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [20, "first"]);
      locked();
      await holding;
    });
    await lockedNow;
    let secondSaw: unknown;
    const second = db.transaction(async (tx) => {
      await tx.lock("note 20");
      secondSaw = await tx.query("SELECT note FROM notes WHERE id = 20");
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(secondSaw, "the second transaction's statement ran while the first held the lock").toBeUndefined();
    letGo();
    await Promise.all([first, second]);
    expect(secondSaw).toEqual([{ note: "first" }]);
    const lockTrips = sent.roundTrips.filter((trip) => trip.some((s) => s.includes("pg_advisory_xact_lock")));
    expect(lockTrips).toEqual([
      ["BEGIN", "SELECT pg_advisory_xact_lock($1, hashtext($2))", "INSERT INTO notes (id, note) VALUES ($1, $2)"],
      ["BEGIN", "SELECT pg_advisory_xact_lock($1, hashtext($2))", "SELECT note FROM notes WHERE id = 20"],
    ]);
  });

  it("fails the next statement with the error of one sent ahead of it (a lock not granted in time)", async () => {
    let letGo!: () => void;
    const holding = new Promise<void>((resolve) => (letGo = resolve));
    let locked!: () => void;
    const lockedNow = new Promise<void>((resolve) => (locked = resolve));
    const holder = db.transaction(async (tx) => {
      await tx.lock("note 30");
      await tx.query("SELECT 1");
      locked();
      await holding;
    });
    await lockedNow;
    try {
      let failure: unknown;
      await db
        .transaction(async (tx) => {
          await limitLockWaits(tx, 50);
          await tx.lock("note 30");
          await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [30, "never"]);
        })
        .catch((err: unknown) => (failure = err));
      expect(isLockTimeout(failure), String(failure)).toBe(true);
    } finally {
      letGo();
      await holder;
    }
    expect(await db.query("SELECT id FROM notes WHERE id = 30")).toEqual([]);
  });

  it("sends a write whose result is not read with the COMMIT, its values written as any statement's", async () => {
    const sent = recordStatements(db);
    const body = new Uint8Array([0, 1, 2, 254, 255]);
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [50, "with a blob"]);
      await sendAhead(tx, "INSERT INTO blobs (id, body, tags) VALUES ($1, $2, $3)", [50, body, ["a", "b,c"]]);
    });
    expect(sent.roundTrips).toEqual([["BEGIN", "INSERT INTO notes (id, note) VALUES ($1, $2)"], ["INSERT INTO blobs (id, body, tags) VALUES ($1, $2, $3)", "COMMIT"]]);
    // A transaction with only such a write sends it, in one round trip.
    sent.roundTrips.length = 0;
    await db.transaction((tx) => sendAhead(tx, "INSERT INTO blobs (id, body) VALUES ($1, $2)", [51, body]));
    expect(sent.roundTrips).toEqual([["BEGIN", "INSERT INTO blobs (id, body) VALUES ($1, $2)", "COMMIT"]]);
    expect(await db.query("SELECT id FROM blobs WHERE id = 51")).toEqual([{ id: 51 }]);
    const [row] = await db.query<{ body: Buffer; tags: string[] }>("SELECT body, tags FROM blobs WHERE id = 50");
    expect(new Uint8Array(row.body)).toEqual(body);
    expect(row.tags).toEqual(["a", "b,c"]);
  });

  it("fails the transaction, nothing of it kept, when a write sent with the COMMIT fails, and keeps the connection", async () => {
    const pool = (db as Database & { pool: pg.Pool }).pool;
    await db.transaction((tx) => tx.run("INSERT INTO blobs (id, body) VALUES ($1, $2)", [60, new Uint8Array([1])]));
    const connections = pool.totalCount;
    const sent = recordStatements(db);
    await expect(
      db.transaction(async (tx) => {
        await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [60, "not kept"]);
        await sendAhead(tx, "INSERT INTO blobs (id, body) VALUES ($1, $2)", [60, new Uint8Array([2])]);
      }),
    ).rejects.toMatchObject({ code: "23505" });
    expect(sent.roundTrips.slice(-2)).toEqual([["INSERT INTO blobs (id, body) VALUES ($1, $2)", "COMMIT"], ["ROLLBACK"]]);
    expect(await db.query("SELECT id FROM notes WHERE id = 60")).toEqual([]);
    expect(pool.totalCount, "the connection went back to the pool, not dropped").toBe(connections);
    await db.transaction((tx) => tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [61, "after"]));
    expect(await db.query("SELECT note FROM notes WHERE id = 61")).toEqual([{ note: "after" }]);
  });

  /** A transaction that holds `key` from now until `release` is called. */
  const holdLock = async (key: string) => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const lockedNow = new Promise<void>((resolve) => (locked = resolve));
    const done = db.transaction(async (tx) => {
      await tx.lock(key);
      await tx.query("SELECT 1");
      locked();
      await released;
    });
    await lockedNow;
    return { release: () => (release(), done) };
  };

  it("keeps a failure of what a savepoint's work sent ahead inside that savepoint, and the work's own error as its error", async () => {
    const holder = await holdLock("savepoint lock");
    try {
      const failures: unknown[] = [];
      await db.transaction(async (tx) => {
        await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [70, "before"]);
        await limitLockWaits(tx, 50);
        // The lock is the work's last statement: it goes with the RELEASE, and times out there.
        await tx.savepoint((inner) => inner.lock("savepoint lock")).catch((err: unknown) => failures.push(err));
        // The work fails on its own after asking for the lock: the lock is never sent.
        await tx
          .savepoint(async (inner) => {
            await inner.lock("savepoint lock");
            throw new Error("the handler's own failure");
          })
          .catch((err: unknown) => failures.push(err));
        await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [71, "after"]);
      });
      expect(isLockTimeout(failures[0]), String(failures[0])).toBe(true);
      expect((failures[1] as Error).message).toBe("the handler's own failure");
      expect(await db.query("SELECT id FROM notes WHERE id IN (70, 71) ORDER BY id")).toEqual([{ id: 70 }, { id: 71 }]);
    } finally {
      await holder.release();
    }
  });

  it("gives each statement of a round trip its own time limit: a message of three may take three times one's", async () => {
    // Each under the 1 s statement timeout, 2.4 s in all: past the 2 s one statement would be given before its connection is dropped.
    const rows = await db.transaction(
      async (tx) => {
        await sendAhead(tx, "SELECT pg_sleep(0.8)");
        await sendAhead(tx, "SELECT pg_sleep(0.8)");
        return await tx.query("SELECT pg_sleep(0.8), 'done' AS r");
      },
      { statementTimeoutMs: 1_000 },
    );
    expect(rows).toEqual([{ pg_sleep: "", r: "done" }]);
  });

  it("runs a statement of several commands after statements sent ahead, as on its own", async () => {
    await db.transaction((tx) => tx.run("INSERT INTO notes (id, note) VALUES (80, 'x'); INSERT INTO notes (id, note) VALUES (81, 'y')"));
    await db.transaction(async (tx) => {
      await tx.lock("several commands");
      await tx.run("INSERT INTO notes (id, note) VALUES (82, 'x'); INSERT INTO notes (id, note) VALUES (83, 'y')");
    });
    expect(await db.query("SELECT id FROM notes WHERE id BETWEEN 80 AND 89 ORDER BY id")).toEqual([{ id: 80 }, { id: 81 }, { id: 82 }, { id: 83 }]);
  });

  it("fails, and keeps the connection, when a value of a statement sent ahead cannot be written", async () => {
    const pool = (db as Database & { pool: pg.Pool }).pool;
    const connections = pool.totalCount;
    const unwritable = { toPostgres: () => { throw new Error("value cannot be written"); } } as unknown as SqlValue;
    await expect(
      db.transaction(
        async (tx) => {
          await sendAhead(tx, "SELECT $1::text", [unwritable]);
          await tx.query("SELECT $1::text AS v", ["ok"]);
        },
        { statementTimeoutMs: 2_000 },
      ),
    ).rejects.toThrow("value cannot be written");
    // Nothing was written: the connection is not left waiting for an answer that never comes, and is not dropped.
    expect(pool.totalCount).toBe(connections);
  });

  it("answers a committed transaction whose after-commit callback throws, runs its work once, and tells of the failure once", async () => {
    const failures: unknown[] = [];
    const own = await openDatabase({ path: await postgres().createDatabase("after_commit"), migrations: [], onAfterCommitFailure: (err) => failures.push(err) });
    try {
      await own.run("CREATE TABLE notes (id INTEGER PRIMARY KEY)");
      let runs = 0;
      const ran: string[] = [];
      // An error that reads as a lost write conflict (or as an unreachable server) must not make the committed work run
      // again, nor make its caller, answered UNAVAILABLE or ABORTED, send it again.
      for (const code of ["40001", "ECONNREFUSED", undefined]) {
        const result = await own.transaction(async (tx) => {
          runs++;
          await tx.run("INSERT INTO notes (id) VALUES ($1)", [runs]);
          tx.afterCommit(() => {
            throw Object.assign(new Error(`the callback failed (${code})`), { code });
          });
          tx.afterCommit(() => ran.push(`second ${code}`));
          return runs;
        });
        expect(result).toBe(runs);
      }
      expect(runs).toBe(3);
      expect(failures.map((err) => (err as Error).message)).toEqual(["the callback failed (40001)", "the callback failed (ECONNREFUSED)", "the callback failed (undefined)"]);
      expect(ran).toEqual(["second 40001", "second ECONNREFUSED", "second undefined"]);
      expect(await own.query("SELECT id FROM notes ORDER BY id")).toEqual([{ id: 1 }, { id: 2 }, { id: 3 }]);
    } finally {
      await own.close();
    }
  });

  it("refuses transaction control run through a transaction or the database: a COMMIT would leave the rest of the work outside any transaction, a BEGIN a pooled connection inside one", async () => {
    const own = await openDatabase({ path: await postgres().createDatabase("control"), migrations: [], poolSize: 1 });
    try {
      await own.run("CREATE TABLE notes (note TEXT NOT NULL)");
      await expect(
        own.transaction(async (tx) => {
          await tx.run("INSERT INTO notes (note) VALUES ('before')");
          await tx.run("COMMIT");
          await tx.run("INSERT INTO notes (note) VALUES ('after')");
        }),
      ).rejects.toThrow(/^COMMIT was refused, nothing run/);
      for (const control of ["BEGIN", "start  transaction", "ABORT", "prepare transaction 'x'"]) {
        await expect(own.run(control)).rejects.toThrow(/ was refused, nothing run/);
      }
      await expect(own.runAlone("ROLLBACK", { statementTimeoutMs: 0 })).rejects.toThrow(/^ROLLBACK was refused/);
      // The pool's one connection is in no transaction: a failed transaction on it keeps nothing.
      await expect(
        own.transaction(async (tx) => {
          await tx.run("INSERT INTO notes (note) VALUES ('failed')");
          throw new Error("failed");
        }),
      ).rejects.toThrow("failed");
      expect(await own.query("SELECT note FROM notes")).toEqual([]);
    } finally {
      await own.close();
    }
  });

  it("refuses a statement run through a transaction once its work is over (not awaited), instead of running it in the connection's next one", async () => {
    const own = await openDatabase({ path: await postgres().createDatabase("ended_work"), migrations: [], poolSize: 1 });
    try {
      await own.run("CREATE TABLE notes (note TEXT NOT NULL)");
      let stray!: Promise<unknown>;
      const first = own.transaction(async (tx) => {
        await tx.run("INSERT INTO notes (note) VALUES ('first')");
        stray = new Promise((resolve) => setImmediate(resolve))
          .then(() => tx.run("INSERT INTO notes (note) VALUES ('stray')"))
          .then((changed) => changed, (err: unknown) => err);
      });
      // The pool's one connection goes to this one next; it fails, and nothing it holds is to be kept.
      const next = own.transaction(async (tx) => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        await tx.run("INSERT INTO notes (note) VALUES ('next')");
        throw new Error("next failed");
      });
      await first;
      await expect(next).rejects.toThrow("next failed");
      expect(await stray).toMatchObject({ message: expect.stringMatching(/^the transaction's work had ended/) });
      expect(await own.query("SELECT note FROM notes")).toEqual([{ note: "first" }]);
    } finally {
      await own.close();
    }
  });

  it("sends a savepoint with its first statement, and rolls back to one whose work failed before any", async () => {
    const sent = recordStatements(db);
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [40, "outer"]);
      await expect(
        tx.savepoint(async () => {
          throw new Error("nothing written");
        }),
      ).rejects.toThrow("nothing written");
      await expect(
        tx.savepoint(async (inner) => {
          await inner.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [41, "undone"]);
          throw new Error("undo it");
        }),
      ).rejects.toThrow("undo it");
      await tx.savepoint((inner) => inner.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [42, "kept"]));
    });
    expect(await db.query("SELECT id FROM notes WHERE id BETWEEN 40 AND 49 ORDER BY id")).toEqual([{ id: 40 }, { id: 42 }]);
    expect(sent.roundTrips).toContainEqual(["SAVEPOINT sp_1", "INSERT INTO notes (id, note) VALUES ($1, $2)"]);
  });

  describe("a write sent ahead with a row count to check", () => {
    const bump = "UPDATE notes SET note = note || '+' WHERE id = $1";
    const expectOne = (what: string) => ({ rows: 1, error: (changed: number) => new Error(`${what}: ${changed} rows changed, not 1`) });
    const noteOf = async (id: number) => (await db.query<{ note: string }>("SELECT note FROM notes WHERE id = $1", [id]))[0]?.note;

    it("goes with the next statement, and fails it when the count is not the expected one, nothing of the transaction kept", async () => {
      await db.run("INSERT INTO notes (id, note) VALUES (200, 'a'), (201, 'b')");
      const sent = recordStatements(db);
      const read = await db.transaction(async (tx) => {
        await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [202, "c"]);
        await sendAhead(tx, bump, [200], expectOne("200"));
        return await tx.query<{ note: string }>("SELECT note FROM notes WHERE id = $1", [200]);
      });
      expect(read).toEqual([{ note: "a+" }]);
      expect(sent.roundTrips).toEqual([["BEGIN", "INSERT INTO notes (id, note) VALUES ($1, $2)"], [bump, "SELECT note FROM notes WHERE id = $1"], ["COMMIT"]]);
      let failure: unknown;
      await db
        .transaction(async (tx) => {
          await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [203, "not kept"]);
          await sendAhead(tx, bump, [299], expectOne("no row 299"));
          await tx.query("SELECT 1");
        })
        .catch((err: unknown) => (failure = err));
      expect(String(failure)).toContain("no row 299: 0 rows changed, not 1");
      expect(isSentAheadFailure(failure)).toBe(true);
      expect(await noteOf(203)).toBeUndefined();
    });

    it("is counted before the COMMIT goes: a count not the expected one commits nothing", async () => {
      await db.run("INSERT INTO notes (id, note) VALUES (210, 'a')");
      const sent = recordStatements(db);
      await db.transaction(async (tx) => {
        await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [211, "b"]);
        await sendAhead(tx, bump, [210], expectOne("210"));
      });
      expect(sent.roundTrips).toEqual([["BEGIN", "INSERT INTO notes (id, note) VALUES ($1, $2)"], [bump], ["COMMIT"]]);
      expect(await noteOf(210)).toBe("a+");
      await expect(
        db.transaction(async (tx) => {
          await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [212, "not kept"]);
          await sendAhead(tx, bump, [210], expectOne("210"));
          // Two rows: the check fails, and the COMMIT never goes.
          await sendAhead(tx, "UPDATE notes SET note = note || '!' WHERE id IN (210, 211)", [], expectOne("210 and 211"));
          await sendAhead(tx, "INSERT INTO notes (id, note) VALUES ($1, $2)", [213, "not kept either"]);
        }),
      ).rejects.toThrow("210 and 211: 2 rows changed, not 1");
      expect(await noteOf(212)).toBeUndefined();
      expect(await noteOf(213)).toBeUndefined();
      expect(await noteOf(210)).toBe("a+");
    });

    it("is its savepoint's: a count not the expected one undoes the savepoint's work alone", async () => {
      await db.run("INSERT INTO notes (id, note) VALUES (220, 'a')");
      await db.transaction(async (tx) => {
        await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [221, "kept"]);
        await expect(
          tx.savepoint(async (inner) => {
            await inner.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [222, "undone"]);
            await sendAhead(inner, bump, [220], expectOne("220"));
            await sendAhead(inner, bump, [229], expectOne("no row 229"));
          }),
        ).rejects.toThrow("no row 229: 0 rows changed, not 1");
        await tx.savepoint((inner) => sendAhead(inner, bump, [220], expectOne("220")));
      });
      expect(await noteOf(221)).toBe("kept");
      expect(await noteOf(222)).toBeUndefined();
      expect(await noteOf(220), "bumped once: by the second savepoint only").toBe("a+");
    });

    it("is the scope's that sent it, not a savepoint's opened after it: the transaction cannot commit", async () => {
      await db.run("INSERT INTO notes (id, note) VALUES (240, 'a')");
      await expect(
        db.transaction(async (tx) => {
          await tx.run("INSERT INTO notes (id, note) VALUES ($1, $2)", [241, "not kept"]);
          await sendAhead(tx, bump, [249], expectOne("no row 249"));
          // The caller gives up on the savepoint and goes on: the check's failure still keeps the COMMIT from going.
          await tx.savepoint((inner) => inner.run(bump, [240])).catch(() => undefined);
        }),
      ).rejects.toThrow("no row 249: 0 rows changed, not 1");
      expect(await noteOf(241)).toBeUndefined();
      expect(await noteOf(240)).toBe("a");
    });

    it("tells a failure of a statement sent ahead from one of the statement it went with", async () => {
      const failureOf = (work: Parameters<Database["transaction"]>[0]) => db.transaction(work).then(() => undefined, (err: unknown) => err);
      const ahead = await failureOf(async (tx) => {
        await sendAhead(tx, "INSERT INTO no_such_table VALUES (1)");
        await tx.query("SELECT 1");
      });
      expect(ahead).toMatchObject({ code: "42P01" });
      expect(isSentAheadFailure(ahead)).toBe(true);
      const own = await failureOf(async (tx) => {
        await sendAhead(tx, "INSERT INTO notes (id, note) VALUES ($1, $2)", [230, "fine"]);
        await tx.query("SELECT * FROM no_such_table");
      });
      expect(own).toMatchObject({ code: "42P01" });
      expect(isSentAheadFailure(own)).toBe(false);
      expect(await noteOf(230)).toBeUndefined();
    });

    it("tells whose statement sent ahead failed: deferred before a mark (earlier work's) or after it (the work that took the mark)", async () => {
      const marks: Array<number | undefined> = [];
      const failure = await db
        .transaction(async (tx) => {
          marks.push(aheadMark(tx));
          await sendAhead(tx, "INSERT INTO notes (id, note) VALUES ($1, $2)", [231, "fine"]);
          // A second unit of work begins; the failing write below is its own.
          marks.push(aheadMark(tx));
          await sendAhead(tx, "INSERT INTO no_such_table VALUES (1)");
          marks.push(aheadMark(tx));
          await tx.query("SELECT 1");
        })
        .then(() => undefined, (err: unknown) => err);
      expect(failure).toMatchObject({ code: "42P01" });
      expect(marks).toEqual([0, 1, 2]);
      expect(isSentAheadFailure(failure)).toBe(true);
      expect(isSentAheadFailure(failure, marks[0]), "deferred after this mark").toBe(false);
      expect(isSentAheadFailure(failure, marks[1]), "sent by the unit that took this mark").toBe(false);
      expect(isSentAheadFailure(failure, marks[2]), "deferred before this mark: earlier work's").toBe(true);
      expect(await noteOf(231)).toBeUndefined();
    });

    it("keeps the number of an earlier unit's statement that timed out when it surfaces as a later unit checks its own count: the later unit is not blamed", async () => {
      let mark: number | undefined;
      const failure = await db
        .transaction(
          async (tx) => {
            await tx.query("SELECT 1");
            await sendAhead(tx, "SELECT pg_sleep(2)"); // the earlier unit's last statement
            mark = aheadMark(tx);
            await sendAhead(tx, "INSERT INTO notes (id, note) VALUES ($1, $2)", [232, "b"], expectOne("no row 232"));
            // The savepoint first settles that count: the message carries the sleep, which the server cancels.
            await tx.savepoint((inner) => inner.query("SELECT 1"));
          },
          { statementTimeoutMs: 300 },
        )
        .then(() => undefined, (err: unknown) => err);
      expect(String(failure)).toMatch(/the database cancelled a statement/);
      expect(isSentAheadFailure(failure, mark)).toBe(true);
      expect(await noteOf(232)).toBeUndefined();
    });

    it("gives the failure of a statement deferred before a savepoint, not its ROLLBACK TO's, when the server never opened it", async () => {
      let mark: number | undefined;
      let seen: unknown;
      const failure = await db
        .transaction(async (tx) => {
          await tx.query("SELECT 1");
          await sendAhead(tx, "INSERT INTO no_such_table VALUES (1)"); // the earlier unit's
          mark = aheadMark(tx);
          // Its SAVEPOINT goes in the message after that INSERT, which fails first: the server skips it.
          await tx.savepoint((inner) => inner.query("SELECT 1")).catch((err: unknown) => {
            seen = err;
          });
        })
        .then(() => undefined, (err: unknown) => err);
      expect(seen).toMatchObject({ code: "42P01" });
      expect(isSentAheadFailure(seen, mark)).toBe(true);
      // The caller went on: the transaction still cannot commit.
      expect(failure).toBeInstanceOf(CaughtStatementError);
    });

    it("blames a value that cannot be written on the statement that deferred it", async () => {
      const unwritable = { toPostgres: () => { throw new Error("cannot be written"); } } as unknown as SqlValue;
      let mark: number | undefined;
      const failure = await db
        .transaction(async (tx) => {
          await tx.query("SELECT 1");
          await sendAhead(tx, "SELECT $1::text", [unwritable]);
          mark = aheadMark(tx);
          await tx.query("SELECT 2");
        })
        .then(() => undefined, (err: unknown) => err);
      expect(String(failure)).toMatch(/cannot be written/);
      expect(isSentAheadFailure(failure, mark)).toBe(true);
    });
  });
});
