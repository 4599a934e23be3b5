import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { DescFile } from "@bufbuild/protobuf";
import { expect } from "vitest";
import { repoRoot } from "../../tools/repo-root.js";
import { buildImage } from "../../tools/contracts/image.js";
import { loadImageFiles } from "../../tools/contracts/sdk-manifest.js";

/**
 * For the tests of the checks of `npm run breaking`: copies of proto/ with
 * some files edited, and the files of a contracts folder's image, all under
 * `dir`.
 */
export function contractEditor(dir: string): { edited: (edits: Record<string, (text: string) => string>) => string; filesOf: (protoDir: string) => DescFile[] } {
  let n = 0;
  return {
    /** A copy of proto/ with each file of `edits` edited; each edit must change its file. */
    edited: (edits) => {
      const copy = join(dir, `proto-${n++}`);
      cpSync(join(repoRoot, "proto"), copy, { recursive: true });
      for (const [file, edit] of Object.entries(edits)) {
        const text = readFileSync(join(copy, file), "utf8");
        const changed = edit(text);
        expect(changed, `the edit of ${file} changes it`).not.toBe(text);
        writeFileSync(join(copy, file), changed);
      }
      return copy;
    },
    filesOf: (protoDir) => {
      const image = join(dir, `image-${n++}.binpb`);
      buildImage(protoDir, image);
      return loadImageFiles(readFileSync(image));
    },
  };
}

/** The text of `file` of proto/. */
export const protoText = (file: string): string => readFileSync(join(repoRoot, "proto", file), "utf8");

/** The line (from 1) of `snippet` in `text` (proto/'s `file` when a path), where it must occur once. */
export const lineOf = (text: string, snippet: string): number => {
  const source = text.endsWith(".proto") ? protoText(text) : text;
  const at = source.indexOf(snippet);
  expect(at, `${JSON.stringify(snippet)} is in the text`).toBeGreaterThanOrEqual(0);
  expect(source.indexOf(snippet, at + 1), `${JSON.stringify(snippet)} is in the text once`).toBe(-1);
  return source.slice(0, at).split("\n").length;
};
