import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readmeProse } from "../test/support/readme.js";
import { tempDirForSuite } from "../test/support/temp-dir.js";
import { ensureDevCredentials } from "./dev-credentials.js";

const names = ["products", "orders", "client"];
const days = (cert: string) => (Date.parse(new X509Certificate(readFileSync(cert)).validTo) - Date.now()) / 86_400_000;

/** Replaces `name`'s certificate in `dataDir` by one from its CA that ends in `validDays` days. */
function shortLived(dataDir: string, name: string, validDays: number): void {
  const tls = join(dataDir, "tls");
  const ext = join(tls, "short.ext");
  writeFileSync(ext, "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n");
  execFileSync("openssl", ["req", "-new", "-key", join(tls, `${name}-key.pem`), "-out", join(tls, "short.csr"), "-subj", `/CN=${name}`], { stdio: "pipe" });
  execFileSync("openssl", ["x509", "-req", "-in", join(tls, "short.csr"), "-CA", join(tls, "ca.pem"), "-CAkey", join(tls, "ca-key.pem"), "-days", String(validDays), "-extfile", ext, "-out", join(tls, `${name}.pem`)], { stdio: "pipe" });
}

describe("ensureDevCredentials", () => {
  const dir = tempDirForSuite("concord-dev-credentials-");

  it("narrows the folders and keys other users may read to their owner's, saying which, and keeps them: the CA's key left 0644 was taken as it was", () => {
    const dataDir = join(dir, "open");
    const first = ensureDevCredentials(dataDir, names);
    expect(first.narrowed).toEqual([]);
    const tls = join(dataDir, "tls");
    const caKey = readFileSync(join(tls, "ca-key.pem"));
    chmodSync(tls, 0o755);
    chmodSync(join(tls, "ca-key.pem"), 0o644);
    chmodSync(join(tls, "orders-key.pem"), 0o640);
    chmodSync(join(dataDir, "auth", "token-hs256.key"), 0o604);
    const again = ensureDevCredentials(dataDir, names);
    expect(again.narrowed).toEqual([
      { file: tls, was: 0o755, now: 0o700 },
      { file: join(tls, "ca-key.pem"), was: 0o644, now: 0o600 },
      { file: join(tls, "orders-key.pem"), was: 0o640, now: 0o600 },
      { file: join(dataDir, "auth", "token-hs256.key"), was: 0o604, now: 0o600 },
    ]);
    expect(again.made).toEqual([]);
    expect(readFileSync(join(tls, "ca-key.pem"))).toEqual(caKey);
    for (const [path, mode] of [[tls, 0o700], [join(tls, "ca-key.pem"), 0o600], [join(tls, "orders-key.pem"), 0o600], [join(tls, "products-key.pem"), 0o600]] as const) {
      expect(statSync(path).mode & 0o777, path).toBe(mode);
    }
    expect(ensureDevCredentials(dataDir, names).narrowed).toEqual([]);
  });

  it("keeps sound certificates, and makes anew one that expires within 30 days, one another CA issued and one that lacks a host asked for", () => {
    const dataDir = join(dir, "kept");
    const first = ensureDevCredentials(dataDir, names);
    expect(first.renewed).toEqual([]);
    const again = ensureDevCredentials(dataDir, names);
    expect(again.made).toEqual([]);
    const orders = readFileSync(join(dataDir, "tls", "orders.pem"));
    // A DATA_DIR two years on: its certificates (825 days) end within the month.
    shortLived(dataDir, "products", 10);
    // And one from the CA of another DATA_DIR, put there by hand.
    const other = join(dir, "other");
    ensureDevCredentials(other, names);
    for (const f of ["client.pem", "client-key.pem"]) copyFileSync(join(other, "tls", f), join(dataDir, "tls", f));
    const renewed = ensureDevCredentials(dataDir, names);
    expect(renewed.renewed).toEqual([
      { file: join(dataDir, "tls", "products.pem"), why: expect.stringMatching(/^it expires on \d{4}-\d\d-\d\d$/) },
      { file: join(dataDir, "tls", "client.pem"), why: "the CA in ca.pem did not issue it" },
    ]);
    expect(renewed.made).toEqual([join(dataDir, "tls", "products.pem"), join(dataDir, "tls", "client.pem")]);
    expect(days(join(dataDir, "tls", "products.pem"))).toBeGreaterThan(800);
    const ca = new X509Certificate(readFileSync(join(dataDir, "tls", "ca.pem")));
    expect(new X509Certificate(readFileSync(join(dataDir, "tls", "client.pem"))).checkIssued(ca)).toBe(true);
    expect(readFileSync(join(dataDir, "tls", "orders.pem")).equals(orders)).toBe(true);
    // Services listening on another address (ORDERS_LISTEN=10.1.2.3:50052): every certificate is made for it too, once.
    const moved = ensureDevCredentials(dataDir, names, ["127.0.0.1", "10.1.2.3"]);
    expect(moved.renewed.map((r) => r.why)).toEqual(["it is not for 10.1.2.3", "it is not for 10.1.2.3", "it is not for 10.1.2.3"]);
    expect(new X509Certificate(readFileSync(join(dataDir, "tls", "orders.pem"))).checkIP("10.1.2.3")).toBe("10.1.2.3");
    expect(ensureDevCredentials(dataDir, names, ["127.0.0.1", "10.1.2.3"]).made).toEqual([]);
  });

  it("makes each certificate for localhost, 127.0.0.1, ::1 and the hosts the services listen on from its first start, as README says", () => {
    const dataDir = join(dir, "first-moved");
    ensureDevCredentials(dataDir, names, ["10.1.2.3", "shop.internal"]);
    for (const name of names) {
      const cert = new X509Certificate(readFileSync(join(dataDir, "tls", `${name}.pem`)));
      expect([cert.checkHost("localhost"), cert.checkIP("127.0.0.1"), cert.checkIP("::1"), cert.checkIP("10.1.2.3"), cert.checkHost("shop.internal")], name).toEqual(["localhost", "127.0.0.1", "::1", "10.1.2.3", "shop.internal"]);
    }
    expect(readmeProse()).toContain("(P-256, for `localhost`, `127.0.0.1`, `::1` and the hosts the services listen on, 825 days)");
  });

  it("makes a CA that expires within 30 days anew, with every certificate", () => {
    const dataDir = join(dir, "old-ca");
    const tls = join(dataDir, "tls");
    mkdirSync(tls, { recursive: true });
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", join(tls, "ca-key.pem"), "-out", join(tls, "ca.pem"), "-days", "5", "-subj", "/CN=old CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], { stdio: "pipe" });
    const made = ensureDevCredentials(dataDir, names);
    expect(made.renewed).toEqual([{ file: join(tls, "ca.pem"), why: expect.stringMatching(/^it expires on /) }]);
    expect(days(join(tls, "ca.pem"))).toBeGreaterThan(3_000);
    const ca = new X509Certificate(readFileSync(join(tls, "ca.pem")));
    for (const name of names) expect(new X509Certificate(readFileSync(join(tls, `${name}.pem`))).checkIssued(ca)).toBe(true);
  });

  it("refuses, writing nothing, a certificate file that holds no certificate, naming it", () => {
    const dataDir = join(dir, "garbled");
    ensureDevCredentials(dataDir, names);
    writeFileSync(join(dataDir, "tls", "orders.pem"), "not a certificate\n");
    const before = readdirSync(join(dataDir, "tls")).map((f) => [f, readFileSync(join(dataDir, "tls", f)).toString("hex")]);
    expect(() => ensureDevCredentials(dataDir, names)).toThrow(`${join(dataDir, "tls", "orders.pem")} holds no certificate that can be read`);
    expect(readdirSync(join(dataDir, "tls")).map((f) => [f, readFileSync(join(dataDir, "tls", f)).toString("hex")])).toEqual(before);
  });
});
