#!/usr/bin/env node
// The `concord` bin (package.json): runs tools/concord.ts through tsx's loader.
import { register } from "tsx/esm/api";

register();
const { concord, endProcess, exitQuietlyOnClosedOutput, failed } = await import("./concord.ts");
exitQuietlyOnClosedOutput();
endProcess(await concord(process.argv.slice(2)).catch(failed));
