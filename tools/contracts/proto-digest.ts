/**
 * What `npm run gen` generated from: the SHA-256 of each contract file in
 * proto/, written to gen/proto.sha256 (`sha256sum`'s format, paths relative
 * to proto/), so that `npm start` can tell, without generating anything,
 * that a contract was edited and gen/ not made again from it.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { protoFiles } from "./image.js";

/** The digest file's name in gen/. */
export const protoDigestFile = "proto.sha256";

/**
 * The digest of each contract file of `protoDir`, by its path there, in path
 * order. Line ends are read as `\n`, so a checkout that writes `\r\n` digests
 * as any other and gen/ stays the same on every machine.
 */
export function protoDigests(protoDir: string): Map<string, string> {
  return new Map(protoFiles(protoDir).map((file) => [file, createHash("sha256").update(readFileSync(join(protoDir, file), "utf8").replaceAll("\r\n", "\n")).digest("hex")]));
}

/** The digest file's text: a line `<sha256>  <file>` per contract file. */
export function protoDigestText(digests: ReadonlyMap<string, string>): string {
  return [...digests].map(([file, digest]) => `${digest}  ${file}\n`).join("");
}

/**
 * The contract files of `protoDir` that differ from what `digestPath` records
 * (each with "(changed)", "(added)" or "(removed)"), in path order; empty
 * when they match. A missing digest file is named itself.
 */
export function contractsChangedSinceGen(protoDir: string, digestPath: string): string[] {
  if (!existsSync(digestPath)) return [`${protoDigestFile} (missing from gen/)`];
  const recorded = new Map(
    readFileSync(digestPath, "utf8")
      // A checkout that writes \r\n writes this file so too: its paths would end with \r, and none would match.
      .split(/\r?\n/)
      .filter((line) => line !== "")
      .map((line) => {
        const at = line.indexOf("  ");
        return [line.slice(at + 2), line.slice(0, at)] as const;
      }),
  );
  const now = protoDigests(protoDir);
  const changed: string[] = [];
  for (const file of [...new Set([...recorded.keys(), ...now.keys()])].sort()) {
    if (!now.has(file)) changed.push(`${file} (removed)`);
    else if (!recorded.has(file)) changed.push(`${file} (added)`);
    else if (recorded.get(file) !== now.get(file)) changed.push(`${file} (changed)`);
  }
  return changed;
}
