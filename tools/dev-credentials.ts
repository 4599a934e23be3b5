/**
 * The development TLS and token material `npm start` makes on its first run,
 * under DATA_DIR: a CA of its own (tls/ca.pem), a certificate per service
 * signed by it (for 127.0.0.1, ::1 and localhost, usable as server and as
 * client certificate), one for command-line clients (tls/client.pem), and
 * the HS256 key that signs and checks bearer tokens (auth/token-hs256.key).
 * Keys are written with mode 0600. What exists is kept; delete a file (or
 * the directory) and start again to make it anew. Certificates come from
 * Debian's `openssl`; the token key from the system's random source.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Where the material is, relative to nothing: absolute when `dataDir` is. */
export interface DevCredentials {
  readonly caFile: string;
  /** Certificate and key per name given (the services, and "client"). */
  readonly certs: Readonly<Record<string, { readonly certFile: string; readonly keyFile: string }>>;
  readonly tokenKeyFile: string;
  /** What was made on this run, for a line on the console; empty when all was there. */
  readonly made: readonly string[];
}

function openssl(args: readonly string[]): void {
  try {
    execFileSync("openssl", args, { stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString().trim() || e.message} (is Debian's openssl package installed?)`, { cause: err });
  }
}

/** Makes whatever is missing of the development CA, certificates and token key under `dataDir`. */
export function ensureDevCredentials(dataDir: string, names: readonly string[], hosts: readonly string[] = []): DevCredentials {
  const tlsDir = join(dataDir, "tls");
  const authDir = join(dataDir, "auth");
  mkdirSync(tlsDir, { recursive: true, mode: 0o700 });
  mkdirSync(authDir, { recursive: true, mode: 0o700 });
  const made: string[] = [];
  const caFile = join(tlsDir, "ca.pem");
  const caKeyFile = join(tlsDir, "ca-key.pem");
  if (!existsSync(caFile) || !existsSync(caKeyFile)) {
    // A new CA: certificates of the old one would no longer be trusted, so they go too.
    for (const name of names) for (const f of [`${name}.pem`, `${name}-key.pem`]) rmSync(join(tlsDir, f), { force: true });
    openssl([
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", caKeyFile, "-out", caFile, "-days", "3650", "-subj", "/CN=Concord development CA",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    chmodSync(caKeyFile, 0o600);
    made.push(caFile);
  }
  const altNames = ["DNS:localhost", "IP:127.0.0.1", "IP:::1", ...hosts.filter((h) => !["localhost", "127.0.0.1", "::1"].includes(h)).map((h) => (/^[\d.]+$|:/.test(h) ? `IP:${h}` : `DNS:${h}`))];
  const certs: Record<string, { certFile: string; keyFile: string }> = {};
  for (const name of names) {
    const certFile = join(tlsDir, `${name}.pem`);
    const keyFile = join(tlsDir, `${name}-key.pem`);
    certs[name] = { certFile, keyFile };
    if (existsSync(certFile) && existsSync(keyFile)) continue;
    const csr = join(tlsDir, `${name}.csr`);
    const ext = join(tlsDir, `${name}.ext`);
    writeFileSync(ext, `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${altNames.join(",")}\n`);
    try {
      openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", keyFile, "-out", csr, "-subj", `/CN=${name}`]);
      chmodSync(keyFile, 0o600);
      openssl(["x509", "-req", "-in", csr, "-CA", caFile, "-CAkey", caKeyFile, "-set_serial", `0x${randomBytes(16).toString("hex")}`, "-days", "825", "-extfile", ext, "-out", certFile]);
    } finally {
      rmSync(csr, { force: true });
      rmSync(ext, { force: true });
    }
    made.push(certFile);
  }
  const tokenKeyFile = join(authDir, "token-hs256.key");
  if (!existsSync(tokenKeyFile)) {
    writeFileSync(tokenKeyFile, `${randomBytes(32).toString("hex")}\n`, { mode: 0o600, flag: "wx" });
    made.push(tokenKeyFile);
  }
  return { caFile, certs, tokenKeyFile, made };
}
