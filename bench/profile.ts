/**
 * Reads a V8 CPU profile (from `npm run bench -- --profile`, or any
 * `node --cpu-prof`) and prints where the time went: self time by module and
 * by function, and inclusive time of the repository's own functions.
 *
 *   npx tsx bench/profile.ts <file.cpuprofile | profile dir> [--top N] [--grep REGEX]
 */
import { statSync } from "node:fs";
import { formatProfile, profileOf, summariseProfile } from "./lib/cpuprofile.js";

const args = process.argv.slice(2);
if (args.length === 0 || args.includes("--help")) {
  console.log("Usage: npx tsx bench/profile.ts <file.cpuprofile | directory> [--top N] [--grep REGEX]\n\n--grep limits the inclusive list to functions whose name or file matches (default: repository code, platform/ services/ gen/).");
  process.exit(args.length === 0 ? 2 : 0);
}
const at = (flag: string) => (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined);
const target = args[0];
const file = statSync(target).isDirectory() ? profileOf(target) : target;
const pattern = new RegExp(at("--grep") ?? "(platform|services|gen)/");
console.log(formatProfile("CPU profile", summariseProfile(file, Number(at("--top") ?? 25), (name) => pattern.test(name))));
