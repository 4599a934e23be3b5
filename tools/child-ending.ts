/**
 * How `npm start` (tools/start.ts) says a child of its ended when nothing
 * asked it to.
 */

/**
 * What ended a child: "code 1", "killed by SIGKILL", or, for one that could
 * not be spawned at all (its command missing, say), the spawn error's
 * message ("spawn /usr/bin/node ENOENT").
 */
export function childEnding(code: number | null, signal: NodeJS.Signals | null, spawnError?: Error): string {
  if (spawnError) return spawnError.message;
  return signal ? `killed by ${signal}` : `code ${code}`;
}

/**
 * The line said when child `name` ended (`how`, from `childEnding`) and
 * everything stops for it; `said` is what its log said of why, with where
 * ("its log (DATA_DIR/nats-server.log) says ..."), when known.
 */
export function unexpectedEndLine(name: string, how: string, spawned: boolean, said?: string): string {
  if (!spawned) return `start: ${name} could not be started (${how}); stopping everything`;
  return `start: ${name} exited unexpectedly (${how})${said ? `; ${said}` : ""}; stopping everything`;
}
