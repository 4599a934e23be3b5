import { lstatSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

/** The folders under DATA_DIR that hold secrets: the token key, the development CA's and certificates' keys, the given TLS files, the NATS seeds. */
const secretFolders = ["auth", "tls", "tls-given", "nats-credentials"];

/** What lies directly in DATA_DIR that another account owns by design: PostgreSQL's data, the postgres user's when root runs it. */
const ownedByOthers = new Set(["postgres"]);

/** A path under DATA_DIR and the user that owns it, neither this process's nor root. */
export interface ForeignEntry {
  readonly path: string;
  readonly uid: number;
}

/**
 * What in `dataDir` a user other than `uid` and root owns: DATA_DIR itself
 * (the directory a symbolic link there leads to), what lies directly in it
 * (but `postgres`), and what lies in its folders of secrets, each as it is
 * and, for a symbolic link, where it leads. Its owner could have put there
 * a token key, a NATS seed or a CA key of its own, which a start would take
 * and use, or replace them at will: running as root, a start on a DATA_DIR
 * another user made took that user's token key, and the user then signed
 * itself admin tokens. Empty where there are no uids (Windows); throws what
 * reading the directories throws but ENOENT.
 */
export function foreignOwned(dataDir: string, uid: number | undefined = process.getuid?.()): ForeignEntry[] {
  if (uid === undefined) return [];
  const found: ForeignEntry[] = [];
  const check = (path: string, follow: boolean): void => {
    const stats = follow ? statSync(path, { throwIfNoEntry: false }) : lstatSync(path, { throwIfNoEntry: false });
    if (stats && stats.uid !== uid && stats.uid !== 0) return void found.push({ path, uid: stats.uid });
    if (!follow && stats?.isSymbolicLink()) check(path, true);
  };
  check(dataDir, true);
  if (found.length > 0) return found;
  for (const name of readdirSync(dataDir)) {
    if (!ownedByOthers.has(name)) check(join(dataDir, name), false);
  }
  for (const folder of secretFolders) {
    const dir = join(dataDir, folder);
    if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) continue;
    for (const name of readdirSync(dir)) check(join(dir, name), false);
  }
  return found;
}
