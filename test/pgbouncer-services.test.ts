/**
 * The product service on PostgreSQL behind a real PgBouncer, two instances in
 * session pooling: each says once at start that the pooler drops the timeouts
 * a connection sends at start-up, which its connections then set themselves;
 * an instance reaching the server directly says nothing. Transaction pooling
 * is refused at start, naming pool_mode = session.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { capturedLogger } from "./support/captured-logger.js";
import { useNatsServer } from "./support/nats-server.js";
import { startPgBouncer, type PgBouncerHandle } from "./support/pgbouncer.js";
import { usePostgresServer } from "./support/postgres.js";
import { startTestProducts, tempDir } from "./support/shop.js";

const dropped = /^the pooler in front of PostgreSQL drops the timeouts a connection sends at start-up/;

describe("services behind PgBouncer", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());
  const postgres = usePostgresServer();
  const nats = useNatsServer({ storeDir: join(dir.path, "nats"), credentialsDir: join(dir.path, "creds") });
  let sessionPooler: PgBouncerHandle;
  let transactionPooler: PgBouncerHandle;
  const started: Array<{ stop(): Promise<void> }> = [];
  beforeAll(async () => {
    [sessionPooler, transactionPooler] = await Promise.all([startPgBouncer(postgres(), { poolMode: "session" }), startPgBouncer(postgres(), { poolMode: "transaction" })]);
  }, 60_000);
  afterAll(async () => {
    for (const s of started.reverse()) await s.stop();
    await Promise.all([sessionPooler?.stop(), transactionPooler?.stop()]);
  });

  it("session pooling: two instances start, each saying once that its connections set the timeouts the pooler dropped; directly, nothing is said", async () => {
    await postgres().createDatabase("products_pooled");
    const instances = [capturedLogger("products"), capturedLogger("products")];
    for (const { logger } of instances) {
      started.push(await startTestProducts(dir.path, nats().url, { database: sessionPooler.urlOf("products_pooled"), natsSeedFile: nats().seedFile("products"), logger }));
    }
    for (const { lines } of instances) {
      const said = lines.filter((l) => dropped.test(String(l.msg)));
      expect(said).toHaveLength(1);
      expect(said[0]).toMatchObject({ level: "info", settings: ["idle_in_transaction_session_timeout", "statement_timeout"] });
    }
    const direct = capturedLogger("products");
    started.push(await startTestProducts(dir.path, nats().url, { database: await postgres().createDatabase("products_direct"), natsSeedFile: nats().seedFile("products"), logger: direct.logger }));
    expect(direct.lines.filter((l) => dropped.test(String(l.msg)))).toEqual([]);
  }, 60_000);

  it("transaction pooling: the service is refused at start, naming pool_mode = session", async () => {
    await postgres().createDatabase("products_transaction_pooled");
    const opening = startTestProducts(dir.path, nats().url, { database: transactionPooler.urlOf("products_transaction_pooled"), natsSeedFile: nats().seedFile("products") });
    void opening.then((s) => started.push(s), () => undefined);
    await expect(opening).rejects.toThrow(/does not keep a server session for each connection: .*pool_mode = session/);
  }, 60_000);
});
