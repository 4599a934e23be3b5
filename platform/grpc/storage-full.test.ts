/**
 * A call whose writes find the service's database full: not the caller's
 * doing and gone once space is freed, so UNAVAILABLE saying so, and the
 * driver's error logged at error for the operator. On SQLite the file is
 * held at its size (max_page_count: SQLITE_FULL, as on a full disk); on
 * PostgreSQL a trigger raises disk_full (53100), as a server out of space.
 * Likewise a call whose database's storage fails (an I/O error): UNAVAILABLE.
 */
import { mkdirSync, rmdirSync } from "node:fs";
import { status } from "@grpc/grpc-js";
import BetterSqlite3 from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { getProductOnly } from "../../test/support/get-product-only.js";
import { usePostgresServer } from "../../test/support/postgres.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { Code, StatusError } from "../errors/index.js";
import { openDatabase, type Database } from "../sql/index.js";
import { createClient } from "./client.js";
import { createGrpcServer, type GrpcServer } from "./server.js";

const notes = { id: "test_0001_notes", sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)" };
const productId = "01890a5d-ac96-774b-bcce-b302099a8057";

describe("a call whose database's storage is full or fails", () => {
  const dir = tempDirForSuite("storage-full-");
  const postgres = usePostgresServer();
  let server: GrpcServer | undefined;
  let db: Database | undefined;
  afterEach(async () => {
    await server?.shutdown();
    await db?.close();
    server = db = undefined;
  });

  /** GetProduct served by `write`, then NOT_FOUND "written": its answer's error, and the server's log lines. */
  const callWriting = async (write: () => unknown) => {
    const { lines, logger } = capturedLogger();
    server = createGrpcServer({ descriptorSet, logger });
    server.addService(
      ProductServiceService,
      getProductOnly(async () => {
        await write();
        throw new StatusError(Code.NOT_FOUND, "written");
      }),
    );
    const { port } = await server.start("127.0.0.1:0");
    const client = createClient(ProductServiceService, { address: `127.0.0.1:${port}`, maxAttempts: 1 });
    try {
      return { err: await client.getProduct({ id: productId }).then(() => undefined, (e: StatusError) => e), lines };
    } finally {
      client.close();
    }
  };
  /** A 100 KB note, in a transaction of its own. */
  const writeNote = (database: Database) => database.transaction((tx) => tx.run("INSERT INTO notes (body) VALUES ($1)", ["x".repeat(100_000)]));

  const full = "the service's storage is full: its database could not write; try again later";
  const failed = "the service's storage failed: its database could not read or write; try again later";
  /** Answered `message` with UNAVAILABLE (INTERNAL "internal error" before, as for a fault of the service's own code), the cause logged at error once. */
  const expectRefused = (err: StatusError | undefined, lines: Array<Record<string, unknown>>, message: string, cause: RegExp) => {
    expect(err).toMatchObject({ code: status.UNAVAILABLE, message });
    const logged = lines.filter((l) => l.method === ProductServiceService.getProduct.path);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: "error", msg: "call failed", code: "UNAVAILABLE" });
    expect(JSON.stringify(logged[0].err)).toMatch(cause);
  };

  it("answers UNAVAILABLE on SQLite (SQLITE_FULL), logging the cause at error once, and writes again once there is room", async () => {
    db = await openDatabase({ path: `${dir}/full.db`, migrations: [notes] });
    const [{ page_count: pages }] = await db.query<{ page_count: number }>("PRAGMA page_count");
    await db.run(`PRAGMA max_page_count = ${pages}`);
    const { err, lines } = await callWriting(() => writeNote(db!));
    expectRefused(err, lines, full, /SQLITE_FULL/);
    await server?.shutdown();
    await db.run("PRAGMA max_page_count = 1073741823");
    expect((await callWriting(() => writeNote(db!))).err).toMatchObject({ code: status.NOT_FOUND, message: "written" });
  });

  it("logs the first 10 of a flood of such calls in 10 s one line each, and the rest in one line when the window ends: callers trying again while the disk was full wrote thousands of lines a minute, each with its stack", { timeout: 30_000 }, async () => {
    db = await openDatabase({ path: `${dir}/flood.db`, migrations: [notes] });
    const [{ page_count: pages }] = await db.query<{ page_count: number }>("PRAGMA page_count");
    await db.run(`PRAGMA max_page_count = ${pages}`);
    const { lines, logger } = capturedLogger();
    server = createGrpcServer({ descriptorSet, logger });
    server.addService(ProductServiceService, getProductOnly(async () => {
        await writeNote(db!);
        throw new StatusError(Code.NOT_FOUND, "written");
      }),
    );
    const { port } = await server.start("127.0.0.1:0");
    const client = createClient(ProductServiceService, { address: `127.0.0.1:${port}`, maxAttempts: 1 });
    try {
      for (let i = 0; i < 25; i++) await expect(client.getProduct({ id: productId })).rejects.toMatchObject({ code: status.UNAVAILABLE, message: full });
    } finally {
      client.close();
    }
    const logged = () => lines.filter((l) => l.method === ProductServiceService.getProduct.path);
    expect(logged()).toHaveLength(10);
    expect(logged().every((l) => l.msg === "call failed" && /SQLITE_FULL/.test(JSON.stringify(l.err)))).toBe(true);
    await expect.poll(() => logged().length, { timeout: 12_000, interval: 200 }).toBe(11);
    expect(logged()[10]).toMatchObject({
      level: "error",
      failedCalls: 15,
      msg: "15 more calls failed, past the 10 logged one by one in 10 s (the lines above say why); grpc_server_handled_total counts them by code",
    });
  });

  it("answers UNAVAILABLE on PostgreSQL's disk_full (53100), logging the cause at error once", async () => {
    db = await openDatabase({ path: await postgres().createDatabase("storage_full"), migrations: [notes] });
    await db.run(
      "CREATE FUNCTION refuse_for_space() RETURNS trigger LANGUAGE plpgsql AS " +
        "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$",
    );
    await db.run("CREATE TRIGGER notes_full BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION refuse_for_space()");
    const { err, lines } = await callWriting(() => writeNote(db!));
    expectRefused(err, lines, full, /53100/);
  });

  it("answers UNAVAILABLE on SQLite's I/O errors (SQLITE_IOERR_READ: its journal cannot be read), logging the cause at error once, and writes again once repaired", async () => {
    // A rollback journal that is a directory: SQLite's own file layer fails to read it (EISDIR), as it would a failing
    // disk. A service's database is in WAL mode, whose files stay open and cannot be made to fail so; this one stays
    // in SQLite's default journal mode, written outside openDatabase.
    const path = `${dir}/io-error.db`;
    const sqlite = new BetterSqlite3(path);
    try {
      sqlite.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)");
      const write = () => sqlite.prepare("INSERT INTO notes (body) VALUES (?)").run("x");
      mkdirSync(`${path}-journal`);
      const { err, lines } = await callWriting(write);
      expectRefused(err, lines, failed, /SQLITE_IOERR_READ/);
      await server?.shutdown();
      rmdirSync(`${path}-journal`);
      expect((await callWriting(write)).err).toMatchObject({ code: status.NOT_FOUND, message: "written" });
    } finally {
      sqlite.close();
    }
  });

  it("answers UNAVAILABLE on PostgreSQL's io_error (58030), logging the cause at error once", async () => {
    db = await openDatabase({ path: await postgres().createDatabase("storage_failed"), migrations: [notes] });
    await db.run(
      "CREATE FUNCTION fail_to_write() RETURNS trigger LANGUAGE plpgsql AS " +
        "$$ BEGIN RAISE EXCEPTION 'could not write to file: Input/output error' USING ERRCODE = 'io_error'; END $$",
    );
    await db.run("CREATE TRIGGER notes_failing BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION fail_to_write()");
    const { err, lines } = await callWriting(() => writeNote(db!));
    expectRefused(err, lines, failed, /58030/);
  });
});
