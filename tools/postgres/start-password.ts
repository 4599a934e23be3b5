import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Where `npm start -- --postgres` keeps the superuser's password of its PostgreSQL server: `DATA_DIR/auth/postgres-password`. */
export function postgresPasswordFile(dataDir: string): string {
  return join(dataDir, "auth", "postgres-password");
}

/**
 * The password of the PostgreSQL server `npm start -- --postgres` runs on
 * `dataDir`, made on first use (32 random bytes as hex, mode 0600, in the
 * 0700 `auth` folder) and kept. Throws what reading or writing throws.
 */
export function ensurePostgresPassword(dataDir: string): string {
  const known = readPostgresPassword(dataDir);
  if (known !== undefined) return known;
  mkdirSync(join(dataDir, "auth"), { recursive: true, mode: 0o700 });
  const password = randomBytes(32).toString("hex");
  writeFileSync(postgresPasswordFile(dataDir), `${password}\n`, { mode: 0o600, flag: "wx" });
  return password;
}

/** The password `ensurePostgresPassword` keeps for `dataDir`, or undefined when there is none (or it cannot be read). */
export function readPostgresPassword(dataDir: string): string | undefined {
  try {
    const text = readFileSync(postgresPasswordFile(dataDir), "utf8").trim();
    return /^[0-9a-f]{64}$/.test(text) ? text : undefined;
  } catch {
    return undefined;
  }
}
