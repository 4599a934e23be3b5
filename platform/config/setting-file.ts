import { closeSync, constants, fstatSync, openSync, readFileSync } from "node:fs";

/**
 * The bytes of a file a setting or an option names (a key, a certificate, a
 * NATS seed), which holds at most `maxBytes`: a FIFO named by mistake was
 * waited on for ever, and `/dev/zero` read until memory ran out (1.2 GB in
 * 6 s). Throws what opening or reading throws (ENOENT, EISDIR, EACCES), or an
 * Error saying the file is no regular file or is larger, without its path,
 * which the caller's message names.
 */
export function readSettingFile(path: string, maxBytes: number): Buffer {
  // Non-blocking, so that opening a FIFO returns at once rather than waiting for a writer.
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const found = fstatSync(fd);
    // A directory is left to the read, which says EISDIR as before.
    if (!found.isFile() && !found.isDirectory()) throw new Error("it is no regular file (a FIFO, a socket or a device)");
    if (found.size > maxBytes) throw new Error(`it holds ${found.size} bytes, more than such a file does (at most ${maxBytes})`);
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}
