/**
 * A call that fails on a database error logs the error for the operator
 * ("call failed") with its code, constraint, table and column, but not the
 * row it was about: PostgreSQL's `detail` quotes the values ("Key
 * (email)=(...) already exists.", "Failing row contains (...)"), and the
 * lines of a service must not hold its customers' data.
 */
import { describe, expect, it } from "vitest";
import { descriptorSet } from "../../gen/ts/descriptor_set.js";
import { ProductServiceService } from "../../gen/ts/shop/products/v1/product_service_pb.js";
import { capturedLogger } from "../../test/support/captured-logger.js";
import { getProductOnly } from "../../test/support/get-product-only.js";
import { usePostgresServer } from "../../test/support/postgres.js";
import { tempDirForSuite } from "../../test/support/temp-dir.js";
import { Code, StatusError } from "../errors/index.js";
import { openDatabase, type Database } from "../sql/index.js";
import { createClient } from "./client.js";
import { createGrpcServer } from "./server.js";

const people = {
  id: "test_0001_people",
  sqlite: "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, age INTEGER NOT NULL CHECK (age >= 0))",
  postgres: "CREATE TABLE people (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email TEXT NOT NULL UNIQUE, age INTEGER NOT NULL CHECK (age >= 0))",
};
const email = "someone.private@example.org";

/** The "call failed" line of a GetProduct whose handler runs `write` on `db`. */
async function failedCallLine(db: Database, write: (db: Database) => Promise<unknown>): Promise<Record<string, unknown>> {
  const { lines, logger } = capturedLogger();
  const server = createGrpcServer({ descriptorSet, logger });
  server.addService(
    ProductServiceService,
    getProductOnly(async () => {
      await write(db);
      throw new StatusError(Code.NOT_FOUND, "written");
    }),
  );
  const { port } = await server.start("127.0.0.1:0");
  const client = createClient(ProductServiceService, { address: `127.0.0.1:${port}`, maxAttempts: 1 });
  try {
    await expect(client.getProduct({ id: "01890a5d-ac96-774b-bcce-b302099a8057" })).rejects.toMatchObject({ code: Code.INTERNAL });
  } finally {
    client.close();
    await server.shutdown();
  }
  const failed = lines.filter((l) => l.msg === "call failed");
  expect(failed).toHaveLength(1);
  return failed[0];
}

const insert = (db: Database, age: number) => db.transaction((tx) => tx.run("INSERT INTO people (email, age) VALUES ($1, $2)", [email, age]));

describe("a database error in a call's log line", () => {
  const postgres = usePostgresServer();

  it.each([
    ["a unique key", 1, { code: "23505", constraint: "people_email_key", table: "people" }],
    ["a check", -4321, { code: "23514", constraint: "people_age_check", table: "people" }],
  ])("PostgreSQL: a row breaking %s is named by code, constraint and table, its values are not logged", async (_what, age, named) => {
    const db = await openDatabase({ path: await postgres().createDatabase(`people_${named.code}`), migrations: [people] });
    try {
      if (named.code === "23505") await insert(db, 30);
      const line = await failedCallLine(db, (d) => insert(d, age));
      expect(line.err).toMatchObject(named);
      expect(line.err).not.toHaveProperty("detail");
      expect(JSON.stringify(line)).not.toContain(email);
      expect(JSON.stringify(line)).not.toContain("4321");
    } finally {
      await db.close();
    }
  });

  it("SQLite: a unique key broken is named by code and constraint; its message holds no value", async () => {
    const db = await openDatabase({ path: `${tempDirForSuite("logged-errors-")}/people.db`, migrations: [people] });
    try {
      await insert(db, 30);
      const line = await failedCallLine(db, (d) => insert(d, 31));
      expect(line.err).toMatchObject({ code: "SQLITE_CONSTRAINT_UNIQUE", message: expect.stringContaining("people.email") });
      expect(JSON.stringify(line)).not.toContain(email);
    } finally {
      await db.close();
    }
  });
});
