// The store suite on SQLite files in a temporary directory: see store-suite.ts.
import { join } from "node:path";
import { createTempDir } from "../support/temp-dir.js";
import { describeStores } from "./store-suite.js";

describeStores("sqlite", async () => {
  const dir = createTempDir("concord-stores-");
  return { location: async (name) => join(dir.path, `${name}.db`), teardown: async () => dir.remove() };
});
