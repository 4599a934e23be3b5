/**
 * The development TLS and token material `npm start` makes on its first run,
 * under DATA_DIR: a CA of its own (tls/ca.pem), a certificate per service
 * signed by it (for 127.0.0.1, ::1, localhost and the hosts asked for,
 * usable as server and as client certificate), one for command-line clients
 * (tls/client.pem), and
 * the HS256 key that signs and checks bearer tokens (auth/token-hs256.key).
 * Keys are written with mode 0600, and the folders are 0700: ones there that
 * others may read are narrowed to that. What exists is kept; delete a file (or
 * the directory) and start again to make it anew. A certificate is made
 * anew, with its key, when it expires within 30 days, was not issued by the
 * CA in ca.pem, or lacks a host asked for (and the CA, with every
 * certificate, when it expires within 30 days): a DATA_DIR kept across
 * versions and years needs nothing deleted. Certificates come from
 * Debian's `openssl`; the token key from the system's random source.
 */
import { execFileSync } from "node:child_process";
import { randomBytes, X509Certificate } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Narrowed, narrowOwnerOnly } from "./owner-only.js";

/** Where the material is, relative to nothing: absolute when `dataDir` is. */
export interface DevCredentials {
  readonly caFile: string;
  /** Certificate and key per name given (the services, and "client"). */
  readonly certs: Readonly<Record<string, { readonly certFile: string; readonly keyFile: string }>>;
  readonly tokenKeyFile: string;
  /** What was made on this run, for a line on the console; empty when all was there. */
  readonly made: readonly string[];
  /** The certificates among `made` that were there and were replaced, each with why. */
  readonly renewed: readonly { readonly file: string; readonly why: string }[];
  /** The folders and keys there that other users could read, each with the mode it had (`was`) and has now: its owner's alone. */
  readonly narrowed: readonly Narrowed[];
}

/** A certificate this close to its end is made anew: a start a little before it would leave the services with one that soon fails. */
const renewWithinMs = 30 * 24 * 60 * 60 * 1000;

/** A certificate file under DATA_DIR/tls that holds no certificate: the user's to move or delete, nothing written over it. */
export class UnreadableCertificate extends Error {}

/** The certificate in `file`, or an error naming the file and what to do (nothing is written over a file that is no certificate). */
function readCertificate(file: string): X509Certificate {
  try {
    return new X509Certificate(readFileSync(file));
  } catch (err) {
    throw new UnreadableCertificate(`${file} holds no certificate that can be read (${(err as Error).message}); move it away, or delete it to have a new one made`, { cause: err });
  }
}

/** Why the certificate should be made anew (it expires within renewWithinMs), or undefined. */
function expiring(cert: X509Certificate, now: number): string | undefined {
  const end = Date.parse(cert.validTo);
  return end - now < renewWithinMs ? `it ${end <= now ? "expired" : "expires"} on ${new Date(end).toISOString().slice(0, 10)}` : undefined;
}

/**
 * Why the next ensureDevCredentials on `dataDir` makes the development CA
 * there anew, and every certificate with it ("it expires on 2026-12-20",
 * or its key is missing); undefined when it keeps the CA, or there is
 * none yet. A CA that cannot be read throws UnreadableCertificate, as it
 * does there.
 */
export function developmentCaRenewal(dataDir: string, now = Date.now()): string | undefined {
  const caFile = join(dataDir, "tls", "ca.pem");
  if (!existsSync(caFile)) return undefined;
  if (!existsSync(join(dataDir, "tls", "ca-key.pem"))) return "its key, ca-key.pem beside it, is missing";
  return expiring(readCertificate(caFile), now);
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
  const caFile = join(tlsDir, "ca.pem");
  const caKeyFile = join(tlsDir, "ca-key.pem");
  // Each certificate there is read before anything is written, a directory included: one that cannot be is refused with nothing changed.
  for (const file of [caFile, ...names.map((name) => join(tlsDir, `${name}.pem`))]) if (existsSync(file)) readCertificate(file);
  mkdirSync(tlsDir, { recursive: true, mode: 0o700 });
  mkdirSync(authDir, { recursive: true, mode: 0o700 });
  // Before any key is made: openssl writes a new key with the umask's mode (0644) and it is narrowed only after, which
  // the folders keep from other users. Folders and keys left open (0755 and 0644) were taken as they were, the CA's key
  // with them, with which any user of the machine could have issued certificates the services trust.
  const keys = [caKeyFile, ...names.map((name) => join(tlsDir, `${name}-key.pem`)), join(authDir, "token-hs256.key")];
  const narrowed = [...narrowOwnerOnly([tlsDir, authDir], 0o700), ...narrowOwnerOnly(keys, 0o600)];
  const made: string[] = [];
  const renewed: { file: string; why: string }[] = [];
  const now = Date.now();
  const caExpiring = existsSync(caFile) && existsSync(caKeyFile) ? expiring(readCertificate(caFile), now) : undefined;
  if (caExpiring) renewed.push({ file: caFile, why: caExpiring });
  if (!existsSync(caFile) || !existsSync(caKeyFile) || caExpiring) {
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
  const ca = readCertificate(caFile);
  const altNames = ["DNS:localhost", "IP:127.0.0.1", "IP:::1", ...hosts.filter((h) => !["localhost", "127.0.0.1", "::1"].includes(h)).map((h) => (/^[\d.]+$|:/.test(h) ? `IP:${h}` : `DNS:${h}`))];
  const certs: Record<string, { certFile: string; keyFile: string }> = {};
  for (const name of names) {
    const certFile = join(tlsDir, `${name}.pem`);
    const keyFile = join(tlsDir, `${name}-key.pem`);
    certs[name] = { certFile, keyFile };
    if (existsSync(certFile) && existsSync(keyFile)) {
      const why = staleCertificate(readCertificate(certFile), ca, hosts, now);
      if (why === undefined) continue;
      renewed.push({ file: certFile, why });
    }
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
  return { caFile, certs, tokenKeyFile, made, renewed, narrowed };
}

/** Why `cert` should be made anew: it expires soon, another CA issued it, or it lacks one of `hosts`; undefined when it is sound. */
function staleCertificate(cert: X509Certificate, ca: X509Certificate, hosts: readonly string[], now: number): string | undefined {
  const ends = expiring(cert, now);
  if (ends) return ends;
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return "the CA in ca.pem did not issue it";
  const missing = ["localhost", "127.0.0.1", "::1", ...hosts].filter((h) => (/^[\d.]+$|:/.test(h) ? cert.checkIP(h) : cert.checkHost(h)) === undefined);
  return missing.length > 0 ? `it is not for ${missing.join(", ")}` : undefined;
}
