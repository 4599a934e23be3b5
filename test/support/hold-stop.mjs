// Loaded with `node --import` (through NODE_OPTIONS): a process whose script's path ends with HOLD_STOP_SCRIPT, once
// its standard input has closed, waits until the file HOLD_STOP_UNTIL exists before its own handlers see the end of
// it, as a service slow to stop would: it neither stops nor takes CPU meanwhile.
import { existsSync } from "node:fs";

if (process.argv[1]?.endsWith(process.env.HOLD_STOP_SCRIPT || "\0")) {
  process.stdin.prependOnceListener("end", () => {
    const pause = new Int32Array(new SharedArrayBuffer(4));
    while (!existsSync(process.env.HOLD_STOP_UNTIL)) Atomics.wait(pause, 0, 0, 100);
  });
}
