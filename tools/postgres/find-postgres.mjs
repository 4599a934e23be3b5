// Where the PostgreSQL server programs are. Plain Node, no dependencies:
// tools/setup.mjs uses it before node_modules exists.
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { findBinary } from "../find-binary.mjs";

/** Where Debian's postgresql-<major> packages put their programs: <root>/<major>/bin. */
export const debianPostgresRoot = "/usr/lib/postgresql";

/**
 * The directory holding `initdb` and `postgres`: the newest major version under
 * Debian's /usr/lib/postgresql/<major>/bin (a client-only package such as
 * postgresql-client-16 has a bin directory without them, and is skipped), else
 * the directory of `initdb` on PATH when `postgres` sits beside it. Undefined
 * when the server is not installed.
 */
export function findPostgresBinDir(root = debianPostgresRoot) {
  const majors = existsSync(root) ? readdirSync(root).filter((name) => /^\d+(\.\d+)?$/.test(name)) : [];
  majors.sort((a, b) => Number(b) - Number(a)); // numerically: 9.6 is older than 15
  for (const major of majors) {
    const bin = join(root, major, "bin");
    if (hasServer(bin)) return bin;
  }
  const initdb = findBinary("initdb");
  return initdb && hasServer(dirname(initdb)) ? dirname(initdb) : undefined;
}

function hasServer(bin) {
  return existsSync(join(bin, "initdb")) && existsSync(join(bin, "postgres"));
}
