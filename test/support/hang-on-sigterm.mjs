// Loaded with `node --import` (through NODE_OPTIONS): a process whose script's path ends with HANG_ON_SIGTERM_SCRIPT
// does nothing at all for HANG_ON_SIGTERM_MS on SIGTERM, before its own handlers run, as a process wedged while
// stopping would: its thread waits, taking no CPU, and then it stops as it would have.
if (process.argv[1]?.endsWith(process.env.HANG_ON_SIGTERM_SCRIPT || "\0")) {
  process.prependListener("SIGTERM", () => {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(process.env.HANG_ON_SIGTERM_MS));
  });
}
