import { closeSync, constants, fstatSync, openSync, readFileSync, type Stats } from "node:fs";

/**
 * What a path's `stats` say it is when it is no regular file (`a character
 * device`, `a FIFO`, `a directory`), for a message that says so; undefined
 * for a regular file.
 */
export function notRegularFile(stats: Stats): string | undefined {
  if (stats.isFile()) return undefined;
  if (stats.isDirectory()) return "a directory";
  if (stats.isCharacterDevice()) return "a character device";
  if (stats.isBlockDevice()) return "a block device";
  if (stats.isFIFO()) return "a FIFO";
  if (stats.isSocket()) return "a socket";
  return "no regular file";
}

/**
 * The bytes of a file a setting or an option names (a key, a certificate, a
 * NATS seed), which holds at most `maxBytes`: a FIFO named by mistake was
 * waited on for ever, and `/dev/zero` read until memory ran out (1.2 GB in
 * 6 s). Throws what opening or reading throws (ENOENT, EACCES), or an
 * Error saying what the file is when it is no regular file (`it is a
 * character device, not a regular file`, `it is a directory, ...`) or that it is larger, without its
 * path, which the caller's message names.
 */
export function readSettingFile(path: string, maxBytes: number): Buffer {
  // Non-blocking, so that opening a FIFO returns at once rather than waiting for a writer.
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const found = fstatSync(fd);
    const kind = notRegularFile(found);
    if (kind) throw new Error(`it is ${kind}, not a regular file`);
    if (found.size > maxBytes) throw new Error(`it holds ${found.size} bytes, more than such a file does (at most ${maxBytes})`);
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}
