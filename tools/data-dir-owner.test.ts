import { chownSync, lchownSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirForSuite } from "../test/support/temp-dir.js";
import { foreignOwned } from "./data-dir-owner.js";

describe.skipIf(process.getuid?.() !== 0)("foreignOwned", () => {
  const other = 12345;

  it("finds nothing in a DATA_DIR all this user's, and takes PostgreSQL's folder as the postgres user's", () => {
    const dataDir = tempDirForSuite("concord-owner-");
    mkdirSync(join(dataDir, "auth"));
    writeFileSync(join(dataDir, "auth", "token-hs256.key"), "");
    mkdirSync(join(dataDir, "postgres"));
    chownSync(join(dataDir, "postgres"), other, other);
    expect(foreignOwned(dataDir)).toEqual([]);
  });

  it("names DATA_DIR alone when another user owns it", () => {
    const dataDir = tempDirForSuite("concord-owner-");
    writeFileSync(join(dataDir, "orders.db"), "");
    chownSync(dataDir, other, other);
    expect(foreignOwned(dataDir)).toEqual([{ path: dataDir, uid: other }]);
  });

  it("names a seed, a database and a link another user owns, and the file a link of this user's leads to", () => {
    const dataDir = tempDirForSuite("concord-owner-");
    const elsewhere = tempDirForSuite("concord-elsewhere-");
    mkdirSync(join(dataDir, "nats-credentials"));
    writeFileSync(join(dataDir, "nats-credentials", "operator.nk"), "");
    chownSync(join(dataDir, "nats-credentials", "operator.nk"), other, other);
    writeFileSync(join(dataDir, "orders.db"), "");
    chownSync(join(dataDir, "orders.db"), other, other);
    writeFileSync(join(elsewhere, "ca-key.pem"), "");
    chownSync(join(elsewhere, "ca-key.pem"), other, other);
    mkdirSync(join(dataDir, "tls"));
    symlinkSync(join(elsewhere, "ca-key.pem"), join(dataDir, "tls", "ca-key.pem"));
    symlinkSync(join(elsewhere, "ca-key.pem"), join(dataDir, "tls", "ca.pem"));
    lchownSync(join(dataDir, "tls", "ca.pem"), other, other);
    expect(foreignOwned(dataDir).map((f) => f.path.slice(dataDir.length + 1)).sort()).toEqual([
      "nats-credentials/operator.nk",
      "orders.db",
      "tls/ca-key.pem",
      "tls/ca.pem",
    ]);
  });
});
