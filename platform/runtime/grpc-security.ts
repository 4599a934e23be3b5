import type { ChannelCredentials, ServerCredentials } from "@grpc/grpc-js";
import { createTokenVerifier, defaultMaxTokenTtlMs, readTokenPublicKeys, readTokenSecret, renewingToken, signToken } from "../auth/index.js";
import { durationAtLeast, oneOf, text, type ConfigOf, type Setting } from "../config/index.js";
import { Code, StatusError } from "../errors/index.js";
import { type AccessControl, clientTlsCredentials, serverTlsCredentials, TlsFileError, type TlsFileRole, type ServerTlsFiles } from "../grpc/index.js";

/**
 * How a service's gRPC is protected: TLS (optionally mutual) for what it
 * serves and what it calls, and bearer tokens checked against the
 * contracts' concord.v1.access rules. Each half is off only when asked for.
 */
export interface GrpcSecurity {
  /**
   * The service's certificate and key, which it also presents as a client
   * to other services; `caFile` is what client certificates and the
   * servers it calls must chain to. "plaintext" turns TLS off.
   */
  readonly tls: ServerTlsFiles | "plaintext";
  /**
   * The HS256 key tokens are checked with (and the service signs its own
   * with), optionally an issuer's public keys (PEM) whose tokens are
   * accepted too, and the longest a token may live (default a day); or
   * "none": no tokens checked or sent.
   */
  readonly auth: { readonly keyFile: string; readonly publicKeysFile?: string; readonly maxTokenTtlMs?: number } | "none";
}

/** Plaintext and no tokens: for tests and benchmarks that say so. */
export const insecureGrpc: GrpcSecurity = Object.freeze({ tls: "plaintext", auth: "none" });

/**
 * GRPC_AUTH_MAX_TOKEN_TTL, the longest a bearer token may live, in
 * milliseconds: the services refuse tokens that would live longer, and
 * tools/token.ts refuses to make them.
 */
export const maxTokenTtlSetting: Setting<number> = {
  description: "the longest a bearer token may live (at least 1m): one that expires further ahead, or was issued to live longer, is refused",
  default: "24h",
  parse: durationAtLeast("1m", "a token must outlive its way to the server, and the services renew their own a minute before they expire"),
};

/** The environment of a service's gRPC security, with defaults where `npm start` puts the development material. */
export function grpcSecuritySettings(service: string) {
  return {
    GRPC_INSECURE: {
      description: "1 serves and calls other services in plaintext, without TLS (local experiments only)",
      default: "0",
      parse: oneOf("0", "1"),
    },
    GRPC_TLS_CERT: { description: "the service's TLS certificate (PEM, which others may read but not write), also presented to the services it calls", default: `.data/tls/${service}.pem`, parse: text },
    GRPC_TLS_KEY: { description: "the key of GRPC_TLS_CERT (PEM, mode 0600, owned by the service's user or root; or 0440, root's, readable by a group of the service's)", default: `.data/tls/${service}-key.pem`, parse: text },
    GRPC_TLS_CA: {
      description: "CA certificate(s) (PEM, which others may read but not write) that the services it calls, and client certificates, must chain to",
      default: ".data/tls/ca.pem",
      parse: text,
    },
    GRPC_TLS_CLIENT_AUTH: {
      description: "require: refuse clients without a certificate from GRPC_TLS_CA (mutual TLS); none: any client may connect",
      default: "none",
      parse: oneOf("none", "require"),
    },
    GRPC_AUTH: {
      description: "jwt: every call needs a bearer token allowed by its method's concord.v1.access rule; none: every call is let in (local experiments only)",
      default: "jwt",
      parse: oneOf("jwt", "none"),
    },
    GRPC_AUTH_KEY_FILE: {
      description: "file with the HS256 key (hex, mode 0600, owned by the service's user or root; or 0440, root's, readable by a group of the service's) that checks bearer tokens and signs the service's own",
      default: ".data/auth/token-hs256.key",
      parse: text,
    },
    GRPC_AUTH_PUBLIC_KEYS: {
      description: "file with an issuer's public keys (PEM; EC P-256, RSA or Ed25519): tokens signed with their private keys (ES256, RS256, EdDSA) are accepted too; several while one is rotated; empty: none",
      default: "",
      parse: (value: string) => value,
    },
    GRPC_AUTH_MAX_TOKEN_TTL: maxTokenTtlSetting,
  };
}

/** The settings' values as a GrpcSecurity. */
export function grpcSecurityOf(config: ConfigOf<ReturnType<typeof grpcSecuritySettings>>): GrpcSecurity {
  return {
    tls:
      config.GRPC_INSECURE === "1"
        ? "plaintext"
        : { certFile: config.GRPC_TLS_CERT, keyFile: config.GRPC_TLS_KEY, caFile: config.GRPC_TLS_CA, requireClientCert: config.GRPC_TLS_CLIENT_AUTH === "require" },
    auth:
      config.GRPC_AUTH === "none"
        ? "none"
        : { keyFile: config.GRPC_AUTH_KEY_FILE, ...(config.GRPC_AUTH_PUBLIC_KEYS !== "" && { publicKeysFile: config.GRPC_AUTH_PUBLIC_KEYS }), maxTokenTtlMs: config.GRPC_AUTH_MAX_TOKEN_TTL },
  };
}

