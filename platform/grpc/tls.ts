import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { readSettingFileAndStats, settingFileExposure } from "../config/index.js";
import { credentials, ServerCredentials, type ChannelCredentials } from "@grpc/grpc-js";

/** A server's TLS material, as PEM files. */
export interface ServerTlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  /** CA certificates that client certificates must chain to; needed with `requireClientCert`. */
  readonly caFile?: string;
  /** Mutual TLS: a client without a certificate from `caFile` is refused during the handshake. */
  readonly requireClientCert?: boolean;
}

/** A client's TLS material, as PEM files. */
export interface ClientTlsFiles {
  /** CA certificates the server's certificate must chain to; the system's roots when not given. */
  readonly caFile?: string;
  /** The client's own certificate and key, for servers that require one (mutual TLS). */
  readonly certFile?: string;
  readonly keyFile?: string;
}

/** Which of a server's or client's TLS files a file is. */
export type TlsFileRole = "certificate" | "key" | "ca";

const whatIs: Record<TlsFileRole, string> = { certificate: "TLS certificate", key: "TLS key", ca: "TLS CA certificate" };

/**
 * A TLS file that cannot be read, does not hold what its role needs, or
 * that others than its owner may read (a key) or write (a certificate or
 * CA file): a setting to put right, so its message is one line naming the file.
 */
