import { fileURLToPath } from "node:url";

/**
 * The repository's root directory (where package.json is), absolute and
 * without a trailing slash, for code run from its sources (tools/, test/,
 * bench/). fileURLToPath decodes the URL, so a checkout under a directory
 * whose name has a space or non-ASCII letters works too.
 */
export const repoRoot = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
