// Loaded with `node --import` (through NODE_OPTIONS): a process whose script's path ends with HOLD_START_SCRIPT waits,
// before its script runs, until the file HOLD_START_UNTIL exists, as a service slow to start would: it neither listens
// nor takes CPU meanwhile.
import { existsSync } from "node:fs";

if (process.argv[1]?.endsWith(process.env.HOLD_START_SCRIPT || "\0")) {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  while (!existsSync(process.env.HOLD_START_UNTIL)) Atomics.wait(pause, 0, 0, 100);
}
