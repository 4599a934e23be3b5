import { existsSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

/**
 * Every file below `dir`, as sorted paths relative to it; [] when `dir` does
 * not exist. Python's `__pycache__` folders are skipped: bytecode a Python
 * run leaves behind is never generated output.
 */
export function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) {
        if (name !== "__pycache__") walk(p);
      } else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out;
}
