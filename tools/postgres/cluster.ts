/**
 * A PostgreSQL cluster's directory and the account its server runs as.
 * `initdb` and `postgres` refuse to run as root, so when this process is root
 * both run as the `postgres` user that Debian's postgresql package creates,
 * with the data directory owned by it; otherwise as the current user.
 */
import { chownSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { execFileSync, spawnSync } from "node:child_process";
import { join } from "node:path";

/** The superuser initdb creates; it is also the role in every URL we hand out. */
export const superuser = "postgres";

/** The user and group a server runs as, when it is not this process's own. */
export interface ServerAccount {
  readonly uid: number;
  readonly gid: number;
}

/**
 * The `postgres` user when this process is root, else undefined (the current
 * user). Node's spawn switches user and group (dropping root's supplementary
 * groups) in the child right before exec, as setpriv does, so the pid we hold
 * is the server itself and our signals reach it; runuser and su fork and stay
 * in between, and a SIGKILL to them would leave the server running.
 */
export function serverAccount(): ServerAccount | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const id = (flag: string) => Number(execFileSync("id", [flag, superuser], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim());
    return { uid: id("-u"), gid: id("-g") };
  } catch {
    throw new Error(
      "running as root, but there is no postgres user to run the server as (initdb and postgres refuse to run as root); Debian's postgresql package creates it: apt-get install -y postgresql",
    );
  }
}

/** Spawn options that run a child as `account` (nothing when undefined). */
export function runAs(account: ServerAccount | undefined): { uid?: number; gid?: number } {
  return account ? { uid: account.uid, gid: account.gid } : {};
}

/**
 * Makes `dataDir` a directory the server's account owns and can reach: new or
 * empty (initdb fills it) or holding a cluster (PG_VERSION). Anything else is
 * refused before anything is written in it.
 */
export function prepareDataDir(dataDir: string, account: ServerAccount | undefined): void {
  if (existsSync(dataDir)) {
    if (!statSync(dataDir).isDirectory()) throw new Error(`postgres data dir ${dataDir} is not a directory`);
    const entries = readdirSync(dataDir);
    if (entries.length > 0 && !entries.includes("PG_VERSION")) {
      throw new Error(`postgres data dir ${dataDir} is neither empty nor a PostgreSQL data directory (no PG_VERSION); give an empty or new directory`);
    }
  } else {
    mkdirSync(dataDir, { recursive: true }); // initdb narrows it to 0700; the parents stay open for the postgres user
  }
  if (!account) return;
  const owner = statSync(dataDir).uid;
  if (owner !== account.uid) {
    if (readdirSync(dataDir).length > 0) {
      throw new Error(`postgres data dir ${dataDir} holds a cluster owned by uid ${owner}, not by the postgres user the server runs as; chown -R postgres: ${dataDir}`);
    }
    chownSync(dataDir, account.uid, account.gid);
  }
  // Every directory above it must let the postgres user through; a clone under /root does not.
  if (spawnSync("test", ["-w", dataDir, "-a", "-x", dataDir], runAs(account)).status !== 0) {
    throw new Error(`the postgres user (the server runs as it, as this is root) cannot reach ${dataDir}: a directory above it is closed to other users; use a data dir elsewhere, e.g. under /var/tmp`);
  }
}

/** Whether `dataDir` already holds a cluster. */
export function hasCluster(dataDir: string): boolean {
  return existsSync(join(dataDir, "PG_VERSION"));
}

/**
 * Runs initdb in `dataDir` (empty, prepared): superuser `postgres`, trust
 * authentication on the socket and on loopback TCP, UTF8 with the C locale,
 * so the cluster is the same on every machine whatever LANG says (or whether
 * that locale is generated there). `sync: false` skips flushing the new
 * files to disk, for a throwaway cluster. Fails with initdb's own output.
 */
export function initCluster(binDir: string, dataDir: string, account: ServerAccount | undefined, sync: boolean): void {
  const args = ["-D", dataDir, "-U", superuser, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"];
  if (!sync) args.push("--no-sync");
  const result = spawnSync(join(binDir, "initdb"), args, { cwd: dataDir, encoding: "utf8", ...runAs(account) });
  if (result.status !== 0) {
    const why = result.error ? result.error.message : `exit status ${result.status ?? result.signal}`;
    throw new Error(`initdb in ${dataDir} failed (${why}); its output:\n${`${result.stdout ?? ""}${result.stderr ?? ""}`.trim()}`);
  }
}

/** Database names we create: plain lower-case identifiers, so quoting one as "name" is always right. */
export function checkDatabaseName(name: string): void {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) {
    throw new Error(`database name ${JSON.stringify(name)} is not a lower-case identifier of 1 to 63 letters, digits and _ (starting with a letter or _)`);
  }
}

/**
 * Has TCP connections to the cluster in `dataDir` give `password` (hex), the
 * superuser's from now on, by scram-sha-256: initdb's trust let every user
 * of the machine in over 127.0.0.1 as the superuser, to read and change
 * every service's data and, as superuser, run programs as the server's
 * account (`COPY ... TO PROGRAM`). The Unix socket, in the data directory
 * that only the server's account (and root) may enter, keeps trust.
 * Rewrites pg_hba.conf and sets the password in single-user mode, so run it
 * with the server stopped; fails with the server's own output.
 */
export function requirePassword(binDir: string, dataDir: string, account: ServerAccount | undefined, password: string): void {
  if (!/^[0-9a-f]{32,}$/.test(password)) throw new Error("requirePassword: the password must be 32 or more lower-case hex digits");
  const hba = join(dataDir, "pg_hba.conf");
  writeFileSync(
    hba,
    "# Written at every start of this server by Concord's npm start: the superuser's password over TCP, trust on the\n" +
      "# Unix socket in the data directory, which only the server's account may enter.\n" +
      "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    { mode: 0o600 },
  );
  if (account) chownSync(hba, account.uid, account.gid);
  const args = ["--single", "-D", dataDir, "-c", "listen_addresses=", "-c", "unix_socket_directories=", "-c", "password_encryption=scram-sha-256", "postgres"];
  // On standard input, not in the arguments every user may read in the process list.
  const result = spawnSync(join(binDir, "postgres"), args, { cwd: dataDir, input: `ALTER ROLE ${superuser} PASSWORD '${password}';\n`, encoding: "utf8", ...runAs(account) });
  const output = `${result.stdout ?? ""}${result.stderr ?? ""}`;
  if (result.status !== 0 || /\bERROR:/.test(output)) {
    const why = result.error ? result.error.message : `exit status ${result.status ?? result.signal}`;
    throw new Error(`setting the superuser's password of the PostgreSQL cluster in ${dataDir} failed (${why}); its output:\n${output.trim()}`);
  }
}
