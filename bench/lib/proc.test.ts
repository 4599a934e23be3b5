import { describe, expect, it } from "vitest";
import { createTempDir } from "../../test/support/temp-dir.js";
import { cpuTimeMs, runWorker, startProcess, treeCpuTimeMs } from "./proc.js";

describe("the bench's processes", () => {
  it("say how one ended: its exit code, or the signal that killed it (its status 128 + the signal's number)", async () => {
    const dir = createTempDir("concord-bench-proc-");
    try {
      const killed = startProcess({ name: "killed", command: "sh", args: ["-c", "kill -KILL $$"], logDir: dir.path });
      expect(killed.ending()).toBeUndefined();
      expect(await killed.exited).toBe(128 + 9);
      expect(killed.ending()).toBe("killed by SIGKILL");
      const failed = startProcess({ name: "failed", command: "sh", args: ["-c", "exit 3"], logDir: dir.path });
      expect(await failed.exited).toBe(3);
      expect(failed.ending()).toBe("code 3");
    } finally {
      dir.remove();
    }
  });

  it("count the CPU of a server's children with its own, those still running and those that ended (a PostgreSQL server's backends)", async () => {
    const dir = createTempDir("concord-bench-tree-");
    // Spins until it has used `ms` of CPU, however long the machine takes to give it that.
    const busy = (ms: number) => `node -e 'while (process.cpuUsage().user + process.cpuUsage().system < ${ms * 1000});'`;
    try {
      // One child uses 300 ms of CPU and ends (waited for: the root's cutime); the next uses as much in a child of its
      // own and then sleeps (its cutime). The kernel counts in ticks of 10 ms: 600 ms may show as a few ticks less.
      const root = startProcess({ name: "root", command: "sh", args: ["-c", `${busy(300)}; (${busy(300)}; exec sleep 30) & wait`], logDir: dir.path });
      await expect.poll(() => treeCpuTimeMs(root.pid), { timeout: 20_000, interval: 50 }).toBeGreaterThanOrEqual(540);
      expect(cpuTimeMs(root.pid)).toBeLessThan(100);
      await root.stop(100);
      expect(treeCpuTimeMs(root.pid)).toBeNaN();
    } finally {
      dir.remove();
    }
  });

  it("say which signal killed a worker before it reported a result", async () => {
    await expect(runWorker("test/support/killed-by-signal.mjs", {})).rejects.toThrow("test/support/killed-by-signal.mjs exited (killed by SIGKILL) before reporting a result");
  });
});
