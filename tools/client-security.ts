/**
 * How the command-line tools reach the services `npm start` runs: TLS that
 * trusts the development CA (DATA_DIR/tls/ca.pem, or GRPC_TLS_CA),
 * presenting DATA_DIR/tls/client.pem when it exists (for servers that
 * require client certificates), and a bearer token signed with the local
 * key (DATA_DIR/auth/token-hs256.key, or GRPC_AUTH_KEY_FILE). GRPC_INSECURE=1
 * and GRPC_AUTH=none turn each off, as they do for the services.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { ChannelCredentials } from "@grpc/grpc-js";
import { readTokenSecret, signToken, type TokenClaims } from "../platform/auth/index.js";
import { clientTlsCredentials } from "../platform/grpc/index.js";
import { repoRoot } from "./repo-root.js";

/** DATA_DIR as `npm start` reads it. */
export const dataDir = (env: NodeJS.ProcessEnv = process.env): string => env.DATA_DIR || join(repoRoot, ".data");

/** The token key file the services use. */
export const tokenKeyFile = (env: NodeJS.ProcessEnv = process.env): string => env.GRPC_AUTH_KEY_FILE || join(dataDir(env), "auth", "token-hs256.key");

/** Signs a token with the local key; throws naming the key file when it cannot be read. */
export function localToken(claims: TokenClaims, ttlSeconds: number, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return signToken(readTokenSecret(tokenKeyFile(env)), claims, ttlSeconds);
}

/** Client options (`credentials`, `token`) for calling the local services as `claims`. */
export function toolClientSecurity(claims: TokenClaims, env: NodeJS.ProcessEnv = process.env): { credentials?: ChannelCredentials; token?: () => Promise<string> } {
  const tls = (() => {
    if (env.GRPC_INSECURE === "1") return undefined;
    const certFile = join(dataDir(env), "tls", "client.pem");
    const keyFile = join(dataDir(env), "tls", "client-key.pem");
    const own = existsSync(certFile) && existsSync(keyFile) ? { certFile, keyFile } : {};
    const caFile = env.GRPC_TLS_CA || join(dataDir(env), "tls", "ca.pem");
    if (!env.GRPC_TLS_CA && !existsSync(caFile)) {
      throw new Error(`no TLS CA certificate at ${caFile}: \`npm start\` makes one in its DATA_DIR when it first starts; start it, or set DATA_DIR to the directory it uses`);
    }
    return clientTlsCredentials({ caFile, ...own });
  })();
  let token: Promise<string> | undefined;
  return {
    ...(tls && { credentials: tls }),
    ...(env.GRPC_AUTH !== "none" && { token: () => (token ??= localToken(claims, 3600, env)) }),
  };
}
