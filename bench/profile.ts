/**
 * Reads a V8 CPU profile (from `npm run bench -- --profile`, or any
 * `node --cpu-prof`) and prints where the time went: self time by module and
 * by function, and inclusive time of the repository's own functions.
 *
 *   npx tsx bench/profile.ts <file.cpuprofile | profile dir> [--top N] [--grep REGEX]
 *
 * A wrong command line (an unknown flag, a --top that is not a whole number,
 * a --grep that is not a regular expression, a file that cannot be read) is
 * one line on standard error and exit status 2.
 */
import { statSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseArgsProblem } from "../tools/parse-args-problem.js";
import { formatProfile, profileOf, summariseProfile } from "./lib/cpuprofile.js";

const usage =
  "Usage: npx tsx bench/profile.ts <file.cpuprofile | directory> [--top N] [--grep REGEX]\n\n" +
  "A directory is read for its main thread's profile. --top is how many functions each list shows (default 25);\n" +
  "--grep limits the inclusive list to functions whose name or file matches (default: repository code, platform/ services/ gen/).";

const options = { top: { type: "string" }, grep: { type: "string" }, help: { type: "boolean" } } as const;

/** Exits 2 with `problem` as the one line on standard error. */
function refuse(problem: string): never {
  console.error(`profile: ${problem} (\`npx tsx bench/profile.ts --help\` shows the usage)`);
  process.exit(2);
}

let parsed: ReturnType<typeof parseArgs<{ options: typeof options; allowPositionals: true; strict: true }>>;
try {
  parsed = parseArgs({ args: process.argv.slice(2), options, allowPositionals: true, strict: true });
} catch (err) {
  refuse(parseArgsProblem(err, Object.keys(options)));
}
const { values, positionals } = parsed;
if (values.help) {
  console.log(usage);
  process.exit(0);
}
if (positionals.length !== 1) refuse(positionals.length === 0 ? "name a .cpuprofile file or a directory of them" : `one profile at a time, got ${positionals.length}`);
const top = values.top ?? "25";
if (!/^[1-9]\d{0,5}$/.test(top)) refuse(`--top takes a whole number from 1 to 999999, got ${JSON.stringify(top)}`);
let pattern: RegExp;
try {
  pattern = new RegExp(values.grep ?? "(platform|services|gen)/");
} catch (err) {
  refuse(`--grep: ${(err as Error).message}`);
}
let file: string;
try {
  const target = positionals[0]!;
  file = statSync(target).isDirectory() ? profileOf(target) : target;
  console.log(formatProfile("CPU profile", summariseProfile(file, Number(top), (name) => pattern.test(name))));
} catch (err) {
  // A file read well that is not a profile fails inside the summary, as JSON that will not parse or lacks its nodes.
  const notAProfile = err instanceof SyntaxError || err instanceof TypeError;
  refuse(notAProfile ? `${positionals[0]} is not a V8 CPU profile (as node --cpu-prof writes): ${(err as Error).message}` : (err as Error).message);
}
