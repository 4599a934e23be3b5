/**
 * How the command-line tools reach the services `npm start` runs: TLS that
 * trusts the development CA (DATA_DIR/tls/ca.pem, or GRPC_TLS_CA),
 * presenting DATA_DIR/tls/client.pem when it exists (for servers that
 * require client certificates), and a bearer token signed with the local
 * key (DATA_DIR/auth/token-hs256.key, or GRPC_AUTH_KEY_FILE), living no
 * longer than GRPC_AUTH_MAX_TOKEN_TTL. GRPC_INSECURE=1 and GRPC_AUTH=none
 * turn each off, as they do for the services.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { ChannelCredentials } from "@grpc/grpc-js";
import { readTokenSecret, renewingToken, signToken, type TokenClaims } from "../platform/auth/index.js";
import { readConfig } from "../platform/config/index.js";
import { clientTlsCredentials } from "../platform/grpc/index.js";
import { grpcSecuritySettings, maxTokenTtlSetting } from "../platform/runtime/index.js";
import { repoRoot } from "./repo-root.js";

/** DATA_DIR as `npm start` reads it. */
export const dataDir = (env: NodeJS.ProcessEnv = process.env): string => env.DATA_DIR || join(repoRoot, ".data");

/** The token key file the services use. */
export const tokenKeyFile = (env: NodeJS.ProcessEnv = process.env): string => env.GRPC_AUTH_KEY_FILE || join(dataDir(env), "auth", "token-hs256.key");

/** GRPC_AUTH_MAX_TOKEN_TTL as the services read it, in milliseconds; throws a ConfigError naming it when it is bad. */
export const maxTokenTtlMs = (env: NodeJS.ProcessEnv = process.env): number => readConfig({ GRPC_AUTH_MAX_TOKEN_TTL: maxTokenTtlSetting }, env).GRPC_AUTH_MAX_TOKEN_TTL;

/** How long the tools' own tokens live, unless tokens may not live that long. */
const toolTokenTtlSeconds = 3600;

/** Signs a token with the local key; throws naming the key file when it cannot be read. */
export function localToken(claims: TokenClaims, ttlSeconds: number, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return signToken(readTokenSecret(tokenKeyFile(env)), claims, ttlSeconds);
}

/**
 * Client options (`credentials`, `token`) for calling the local services as
 * `claims`: the token lives an hour, or GRPC_AUTH_MAX_TOKEN_TTL if that is
 * shorter, and is renewed before it expires. Throws a ConfigError naming
 * GRPC_INSECURE or GRPC_AUTH when the services would refuse its value; a
 * key that cannot be read, or a bad GRPC_AUTH_MAX_TOKEN_TTL, fails the call
 * that needs the token.
 */
export function toolClientSecurity(claims: TokenClaims, env: NodeJS.ProcessEnv = process.env): { credentials?: ChannelCredentials; token?: () => Promise<string> } {
  // Read as the services read them: GRPC_INSECURE=true was taken for TLS and GRPC_AUTH=None for tokens, saying nothing.
  const { GRPC_INSECURE, GRPC_AUTH } = grpcSecuritySettings("tool");
  const { GRPC_INSECURE: insecure, GRPC_AUTH: auth } = readConfig({ GRPC_INSECURE, GRPC_AUTH }, env);
  const tls = (() => {
    if (insecure === "1") return undefined;
    const certFile = join(dataDir(env), "tls", "client.pem");
    const keyFile = join(dataDir(env), "tls", "client-key.pem");
    const own = existsSync(certFile) && existsSync(keyFile) ? { certFile, keyFile } : {};
    const caFile = env.GRPC_TLS_CA || join(dataDir(env), "tls", "ca.pem");
    if (!env.GRPC_TLS_CA && !existsSync(caFile)) {
      throw new Error(`no TLS CA certificate at ${caFile}: \`npm start\` makes one in its DATA_DIR when it first starts; start it, or set DATA_DIR to the directory it uses`);
    }
    return clientTlsCredentials({ caFile, ...own });
  })();
  let renewing: (() => Promise<string>) | undefined;
  const token = async () => {
    // Made at the first call, so a tool that sends no token reads neither the key nor the setting.
    renewing ??= renewingToken((ttl) => localToken(claims, ttl, env), Math.min(toolTokenTtlSeconds, Math.floor(maxTokenTtlMs(env) / 1000)));
    return renewing();
  };
  return {
    ...(tls && { credentials: tls }),
    ...(auth !== "none" && { token }),
  };
}

/**
 * Why a call found no server, without grpc-js's wrapping: "connect
 * ECONNREFUSED 127.0.0.1:1" rather than "No connection established. Last
 * error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ", the
 * innermost of the errors grpc-js nests so ("round_robin: No connection
 * established. Last error: No connection established. Last error: ...").
 */
export function whyUnreachable(err: Error): string {
  const details = (err as { details?: string }).details || err.message;
  const last = /.*Last error: (?:Error: )?(.*?)\.?(?: Resolution note: (.*))?$/.exec(details);
  if (!last) return details.replace(/^(?:round_robin|pick_first): /, "");
  const note = last[2]?.trim();
  return note ? `${last[1]} (${note})` : last[1];
}

/**
 * Whether a failed call's error is grpc-js's own, the client's, for a call
 * that got no answer from the server (none reached, the connection lost),
 * rather than a status the server answered with, whose message is its own.
 */
export function noAnswer(err: Error): boolean {
  const details = (err as { details?: string }).details || err.message;
  return /^(?:(?:round_robin|pick_first): )?(?:No connection established|Name resolution failed|Connection dropped|Received RST_STREAM|Stream refused by server|Failed to start call)/.test(details);
}
