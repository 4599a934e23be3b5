// Preloaded into a child process a test runs, with NODE_OPTIONS="--expose-gc --import <this file>": every 250 ms it
// collects the garbage and samples what stays reachable (V8's heap in use and the memory outside it: Buffers,
// external strings), and as the process exits writes to the file $PEAK_MEMORY_FILE names, as JSON, the largest
// sample in bytes (reachableBytes) and the peak resident set size in KiB (VmHWM, for comparison). Collecting first
// makes the sample what the program holds, not what the collector has yet to free, which peak RSS mixes in with
// the memory the allocator keeps after it is freed.
import { readFileSync, writeFileSync } from "node:fs";

const file = process.env.PEAK_MEMORY_FILE;
if (file) {
  if (typeof globalThis.gc !== "function") throw new Error("peak-memory.mjs needs --expose-gc");
  let peak = 0;
  const sample = () => {
    globalThis.gc();
    const { heapUsed, external } = process.memoryUsage();
    peak = Math.max(peak, heapUsed + external);
  };
  setInterval(sample, 250).unref();
  process.on("exit", () => {
    const vmHwmKiB = Number(/^VmHWM:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1]);
    writeFileSync(file, JSON.stringify({ reachableBytes: peak, vmHwmKiB }));
  });
}