export class TlsFileError extends Error {
  constructor(
    message: string,
    readonly file: string,
    readonly role: TlsFileRole,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** What whoever may read a key, or write a certificate or CA file, beside its owner could do. */
const riskOf: Record<TlsFileRole, string> = {
  key: "pose as the holder of its certificate",
  certificate: "put another certificate in its place",
  ca: "add a CA of theirs, whose certificates would then be trusted",
};

/** The bytes of a TLS file, refused (a TlsFileError naming it) when it cannot be read, or when others may read a key or write a certificate (settingFileExposure). */
function readPem(path: string, role: TlsFileRole): Buffer {
  let read: ReturnType<typeof readSettingFileAndStats>;
  try {
    read = readSettingFileAndStats(path, 1024 * 1024);
  } catch (err) {
    throw new TlsFileError(`cannot read the ${whatIs[role]} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, path, role, { cause: err });
  }
  const exposed = settingFileExposure(path, `the ${whatIs[role]}`, role === "key" ? "secret" : "public", riskOf[role], read.stats);
  if (exposed !== undefined) throw new TlsFileError(exposed, path, role);
  return read.bytes;
}

const pemCertificate = /-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g;

/**
 * A file of PEM certificates, each of them read: Node takes a CA file with
 * none in it without a word (then no peer is trusted), and a certificate
 * file only when the server first listens, failing it with OpenSSL's words
 * alone. Returns the file and its first certificate.
 */
function readCertificates(path: string, role: "certificate" | "ca"): { pem: Buffer; first: X509Certificate; all: X509Certificate[] } {
  const pem = readPem(path, role);
  const blocks = pem.toString("latin1").match(pemCertificate) ?? [];
  if (blocks.length === 0) throw new TlsFileError(`the ${whatIs[role]} ${path} holds no PEM certificate`, path, role);
  try {
    const all = blocks.map((block) => new X509Certificate(block));
    return { pem, first: all[0]!, all };
  } catch (err) {
    throw new TlsFileError(`the ${whatIs[role]} ${path} holds a PEM certificate that cannot be read (${(err as Error).message})`, path, role, { cause: err });
  }
}

/** A PEM private key file, and the key it holds. */
function readPrivateKey(keyFile: string): { pem: Buffer; key: KeyObject } {
  const pem = readPem(keyFile, "key");
  try {
    return { pem, key: createPrivateKey(pem) };
  } catch (err) {
    throw new TlsFileError(`the TLS key ${keyFile} holds no PEM private key that can be read (${(err as Error).message})`, keyFile, "key", { cause: err });
  }
}

/** A certificate file and its key file as read, once: their PEM, and the certificates of the first, the certificate first and the chain it presents after it. */
export interface TlsKeyPair {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly chain: readonly X509Certificate[];
}

/**
 * The PEM files of a certificate and its private key, each read once and
 * checked to be a pair; throws a TlsFileError naming the first that cannot
 * be read, holds nothing of its kind, or is not the other's.
 */
export function readKeyPair(certFile: string, keyFile: string): TlsKeyPair {
  const cert = readCertificates(certFile, "certificate");
  const key = readPrivateKey(keyFile);
  if (!cert.first.checkPrivateKey(key.key)) throw new TlsFileError(`the TLS key ${keyFile} is not the key of the certificate ${certFile}`, keyFile, "key");
  return { cert: cert.pem, key: key.pem, chain: cert.all };
}

/**
 * Reads whichever of a server's or client's TLS files are given, as the
 * credentials below would (a certificate and key given together are
 * checked to be a pair), making nothing: for a caller that hands them on.
 * Throws a TlsFileError naming the first that cannot be used.
 */
export function checkTlsFiles(files: ClientTlsFiles): void {
  if (files.caFile) readCertificates(files.caFile, "ca");
  if (files.certFile && files.keyFile) readKeyPair(files.certFile, files.keyFile);
  else if (files.certFile) readCertificates(files.certFile, "certificate");
  else if (files.keyFile) readPrivateKey(files.keyFile);
}

/** The certificates of a certificate file, the certificate first and the chain it presents after it, each read (a TlsFileError naming the file when one cannot be, or it holds none). */
export function certificateChain(certFile: string): X509Certificate[] {
  return readCertificates(certFile, "certificate").all;
}

/** The certificates of a CA file, each read (a TlsFileError naming the file when one cannot be, or it holds none). */
export function caCertificates(caFile: string): X509Certificate[] {
  return readCertificates(caFile, "ca").all;
}

/** grpc-js server credentials for TLS (with client certificates when required); throws a TlsFileError naming a file that cannot be read or does not hold what it should. */
export function serverTlsCredentials(tls: ServerTlsFiles): ServerCredentials {
  if (tls.requireClientCert && !tls.caFile) throw new Error("requiring client certificates needs the CA file they must chain to");
  const ca = tls.caFile ? readCertificates(tls.caFile, "ca").pem : null;
  const { cert, key } = readKeyPair(tls.certFile, tls.keyFile);
  return ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], tls.requireClientCert ?? false);
}

let ipServerNameWarningMuted = false;

/**
 * grpc-js hands the target's host to Node as the TLS server name even when
 * it is an IP address (127.0.0.1), and Node then prints a deprecation
 * warning (DEP0123) on the first connection: it leaves the IP out of SNI,
 * which is what RFC 6066 asks, and verifies the certificate against the IP
 * as before. Nothing is wrong and nothing can be done by the caller, so that
 * one warning is not printed; every other warning is.
 */
function muteIpServerNameWarning(): void {
  if (ipServerNameWarningMuted) return;
  ipServerNameWarningMuted = true;
  const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: unknown, ...rest: unknown[]) => {
    const code = typeof rest[0] === "object" && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
    if (code === "DEP0123") return;
    emitWarning(warning, ...rest);
  }) as typeof process.emitWarning;
}

/** grpc-js channel credentials for TLS (with a client certificate when given); throws a TlsFileError naming a file that cannot be read or does not hold what it should. */
export function clientTlsCredentials(tls: ClientTlsFiles): ChannelCredentials {
  muteIpServerNameWarning();
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) throw new Error("a client certificate needs its key, and a key its certificate");
  const ca = tls.caFile ? readCertificates(tls.caFile, "ca").pem : null;
  const pair = tls.certFile && tls.keyFile ? readKeyPair(tls.certFile, tls.keyFile) : undefined;
  return credentials.createSsl(ca, pair?.key ?? null, pair?.cert ?? null);
}