/**
 * Runs `read`, which reads the service's TLS or token files. One that cannot
 * be read or holds no usable key is the operator's to put right, as a bad
 * setting is: FAILED_PRECONDITION naming the file, which refuses the start
 * (exit 2, one log line) rather than failing it with a stack.
 */
function readingSecurityFiles<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    const named = err instanceof TlsFileError ? `${tlsFileVariables[err.role]} names it` : "GRPC_TLS_CERT, GRPC_TLS_KEY, GRPC_TLS_CA, GRPC_AUTH_KEY_FILE and GRPC_AUTH_PUBLIC_KEYS name the files";
    // A service reads no DATA_DIR: one started alone with DATA_DIR set looked in .data all the same, which this said nothing of.
    throw new StatusError(
      Code.FAILED_PRECONDITION,
      `${(err as Error).message} (${named}; \`npm start\` makes the development ones under DATA_DIR/tls and DATA_DIR/auth and gives the services their paths: a service started alone reads no DATA_DIR, and takes them from these variables, .data/tls and .data/auth unless set)`,
      { cause: err },
    );
  }
}

/** The setting that names each of a service's TLS files (its certificate serves it and is shown to the services it calls). */
export const tlsFileVariables: Readonly<Record<TlsFileRole, string>> = { certificate: "GRPC_TLS_CERT", key: "GRPC_TLS_KEY", ca: "GRPC_TLS_CA" };

/**
 * What a plaintext client of a service serving TLS is told (see
 * answerPlaintextClients): the CA to trust where `npm start` makes it, as
 * grpcurl takes it, and, when clients need certificates, the development
 * client's. The paths are the usual ones under DATA_DIR, said to be
 * DATA_DIR's (a start given another made them there), not the files the
 * service reads, which a caller that has not connected need not learn.
 */
export function plaintextClientMessage(tls: ServerTlsFiles): string {
  const clientCert = tls.requireClientCert ? " -cert .data/tls/client.pem -key .data/tls/client-key.pem" : "";
  return (
    "this port takes gRPC over TLS, and this connection is plaintext: connect with TLS, trusting the CA that issued the service's certificate " +
    `(npm start makes it as DATA_DIR/tls/ca.pem, DATA_DIR .data unless set: grpcurl -cacert .data/tls/ca.pem${clientCert}, not -plaintext)`
  );
}

/** What a server needs from a GrpcSecurity; throws FAILED_PRECONDITION naming a file that cannot be read or holds no usable key. */
export function serverSecurity(security: GrpcSecurity): { credentials?: ServerCredentials; plaintextClientMessage?: string; access?: AccessControl } {
  return readingSecurityFiles(() => ({
    ...(security.tls !== "plaintext" && { credentials: serverTlsCredentials(security.tls), plaintextClientMessage: plaintextClientMessage(security.tls) }),
    ...(security.auth !== "none" && {
      access: {
        verify: createTokenVerifier(readTokenSecret(security.auth.keyFile), security.auth.publicKeysFile ? readTokenPublicKeys(security.auth.publicKeysFile) : [], {
          maxTtlMs: security.auth.maxTokenTtlMs,
        }),
      },
    }),
  }));
}

/** How long the tokens a service signs for its own calls live, unless tokens may not live that long. */
const serviceTokenTtlSeconds = 600;

/**
 * What a client of another service needs, calling as `service` (role
 * "service"): TLS with the service's own certificate, and a token it signs
 * itself, living ten minutes or the longest a token may live if that is
 * shorter, and renewed a minute (at most half its life) before it expires.
 */
export function serviceCallSecurity(security: GrpcSecurity, service: string): { credentials?: ChannelCredentials; token?: () => Promise<string> } {
  const tls = security.tls;
  return readingSecurityFiles(() => ({
    ...(tls !== "plaintext" && { credentials: clientTlsCredentials({ caFile: tls.caFile, certFile: tls.certFile, keyFile: tls.keyFile }) }),
    ...(security.auth !== "none" && { token: serviceToken(security.auth, service) }),
  }));
}

function serviceToken(auth: Exclude<GrpcSecurity["auth"], "none">, service: string): () => Promise<string> {
  const key = readTokenSecret(auth.keyFile);
  const ttlSeconds = Math.min(serviceTokenTtlSeconds, Math.floor((auth.maxTokenTtlMs ?? defaultMaxTokenTtlMs) / 1000));
  return renewingToken((ttl) => signToken(key, { subject: service, roles: ["service"] }, ttl), ttlSeconds);
}
