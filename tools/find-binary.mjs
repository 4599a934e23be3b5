import { existsSync } from "node:fs";
import { join } from "node:path";

/** Full path of a command on PATH or in the sbin directories Debian puts daemons in; undefined when absent. */
export function findBinary(name) {
  for (const dir of [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/local/sbin", "/sbin"]) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}
