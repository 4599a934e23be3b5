import { readFileSync } from "node:fs";
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

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

/** grpc-js server credentials for TLS (with client certificates when required); throws naming a file that cannot be read. */
export function serverTlsCredentials(tls: ServerTlsFiles): ServerCredentials {
  if (tls.requireClientCert && !tls.caFile) throw new Error("requiring client certificates needs the CA file they must chain to");
  const ca = tls.caFile ? readPem(tls.caFile, "TLS CA certificate") : null;
  const pair = { cert_chain: readPem(tls.certFile, "TLS certificate"), private_key: readPem(tls.keyFile, "TLS key") };
  return ServerCredentials.createSsl(ca, [pair], tls.requireClientCert ?? false);
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

/** grpc-js channel credentials for TLS (with a client certificate when given); throws naming a file that cannot be read. */
export function clientTlsCredentials(tls: ClientTlsFiles): ChannelCredentials {
  muteIpServerNameWarning();
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) throw new Error("a client certificate needs its key, and a key its certificate");
  const ca = tls.caFile ? readPem(tls.caFile, "TLS CA certificate") : null;
  const key = tls.keyFile ? readPem(tls.keyFile, "TLS key") : null;
  const cert = tls.certFile ? readPem(tls.certFile, "TLS certificate") : null;
  return credentials.createSsl(ca, key, cert);
}
