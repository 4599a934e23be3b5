#!/usr/bin/env node
// The `concord` bin (package.json): runs tools/concord.ts through tsx's loader.
import { register } from "tsx/esm/api";

register();
const { concord, endProcess, exitQuietlyOnClosedOutput } = await import("./concord.ts");
exitQuietlyOnClosedOutput();
endProcess(
  await concord(process.argv.slice(2)).catch((err) => {
    console.error(`concord: ${err instanceof Error ? err.message : err}`);
    return 1;
  }),
);
