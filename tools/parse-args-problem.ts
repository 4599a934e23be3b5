import { type ParseArgsConfig, parseArgs } from "node:util";
/**
 * What node:util's parseArgs refused, said for a person at a terminal. With
 * positionals allowed, its unknown-option error goes on about putting a
 * positional after `--` (`Unknown option '--typ'. To specify a positional
 * argument starting with a '-', place it at the end of the command after
 * '--', as in '-- "--typ"`), which a mistyped option never needs.
 */

/**
 * The message for `err`, thrown by parseArgs given `options`: an unknown option
 * is named, with the option it most likely meant. `elsewhere` maps an option of
 * other subcommands to their command lines (one, or several said in the order
 * given), so that such an option, given to the wrong one, is told where it
 * belongs, and one mistyped too, when none of `options` is close to it.
 */
export function parseArgsProblem(err: unknown, options: readonly string[], elsewhere: Readonly<Record<string, string | readonly string[]>> = {}): string {
  const message = err instanceof Error ? err.message : String(err);
  // `--recent -5`: node says it in three lines; one does.
  const ambiguous = /^Option '(--[^']*)' argument is ambiguous\./.exec(message)?.[1];
  if (ambiguous !== undefined) return `${ambiguous} takes a value, and one that starts with a dash is written ${ambiguous}=-VALUE`;
  if ((err as { code?: unknown })?.code !== "ERR_PARSE_ARGS_UNKNOWN_OPTION") return message;
  const given = /^Unknown option '([^']*)'/.exec(message)?.[1];
  if (given === undefined) return message;
  const name = given.replace(/^-+/, "").split("=")[0]!;
  if (given.startsWith("--") && Object.hasOwn(elsewhere, name)) return `--${name} is an option of ${commandsOf(elsewhere[name]!)}`;
  const meant = likelyMeant(name, options);
  if (meant !== undefined) return `unknown option ${given}; did you mean --${meant}?`;
  // Mistyped and given to another command (`dlq list --inbox-retension`): the option meant, and where it belongs.
  const meantElsewhere = given.startsWith("--") ? likelyMeant(name, Object.keys(elsewhere)) : undefined;
  if (meantElsewhere !== undefined) return `unknown option ${given}; did you mean --${meantElsewhere}, an option of ${commandsOf(elsewhere[meantElsewhere]!)}?`;
  return `unknown option ${given}`;
}

/** Command lines as a message lists them: each in backquotes, the last after "and". */
function commandsOf(lines: string | readonly string[]): string {
  const quoted = ([] as string[]).concat(lines).map((line) => `\`${line}\``);
  return quoted.length > 1 ? `${quoted.slice(0, -1).join(", ")} and ${quoted.at(-1)}` : quoted[0]!;
}

/**
 * For each option of the commands in `table` that `skip` does not pick, the
 * command lines of the commands that take it, in the table's order: the
 * first in full (`program` and the command), the rest without the program.
 * What `parseArgsProblem` takes as `elsewhere`.
 */
export function optionsElsewhere(table: Readonly<Record<string, NonNullable<ParseArgsConfig["options"]>>>, program: string, skip: (command: string) => boolean): Record<string, string[]> {
  const lines: Record<string, string[]> = {};
  for (const [command, options] of Object.entries(table)) {
    if (skip(command)) continue;
    for (const name of Object.keys(options)) (lines[name] ??= []).push(lines[name].length === 0 ? `${program} ${command}` : command);
  }
  return lines;
}

/** The one option `given` differs from by a letter or two, or that it begins or ends a longer name of; none when several or none are that close. */
function likelyMeant(given: string, options: readonly string[]): string | undefined {
  if (given.length < 2) return undefined;
  const close = options.filter((o) => o !== given && (editDistance(given, o) <= (o.length > 4 ? 2 : 1) || o.startsWith(given) || given.startsWith(o)));
  return close.length === 1 ? close[0] : undefined;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * The problem of a database option given an empty value (`--database ""`),
 * which the tools took for none (an unknown service) or for a file of no
 * name; undefined when none of `names` is empty.
 */
export function emptyDatabaseOption(values: Readonly<Record<string, unknown>>, names: readonly string[]): string | undefined {
  const empty = names.find((name) => values[name] === "");
  return empty === undefined ? undefined : `--${empty} is empty: name the database's file or its postgres:// URL`;
}

/**
 * Bad usage said in one line, as `concord` says it: `<program>: <problem>` and
 * the command that prints the usage, rather than the whole usage, which hid
 * the problem above a screenful.
 */
export function usageProblemLine(program: string, problem: string, helpCommand: string): string {
  return `${program}: ${problem} (\`${helpCommand}\` shows the usage)`;
}

/**
 * parseArgs for a tool's command line: what it refuses is printed in one line
 * (`usageProblemLine`, naming `helpCommand`), and the exit code set to 2;
 * undefined then, for the caller to return.
 */
export function toolArgs<T extends ParseArgsConfig>(program: string, config: T, helpCommand: string): ReturnType<typeof parseArgs<T>> | undefined {
  try {
    return parseArgs(config);
  } catch (err) {
    console.error(usageProblemLine(program, parseArgsProblem(err, Object.keys(config.options ?? {})), helpCommand));
    process.exitCode = 2;
    return undefined;
  }
}
