import { closeSync, constants, fstatSync, openSync, readFileSync, statSync, type Stats } from "node:fs";

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
  return readSettingFileAndStats(path, maxBytes).bytes;
}

/**
 * readSettingFile's bytes with the file's Stats as the descriptor it read
 * them through has them: what settingFileExposure checks is then the file
 * that was read, with no second look at the path.
 */
export function readSettingFileAndStats(path: string, maxBytes: number): { readonly bytes: Buffer; readonly stats: Stats } {
  // Non-blocking, so that opening a FIFO returns at once rather than waiting for a writer.
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stats = fstatSync(fd);
    const kind = notRegularFile(stats);
    if (kind) throw new Error(`it is ${kind}, not a regular file`);
    if (stats.size > maxBytes) throw new Error(`it holds ${stats.size} bytes, more than such a file does (at most ${maxBytes})`);
    return { bytes: readFileSync(fd), stats };
  } finally {
    closeSync(fd);
  }
}

/**
 * Who besides its owner may touch a file a setting names: nobody, for a
 * "secret" (a private key, a NATS seed); anyone may read a "public" one (a
 * certificate, a CA, public keys), but nobody write it.
 */
export type SettingFileSecrecy = "secret" | "public";

/**
 * Why the file at `path`, `what` it is ("the TLS key"), may not be taken:
 * a secret others than its owner may read or write (see
 * settingFileModeExposure for a group's), a public file they may
 * write, or either owned by another user than this process's and root, who
 * may know the secret or change the file. `risk` says what they could then
 * do ("sign tokens of every role" with a secret, "add a key of theirs ..."
 * to a public file). One line naming the file and what to do; undefined
 * when it may be taken, or is not there (reading it says so). `found`, the
 * Stats of the file as read (readSettingFileAndStats), spares a look at
 * the path, which may name another file by then.
 */
export function settingFileExposure(path: string, what: string, secrecy: SettingFileSecrecy, risk: string, found?: Stats): string | undefined {
  const stats = found ?? statSync(path, { throwIfNoEntry: false });
  if (stats === undefined) return undefined;
  const exposed = settingFileModeExposure(path, what, secrecy, risk, stats);
  if (exposed !== undefined) return exposed;
  // Run as root, a service took a key file of mode 0600 that another user had written, and so knew: that user signed itself admin tokens.
  const me = process.getuid?.();
  if (me === undefined || stats.uid === me || stats.uid === 0) return undefined;
  const theirs = `${what} ${path} is owned by uid ${stats.uid}, not by this user (uid ${me}) or root`;
  return secrecy === "secret" ? `${theirs}: its owner may know it, and ${risk} with it; make one of this user's own` : `${theirs}, who could ${risk}; give the file to this user or root`;
}

/**
 * settingFileExposure's refusal of the file's mode alone, the file as
 * `stats` has it: a secret others than its owner may read or write (but
 * for its group, read-only, when root owns it and the group is one of this
 * process's), a public file they may write. For the tools, which only connect with what
 * they read: a file another user owns gives them no more than its user's
 * rights, and `sudo npx concord` reads seeds of the user who started the
 * system.
 */
export function settingFileModeExposure(path: string, what: string, secrecy: SettingFileSecrecy, risk: string, stats: Stats): string | undefined {
  const mode = (stats.mode & 0o777).toString(8);
  if (secrecy === "secret" && (stats.mode & 0o077) !== 0 && !readByOwnGroupAlone(stats)) {
    return `${what} ${path} is ${(stats.mode & 0o044) !== 0 ? "readable" : "writable"} by others (mode ${mode}), who could ${risk} with it; chmod 600 it`;
  }
  if (secrecy === "public" && (stats.mode & 0o022) !== 0) return `${what} ${path} may be written by others (mode ${mode}), who could ${risk}; chmod go-w it`;
  return undefined;
}

/**
 * Whether a secret's only reader besides its owner is its group, read-only,
 * the owner root and the group one of this process's: Kubernetes mounts a
 * secret so (root:fsGroup, mode 0440, whatever defaultMode says, with
 * fsGroup set), which a process other than root can read through no other
 * bit. PostgreSQL takes its key so too (0640 at most when root owns it).
 */
function readByOwnGroupAlone(stats: Stats): boolean {
  if ((stats.mode & 0o077) !== 0o040 || stats.uid !== 0) return false;
  const groups = [...(process.getgroups?.() ?? []), process.getegid?.()];
  return groups.includes(stats.gid);
}
