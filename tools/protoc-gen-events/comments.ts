/**
 * Proto comments, which are the API documentation, carried over to the doc
 * comments of the generated exports.
 */
import type { DescFile, DescMessage, DescService } from "@bufbuild/protobuf";
import { getComments } from "@bufbuild/protoplugin";

/** The leading comment of a message or service, or "" when it has none. */
export function leadingComment(desc: DescMessage | DescService): string {
  return normalize(getComments(desc).leading);
}

/**
 * The leading comment of the source element at `path` (a SourceCodeInfo
 * path, for options such as `[8, 51001]`), or "" when there is none.
 */
export function commentAt(file: DescFile, path: readonly number[]): string {
  const location = file.proto.sourceCodeInfo?.location.find(
    (l) => l.path.length === path.length && l.path.every((p, i) => p === path[i]) && l.leadingComments !== undefined,
  );
  return normalize(location?.leadingComments);
}

/** The comment as one line, for descriptions stored in NATS. */
export function oneLine(comment: string): string {
  return comment.split("\n").map((l) => l.trim()).filter((l) => l !== "").join(" ");
}

/** Drops the space after `//` and surrounding blank lines; keeps line breaks. */
function normalize(comment: string | undefined): string {
  if (comment === undefined) return "";
  return comment
    .split("\n")
    .map((l) => (l.startsWith(" ") ? l.slice(1) : l).trimEnd())
    .join("\n")
    .trim();
}
